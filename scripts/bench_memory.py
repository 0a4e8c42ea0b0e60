"""Peak memory of the logit losses and of teacher scoring at a real vocabulary, chunked vs unchunked.

    python scripts/bench_memory.py [--vocab 151936 --tokens 4096 --kd-tokens 2048 --chunk 512]

Models: Qwen2-architecture students (hidden 64, 2 layers) and teacher (hidden 128, 2 layers) with Qwen's
vocabulary size (151,936 rows), one training example of ``--tokens`` tokens (a short prompt, the rest
trained; ``--kd-tokens`` for the kd step, whose unchunked side would not fit 24 GB at 4k). Three measurements,
each chunked (``loss_chunk_tokens`` / ``chunk_tokens`` = ``--chunk``) and unchunked (0), each in a fresh
process, one at a time:

  logits    `cotdistill logits` score mode: the teacher's top-8 at every completion position
  logit_kd  one whole optimizer step of the logit_kd trainer (forward, loss, backward, AdamW) on that cache
  kd        one whole step of the live-teacher kd trainer (soft targets at T = 2, forward KL)
  gkd       one whole off-policy step of the GKD trainer (generalized JSD, beta 0.5), ``--kd-tokens`` long: TRL's
            unchunked loss keeps ~12 fp32 [L, V] tensors

Peak memory is the process's peak resident set (ru_maxrss) above its resident set right before the
measured work (models and data already loaded); the totals are printed too. The last line is JSON:
{"logit_kd_ratio", "kd_ratio", "gkd_ratio", "logits_ratio" (chunked / unchunked peak), "max_loss_diff" (largest
relative difference between the chunked and unchunked losses, and the top-k logprobs' largest absolute one), ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(work: Path, vocab: int, tokens: int, kd_tokens: int) -> None:
    """Tokenizer (the tiny BPE one; the models' extra embedding rows are never produced by it, as Qwen's
    151,936 rows exceed its 151,665-token tokenizer), student and teacher, and a filter output holding one
    example of ``tokens`` tokens (and one of ``kd_tokens`` for the kd step)."""
    import datasets
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from cotdistill.tiny import build_tokenizer

    tok_dir = work / "tok"
    build_tokenizer(tok_dir)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    for name, hidden in (("student", 64), ("teacher", 128)):
        cfg = Qwen2Config(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=max(tokens, kd_tokens) + 256,
            tie_word_embeddings=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            # spread-out logits: chunked vs unchunked differ in more than rounding
            initializer_range=0.2,
        )
        import torch

        torch.manual_seed(0 if name == "student" else 1)
        model = Qwen2ForCausalLM(cfg)
        model.save_pretrained(work / name)
        tok.save_pretrained(work / name)
    tok = AutoTokenizer.from_pretrained(work / "student")  # as the trainers load it (Qwen2's pre-tokenizer)
    for folder, n in (("data", tokens), ("data_kd", kd_tokens)):
        datasets.Dataset.from_list([example(tok, n)]).save_to_disk(str(work / folder / "sft"))


def example(tok, tokens: int) -> dict:
    """One conversation whose chat-templated length is just over ``tokens``."""
    prompt = [{"role": "user", "content": "Add the numbers."}]
    words, text, i = "think step sum the total so we get".split(), [], 0
    while True:
        text.append(f"{words[i % len(words)]} {i % 997}")
        i += 1
        msgs = prompt + [{"role": "assistant", "content": " ".join(text)}]
        if i % 5 == 0 and len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]) >= tokens:
            return {"messages": msgs, "problem_id": "p0", "sample_index": 0}


def measure(kind: str, work: Path, chunk: int, tokens: int, cache_chunk: int = 0) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from cotdistill.config import LogitsConfig, TrainConfig

    torch.manual_seed(0)
    if kind == "logits":
        from cotdistill import logit_cache, logits

        base = rss_mib()
        out = work / f"cache{chunk}"
        logits.run(LogitsConfig(teacher=str(work / "teacher"), filter_dir=str(work / "data"), output_dir=str(out),
                                top_k=8, batch_size=1, device="cpu", dtype="float32", chunk_tokens=chunk,
                                progress=False))
        row = next(iter(logit_cache.iter_cache(out / logit_cache.CACHE)))
        value = {"top_lp": row[4].ravel().tolist()}
    else:
        from cotdistill.train import gkd, kd, logit_kd

        extra = {"logprobs": str(work / f"cache{cache_chunk}")} if kind == "logit_kd" else \
            {"teacher": str(work / "teacher"), "kd": {"temperature": 2.0, "alpha": 0.5}} if kind == "kd" else \
            {"teacher": str(work / "teacher"), "gkd": {"lmbda": 0.0, "beta": 0.5}}
        c = TrainConfig.model_validate(
            dict(
                method=kind,
                student=str(work / "student"),
                dataset_dir=str(work / ("data" if kind == "logit_kd" else "data_kd")),
                output_dir=str(work / f"out-{kind}-{chunk}"),
                max_length=tokens + 256,
                per_device_train_batch_size=1,
                learning_rate=1e-4,
                progress=False,
                loss_chunk_tokens=chunk,
                bf16=False,
                **extra,
            )
        )
        trainer = {"logit_kd": logit_kd, "kd": kd, "gkd": gkd}[kind].build(c)[0]
        trainer.create_optimizer_and_scheduler(num_training_steps=1)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        base = rss_mib()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        value = {"loss": float(loss)}
    return {"kind": kind, "chunk": chunk, "base_mib": round(base, 1), "peak_mib": round(peak_mib(), 1),
            "step_peak_mib": round(peak_mib() - base, 1), **value}


def child(kind: str, work: Path, chunk: int, tokens: int, cache_chunk: int = 0) -> dict:
    t0 = time.perf_counter()
    # glibc keeps freed blocks under its (growing) mmap threshold in the heap, so RSS would count memory the
    # process no longer uses; a fixed threshold returns every large block, and RSS follows the live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, __file__, "--one", kind, "--work", str(work), "--chunk", str(chunk),
                           "--tokens", str(tokens), "--cache-chunk", str(cache_chunk)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench_memory: {kind} chunk={chunk} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--kd-tokens", type=int, default=2048, help="the kd step's length: unchunked at 4k tokens it "
                    "needs ~27 GB (a dozen fp32 [L, V] tensors for student, teacher and divergence), over 24 GB")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--chunked-only", action="store_true", help="only the chunked side: its peak where the unchunked "
                    "one cannot fit this machine (e.g. --vocab 262144 --tokens 16384 --kd-tokens 16384)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--cache-chunk", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(measure(a.one, Path(a.work), a.chunk, a.tokens, a.cache_chunk)))
        return
    from cotdistill.env import machine

    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(tmp)
        build(work, a.vocab, a.tokens, a.kd_tokens)
        res = {}
        sides = (a.chunk,) if a.chunked_only else (0, a.chunk)
        for kind in ("logits", "logit_kd", "kd", "gkd"):  # logits first: its cache feeds logit_kd
            length = a.kd_tokens if kind in ("kd", "gkd") else a.tokens
            res[kind] = {c: child(kind, work, c, length, sides[0]) for c in sides}
    if a.chunked_only:
        out = {f"{k}_chunked_step_peak_mib": r[a.chunk]["step_peak_mib"] for k, r in res.items()}
        for k, r in res.items():
            print(f"{k:10} chunked: {r[a.chunk]['step_peak_mib']:.0f} MiB above the pre-step RSS "
                  f"({r[a.chunk]['peak_mib']:.0f} MiB total; {r[a.chunk]['wall_s']} s)")
        print(json.dumps(out | {"vocab": a.vocab, "tokens": a.tokens, "kd_tokens": a.kd_tokens, "chunk": a.chunk,
                                "machine": machine(), "date": time.strftime("%Y-%m-%d")}))
        return
    print(f"{'':10} {'unchunked MiB':>14} {'chunked MiB':>12} {'ratio':>6}   (peak above the pre-step RSS; totals "
          f"in parentheses)")
    out = {}
    for kind, r in res.items():
        full, part = r[0], r[a.chunk]
        ratio = part["step_peak_mib"] / full["step_peak_mib"]
        out[f"{kind}_ratio"] = round(ratio, 4)
        print(f"{kind:10} {full['step_peak_mib']:>14.0f} {part['step_peak_mib']:>12.0f} {ratio:>6.3f}   "
              f"({full['peak_mib']:.0f} / {part['peak_mib']:.0f} MiB; {full['wall_s']} s / {part['wall_s']} s)")
    diffs = {k: abs(res[k][a.chunk]["loss"] - res[k][0]["loss"]) / abs(res[k][0]["loss"])
             for k in ("logit_kd", "kd", "gkd")}
    lp_diff = max(abs(x - y) for x, y in zip(res["logits"][0]["top_lp"], res["logits"][a.chunk]["top_lp"]))
    out.update({"max_loss_diff": max(diffs.values()), "loss_diff": diffs, "logits_top_lp_max_abs_diff": lp_diff,
                "vocab": a.vocab, "tokens": a.tokens, "kd_tokens": a.kd_tokens, "chunk": a.chunk,
                "step_peak_mib": {k: {"unchunked": r[0]["step_peak_mib"], "chunked": r[a.chunk]["step_peak_mib"]}
                                  for k, r in res.items()},
                "machine": machine(), "date": time.strftime("%Y-%m-%d")})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
