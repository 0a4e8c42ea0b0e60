"""The checks that need a GPU, in one short run (torch + transformers only: no vLLM, TRL or network there).

    bash scripts/gpu_check.sh                        # on a lent GPU; writes $OUT/gpu_check.json if OUT is set
    python scripts/gpu_check.py --device cpu --small # the same code path on CPU, as the tests run it

1. bf16 master weights: a Qwen2-architecture student (Qwen's 151,936-row vocabulary) trained 10 AdamW steps at
   lr 1e-5 under bf16 autocast with fp32 weights (how every method trains) vs the same student stored in bf16:
   the share of weights that moved; then 50 steps, bf16 autocast vs fp32: the largest relative loss difference.
2. Chunked losses on the device: cached-logit KD (train/losses.kd_loss vs kd_loss_chunked) and the live-teacher
   soft targets at V = 151,936 and 8k tokens: peak allocated memory of forward + backward each way, their ratio,
   and the loss and gradient differences.
3. Eval after training in one process: after a trainer-sized model and its AdamW state are released
   (env.release_memory's gc + empty_cache), the device's free memory is back to what it was before (what vLLM
   sizes its KV cache from).
The last line is one JSON object with every figure and the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch


def _losses():
    """train/losses.py itself (torch only), without the train package's imports (pydantic, TRL: not on the GPU box)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cotdistill_losses", ROOT / "cotdistill/train/losses.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def qwen2(vocab: int, hidden: int, layers: int, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64), num_key_value_heads=1, max_position_embeddings=16384,
                      tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_steps(model, ids, steps: int, lr: float, autocast: bool, device) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss))
    return losses


def moved_share(before: dict, model, seen: torch.Tensor) -> float:
    moved = total = 0
    for k, p in model.state_dict().items():
        d = before[k].float() != p.detach().float().cpu()
        if "embed_tokens" in k:
            d = d[seen]
        moved += int(d.sum())
        total += d.numel()
    return moved / total


def check_master_weights(device, vocab, hidden, layers, tokens) -> dict:
    ids = torch.randint(0, vocab, (2, tokens), generator=torch.Generator().manual_seed(0)).to(device)
    seen = torch.unique(ids.cpu())
    out = {}
    for name, dtype, autocast in (
        ("fp32_master_bf16_autocast", torch.float32, True),
        ("bf16_weights", torch.bfloat16, False),
    ):
        m = qwen2(vocab, hidden, layers, 0).to(device=device, dtype=dtype)
        before = {k: v.detach().float().cpu().clone() for k, v in m.state_dict().items()}
        train_steps(m, ids, 10, 1e-5, autocast, device)
        out[f"moved_share_{name}"] = round(moved_share(before, m, seen), 5)
        del m
    curves = {}
    for name, autocast in (("fp32", False), ("bf16_autocast", True)):
        m = qwen2(vocab, hidden, layers, 0).to(device)
        curves[name] = train_steps(m, ids, 50, 1e-4, autocast, device)
        del m
    out["loss_curve_max_rel_diff_50_steps"] = round(max(abs(a - b) / abs(a) for a, b in
                                                        zip(curves["fp32"], curves["bf16_autocast"])), 5)
    out["loss_first_last_fp32"] = [round(curves["fp32"][0], 4), round(curves["fp32"][-1], 4)]
    return out


def peak(device, fn) -> tuple[float, object]:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    value = fn()
    sync(device)
    seconds = time.perf_counter() - t0
    mib = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1) if device.type == "cuda" else None
    return mib, (value, round(seconds, 3))


def check_chunked(device, vocab, tokens, chunk) -> dict:
    L = _losses()

    g = torch.Generator().manual_seed(1)
    d, k = 256, 20
    hidden = (torch.randn(1, tokens, d, generator=g) * 0.5).to(device)
    head = torch.nn.Linear(d, vocab, bias=False).to(device)
    t_head = torch.nn.Linear(d, vocab, bias=False).to(device)
    labels = torch.randint(0, vocab, (1, tokens), generator=g).to(device)
    labels[:, :64] = -100
    t_lp, t_ids = torch.log_softmax(torch.randn(tokens, vocab, generator=g) * 3, -1).topk(k, -1)
    t_lp, t_ids = t_lp.unsqueeze(0).to(device), t_ids.unsqueeze(0).to(device)

    def logit_kd(chunked):
        h = hidden.clone().requires_grad_()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            if chunked:
                loss = L.kd_loss_chunked(h, head, labels, t_ids, t_lp, 0.5, 2.0, None, chunk)[0]
            else:
                loss = L.kd_loss(head(h), labels, t_ids, t_lp, 0.5, 2.0)[0]
        loss.backward()
        return float(loss), h.grad.float().cpu()

    def live(chunked):
        h = hidden[0, :-1][labels[0, 1:] != -100].clone().requires_grad_()
        ht, lab = hidden[0, :-1][labels[0, 1:] != -100], labels[0, 1:][labels[0, 1:] != -100]

        def per_token(h, lab, ht):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                z, zt = head(h), t_head(ht).detach()
            return L.soft_target_per_token(z, [zt], lab, [1.0], 2.0, "forward", 0.5)

        ce, dv, *_ = L.token_chunks(per_token, [h, lab, ht], chunk) if chunked else per_token(h, lab, ht)
        loss = (0.5 * ce.sum() + 0.5 * 4.0 * dv.sum()) / len(lab)
        loss.backward()
        return float(loss), h.grad.float().cpu()

    out = {}
    for name, fn in (("logit_kd", logit_kd), ("kd", live)):
        full_mib, ((full_loss, full_grad), full_s) = peak(device, lambda fn=fn: fn(False))
        part_mib, ((part_loss, part_grad), part_s) = peak(device, lambda fn=fn: fn(True))
        out[name] = {"peak_mib_unchunked": full_mib, "peak_mib_chunked": part_mib,
                     "ratio": round(part_mib / full_mib, 4) if full_mib else None,
                     "loss_rel_diff": abs(part_loss - full_loss) / abs(full_loss),
                     "grad_max_abs_diff": float((part_grad - full_grad).abs().max()),
                     "seconds_unchunked": full_s, "seconds_chunked": part_s}
    return out


def check_release(device, vocab, hidden, layers) -> dict:
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    from cotdistill.env import release_memory

    gc.collect()
    torch.cuda.empty_cache()
    free_before, total = torch.cuda.mem_get_info()
    m = qwen2(vocab, hidden, layers, 0).to(device)
    ids = torch.randint(0, vocab, (4, 2048), device=device)
    train_steps(m, ids, 2, 1e-5, True, device)
    free_trained = torch.cuda.mem_get_info()[0]
    del m, ids
    release_memory()
    free_after = torch.cuda.mem_get_info()[0]
    gib = lambda b: round(b / 2**30, 2)
    return {"free_gib_before": gib(free_before), "free_gib_while_trained": gib(free_trained),
            "free_gib_after_release": gib(free_after), "total_gib": gib(total),
            "recovered_share": round((free_after - free_trained) / max(1, free_before - free_trained), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="CPU-sized: vocab 4096, 512 tokens (the tests' smoke run)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    device = torch.device(a.device if a.device != "cuda" or torch.cuda.is_available() else "cpu")
    vocab, tokens, hidden, layers, chunk = (4096, 512, 64, 2, 128) if a.small else (151936, 8192, 512, 4, 1024)
    from cotdistill.env import machine

    t0 = time.perf_counter()
    result = {"device": str(device), "vocab": vocab, "tokens": tokens, "machine": machine(),
              "torch": torch.__version__}
    result["master_weights"] = check_master_weights(device, vocab, hidden, layers, min(tokens, 512))
    print("master weights:", json.dumps(result["master_weights"]), flush=True)
    result["chunked"] = check_chunked(device, vocab, tokens, chunk)
    print("chunked losses:", json.dumps(result["chunked"]), flush=True)
    result["release"] = check_release(device, vocab, hidden, layers)
    print("release:", json.dumps(result["release"]), flush=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(result)
    if a.out:
        Path(a.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
