"""Deployment payoff: how much smaller and faster each model is, measured side by side.

    python -m cotdistill.payoff MODEL_DIR [MODEL_DIR ...] [--prompts FILE] [--batch 64] [--repeats 2]

For every model (the teacher first, then students): parameters and bytes on disk (from the safetensors
files), and served by vLLM: time to first token (one prompt, one token), decode tokens/s at batch 1 and
at a large batch (``ignore_eos``: every request decodes exactly ``max_tokens``), and the serving
process's peak memory (ru_maxrss on CPU; torch's peak allocation on CUDA). Each measurement of one
model is its own process (a fresh engine; no model's memory hides in another's), warmed up first;
rounds alternate the model order (A B C, C B A, ...) so drift on a shared machine cancels out, and
the median over rounds is reported. Ratios are against the first model (the teacher).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cotdistill.config import HFSource, VLLMTeacher
from cotdistill.env import cuda_available, engine_in_this_process, prepare_vllm_env
from cotdistill.errors import CotdistillError
from cotdistill.prompts import load_template
from cotdistill.quant import to_serving
from cotdistill.sources import load_problems
from cotdistill.teachers.vllm_offline import engine_kwargs


def size_on_disk(model: str | Path) -> dict:
    """Parameters and bytes of a local model directory's safetensors files (tied weights counted once)."""
    from safetensors import safe_open

    files = sorted(Path(model).glob("*.safetensors"))
    if not files:
        raise CotdistillError(f"{model}: no *.safetensors files; payoff measures local model directories")
    params = 0
    for f in files:
        with safe_open(str(f), "pt") as h:
            for name in h.keys():
                params += _numel(h.get_slice(name).get_shape())
    return {"params": params, "bytes_on_disk": sum(f.stat().st_size for f in files)}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _serve_once(spec: dict) -> dict:
    """Runs in a fresh process: one engine, warm-up, then TTFT, batch-1 and batch-B decode."""
    import resource

    prepare_vllm_env()
    from vllm import LLM, SamplingParams

    cfg = VLLMTeacher(model=spec["model"], max_model_len=spec["max_model_len"], enforce_eager=True,
                      kv_cache_memory_bytes=spec.get("kv_cache_memory_bytes"), max_num_seqs=max(spec["batch"], 1))
    with engine_in_this_process():
        llm = LLM(**engine_kwargs(cfg))
    tok = llm.get_tokenizer()
    prompts = [{"prompt_token_ids": tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True,
                                                            return_dict=True)["input_ids"]} for m in spec["messages"]]
    batch = [prompts[i % len(prompts)] for i in range(spec["batch"])]
    decode = SamplingParams(max_tokens=spec["max_tokens"], temperature=0.0, ignore_eos=True)
    first = SamplingParams(max_tokens=1, temperature=0.0)

    def run(ps, params):
        t = time.perf_counter()
        outs = llm.generate(ps, params, use_tqdm=False)
        return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in outs)

    run(batch, decode), run(prompts[:1], decode), run(prompts[:1], first)  # warm-up
    ttft = statistics.median(run([p], first)[0] for p in prompts[:8])
    dt1, n1 = run(prompts[:1], decode)
    dtb, nb = run(batch, decode)
    out = {"ttft_ms": round(1000 * ttft, 2), "decode_tok_s_batch1": round(n1 / dt1, 1),
           f"decode_tok_s_batch{spec['batch']}": round(nb / dtb, 1)}
    # what the model itself needs to serve, from the engine's own view of it: the served dtype's bytes per
    # weight and per cached key/value (the process floor of runtime and libraries is not in it)
    mc = llm.llm_engine.model_config
    out.update(served_dtype=str(mc.dtype).replace("torch.", ""), dtype_bytes=mc.dtype.itemsize,
               kv_bytes_per_token=2 * mc.hf_text_config.num_hidden_layers * mc.get_total_num_kv_heads()
               * mc.get_head_size() * mc.dtype.itemsize)
    if cuda_available():
        import torch

        out["serving_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        out["serving_peak_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def measure(
    models: list[str],
    messages: list[list[dict]],
    batch: int = 64,
    max_tokens: int = 64,
    repeats: int = 2,
    max_model_len: int = 256,
    kv_cache_memory_bytes: int | None = 1 << 28,
    progress: bool = True,
) -> list[dict]:
    """Every model measured ``repeats`` times, alternating the order; medians, and ratios to models[0]."""
    from tqdm.auto import tqdm

    rows = {m: {"model": m, **size_on_disk(m), "runs": []} for m in models}
    bar = tqdm(total=repeats * len(models), desc="payoff", unit="model", disable=not progress)
    for r in range(repeats):
        for m in (models if r % 2 == 0 else models[::-1]):
            spec = {"model": m, "messages": messages, "batch": batch, "max_tokens": max_tokens,
                    "max_model_len": max_model_len, "kv_cache_memory_bytes": kv_cache_memory_bytes}
            p = subprocess.run([sys.executable, "-m", "cotdistill.payoff", "--serve-once", json.dumps(spec)],
                               capture_output=True, text=True)
            if p.returncode:
                raise CotdistillError(f"payoff: serving {m} failed: {p.stderr.strip().splitlines()[-1][:300]}")
            rows[m]["runs"].append(json.loads(p.stdout.strip().splitlines()[-1]))
            bar.update(1)
    bar.close()
    out = []
    for m in models:
        row = rows[m]
        for key in row["runs"][0]:
            vals = [x[key] for x in row["runs"]]
            row[key] = statistics.median(vals) if isinstance(vals[0], (int, float)) else vals[0]
        out.append(row)
    ref = out[0]
    big = f"decode_tok_s_batch{batch}"
    for row in out:
        row["compression"] = round(ref["params"] / row["params"], 3)
        row["disk_ratio"] = round(ref["bytes_on_disk"] / row["bytes_on_disk"], 3)
        row["speedup_batch1"] = round(row["decode_tok_s_batch1"] / ref["decode_tok_s_batch1"], 3)
        row[f"speedup_batch{batch}"] = round(row[big] / ref[big], 3)
        row["ttft_ratio"] = round(ref["ttft_ms"] / row["ttft_ms"], 3)
        row["memory_ratio"] = round(ref["serving_peak_mib"] / row["serving_peak_mib"], 3)
        row[f"model_mib_batch{batch}"] = model_mib(row, batch * max_model_len)
        row["model_memory_ratio"] = round(model_mib(ref, batch * max_model_len) / row[f"model_mib_batch{batch}"], 3)
    return out


def model_mib(row: dict, tokens: int) -> float:
    """The memory a model itself needs to serve ``tokens`` cached tokens (e.g. batch x max_model_len):
    its weights in the served dtype plus their key/value cache. Computed from the engine's config, not
    measured; on a small model the process floor (runtime, libraries) dwarfs it."""
    return round((row["params"] * row["dtype_bytes"] + row["kv_bytes_per_token"] * tokens) / 2**20, 3)


def torch_decode_speed(model_dir: str | Path, messages: list[list[dict]], batch: int = 64, max_tokens: int = 64,
                       repeats: int = 3) -> dict:
    """Where vLLM has no weight-only integer path (CPU): greedy decode tokens/s with transformers, the same
    model in fp32 and with its linears quantized by torchao (quant.to_serving: int8 weight-only, and int4
    unpacked), alternating runs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    models = {"fp32": AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()}
    for bits in (8, 4):
        models[f"int{bits}"] = to_serving(AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), bits)
    texts = [tok.apply_chat_template(messages[i % len(messages)], add_generation_prompt=True, tokenize=False)
             for i in range(batch)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def run(m, b):
        t = time.perf_counter()
        with torch.inference_mode():
            out = m.generate(input_ids=enc["input_ids"][:b], attention_mask=enc["attention_mask"][:b],
                             max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        return (out.shape[1] - enc["input_ids"].shape[1]) * b / (time.perf_counter() - t)

    import torch

    for m in models.values():
        run(m, batch)  # warm-up
    rates = {k: {1: [], batch: []} for k in models}
    for r in range(repeats):
        for k in (list(models) if r % 2 == 0 else list(models)[::-1]):
            for b in (1, batch):
                rates[k][b].append(run(models[k], b))
    med = {k: {b: statistics.median(v) for b, v in d.items()} for k, d in rates.items()}
    out = {"engine": ("transformers generate (CPU)" if not torch.cuda.is_available() else "transformers generate")
           + ", torchao weight-only"}
    for k in models:
        for b in (1, batch):
            out[f"{k}_tok_s_batch{b}"] = round(med[k][b], 1)
            if k != "fp32":
                out[f"{k}_speedup_batch{b}"] = round(med[k][b] / med["fp32"][b], 3)
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--serve-once", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prompts", default=None, help="JSONL of problems rendered through --template (default: the "
                                                     "embedded task's held-out problems)")
    ap.add_argument("--template", default="arithmetic_cot")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.serve_once:
        print(json.dumps(_serve_once(json.loads(args.serve_once))))
        return

    root = Path(__file__).resolve().parent.parent
    src = HFSource(kind="hf", path=args.prompts or str(root / "data/digit_chain_test.jsonl"), fields={"id": "id"},
                   limit=args.limit)
    template = load_template(args.template)
    messages = [[m.model_dump() for m in template.render(p)] for p in load_problems(src)]
    for row in measure(args.models, messages, args.batch, args.max_tokens, args.repeats):
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}))


if __name__ == "__main__":
    main()
