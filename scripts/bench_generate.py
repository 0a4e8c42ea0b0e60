"""Benchmark: cotdistill generation (records written) vs a bare ``vllm.LLM.generate`` call.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python scripts/bench_generate.py [--problems 200 --n 8 --max-tokens 128]

Both sides share one engine, the same token-id prompts and the same per-sample SamplingParams
(seeds included), so they decode the same tokens. cotdistill is timed end to end through
``generate.run`` (load problems, render templates, generate, write traces/logprobs, summary);
bare vLLM is timed around ``LLM.generate`` only. Runs alternate (ABBA order) and the median of each side is used.
The last line is JSON with ``ratio_vs_vllm`` (cotdistill tokens/s / bare vLLM tokens/s; target
>= 0.97), ``ratio_vs_vllm_logprobs`` (both sides capturing top-k logprobs) and
``adaptive_token_ratio``: teacher completion tokens with sampling.until_verified=1 / with fixed n=4
on the demo task, both filtered to one verified trace per problem (the same kept traces; target <= 0.5),
and ``capture_overhead``: time(generation + teacher top-k for the kept traces, `logits` mode score) /
time(generation without logprobs) on the demo config (target <= 1.15), with ``capture_overhead_in_pass``
(top-k captured while generating) beside it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cotdistill.env import machine  # after the path is set


def demo_config(out, limit: int, **sampling):
    """The demo task's generation: the embedded teacher, 4 samples at temperature 1.5."""
    from cotdistill.config import GenerateConfig

    return GenerateConfig.model_validate({
        "source": {"kind": "hf", "path": str(ROOT / "data/digit_chain_train.jsonl"), "fields": {"id": "id"},
                   "limit": limit},
        "prompt": {"template": "arithmetic_cot"},
        "teacher": {"backend": "vllm", "model": str(ROOT / "data/teacher"), "max_model_len": 256,
                    "kv_cache_memory_bytes": 1 << 28, "enforce_eager": True},
        "sampling": {"n": 4, "temperature": 1.5, "max_tokens": 64, "seed": 0, **sampling},
        "output_dir": str(out), "progress": False})


def adaptive_ratio(args, tmp: Path) -> dict:
    """On the demo task (the embedded teacher, temperature 1.5, n = 4): teacher tokens generated with
    sampling.until_verified = 1 against fixed n = 4, each filtered to one verified trace per problem.
    Sample i is the same trace in both runs, so the adaptive run finds a correct one for exactly the
    problems the fixed run does; it can keep fewer only where its one correct trace fails a later
    filter check (format, length) that another of the fixed run's samples passes: both counts are printed."""
    from cotdistill import filter as filter_stage
    from cotdistill import generate
    from cotdistill.config import FilterConfig
    from cotdistill.teachers.vllm_offline import VLLMOfflineTeacher

    def cfg(out, **sampling):
        return demo_config(out, args.adaptive_problems, **sampling)

    fixed_cfg = cfg(tmp / "fixed")
    teacher = VLLMOfflineTeacher(fixed_cfg.teacher)
    out = {}
    for name, c in (("fixed", fixed_cfg), ("adaptive", cfg(tmp / "adaptive", until_verified=1))):
        t = time.perf_counter()
        g = generate.run(c, teacher=teacher)
        dt = time.perf_counter() - t
        f = filter_stage.run(FilterConfig(generate_dir=c.output_dir, output_dir=str(tmp / f"{name}_filter"),
                                          max_completion_tokens=64, max_per_problem=1, progress=False))
        out[name] = {"traces": g["traces"], "completion_tokens": g["completion_tokens"],
                     "prompt_tokens": g["prompt_tokens"], "kept": f["kept"], "seconds": round(dt, 2)}
        print(f"[adaptive] {name}: {g['traces']} traces, {g['completion_tokens']} completion tokens, "
              f"{f['kept']} kept (one per problem), {dt:.1f} s")
    teacher.close()
    fx, ad = out["fixed"], out["adaptive"]
    return {"adaptive_token_ratio": round(ad["completion_tokens"] / fx["completion_tokens"], 4),
            "adaptive_prompt_token_ratio": round(ad["prompt_tokens"] / fx["prompt_tokens"], 4),
            "adaptive_kept": ad["kept"], "fixed_kept": fx["kept"],
            "adaptive_tokens_per_kept": round(ad["completion_tokens"] / max(1, ad["kept"]), 1),
            "fixed_tokens_per_kept": round(fx["completion_tokens"] / max(1, fx["kept"]), 1)}


def capture_overhead(args, tmp: Path) -> dict:
    """On the demo config (the embedded teacher, 4 samples at temperature 1.5): time(generation + teacher
    top-k for the kept traces) / time(generation without logprobs), for both capture modes:
    score = generate plain, filter, then `logits` scores the kept traces (one batched forward);
    in_pass = generate with top-k logprobs, filter, then `logits` keeps the kept traces' records.
    The filter is not timed (every run has it). Warm-up once, then ABBA repeats; medians and spread."""
    from cotdistill import filter as filter_stage
    from cotdistill import generate, logits
    from cotdistill.config import FilterConfig, LogitsConfig
    from cotdistill.teachers.vllm_offline import VLLMOfflineTeacher

    k = 8
    counter = iter(range(10_000))

    def gen_cfg(out, logprobs):
        return demo_config(out, args.capture_problems, logprobs=logprobs)

    teacher = VLLMOfflineTeacher(gen_cfg(tmp / "c", None).teacher)

    def one(mode):
        out = tmp / f"cap{next(counter)}"
        t = time.perf_counter()
        g = generate.run(gen_cfg(out / "gen", k if mode == "in_pass" else None), teacher=teacher)
        t_gen = time.perf_counter() - t
        f = filter_stage.run(FilterConfig(generate_dir=str(out / "gen"), output_dir=str(out / "flt"),
                                          max_completion_tokens=64, near_dup_threshold=None, progress=False))
        t = time.perf_counter()
        c = logits.run(LogitsConfig(teacher=str(ROOT / "data/teacher"), filter_dir=str(out / "flt"),
                                    output_dir=str(out / "logits"), mode=mode, top_k=k, progress=False,
                                    **({"logprobs": str(out / "gen/logprobs.jsonl")} if mode == "in_pass" else {})))
        t_cap = time.perf_counter() - t
        return {"gen_s": t_gen, "capture_s": t_cap, "traces": g["traces"], "kept": f["kept"],
                "completion_tokens": g["completion_tokens"], "bytes_per_token": c["bytes_per_token"]}

    plain_s, score_s, in_pass_s = [], [], []

    def plain():  # generation alone, the denominator
        out = tmp / f"cap{next(counter)}"
        t = time.perf_counter()
        generate.run(gen_cfg(out, None), teacher=teacher)
        plain_s.append(time.perf_counter() - t)

    one("in_pass"), one("score"), plain()  # warm-up: the logprob helper compiles on first use
    plain_s.clear()
    last = {}
    for r in range(args.repeats):
        order = [("score", score_s), ("in_pass", in_pass_s)]
        for mode, acc in (order if r % 2 == 0 else order[::-1]):
            res = one(mode)
            acc.append(res["gen_s"] + res["capture_s"])
            last[mode] = res
        plain()
    teacher.close()
    med = statistics.median
    base = med(plain_s)
    ratios = {m: [x / base for x in v] for m, v in (("score", score_s), ("in_pass", in_pass_s))}
    for m, res in last.items():
        print(
            f"[capture] {m}: generation {res['gen_s']:.1f} s + capture {res['capture_s']:.1f} s of {res['kept']} kept "
            f"of {res['traces']} traces; {res['bytes_per_token']} bytes/token; ratio runs "
            f"{[round(x, 3) for x in ratios[m]]} (plain generation {[round(x, 1) for x in plain_s]} s)"
        )
    best = min(ratios, key=lambda m: med(ratios[m]))
    return {
        "capture_overhead": round(med(ratios["score"]), 4),
        "capture_overhead_in_pass": round(med(ratios["in_pass"]), 4),
        "capture_overhead_range": [round(min(ratios["score"]), 4), round(max(ratios["score"]), 4)],
        "capture_overhead_in_pass_range": [round(min(ratios["in_pass"]), 4), round(max(ratios["in_pass"]), 4)],
        "capture_cheapest_mode": best,
        "capture_kept_share": round(last["score"]["kept"] / last["score"]["traces"], 4),
        "cache_bytes_per_token": last["score"]["bytes_per_token"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--logprobs", type=int, default=5)
    ap.add_argument("--model", default=None, help="teacher dir (default: a tiny Llama built here)")
    ap.add_argument("--adaptive-problems", type=int, default=500,
                    help="problems of the demo task for adaptive_token_ratio (0: skip)")
    ap.add_argument("--capture-problems", type=int, default=1000,
                    help="problems of the demo task for capture_overhead (0: skip)")
    ap.add_argument("--skip-ratio", action="store_true", help="skip ratio_vs_vllm (only the demo-task measurements)")
    args = ap.parse_args()

    from vllm.inputs import TokensPrompt

    from cotdistill import generate
    from cotdistill.config import GenerateConfig
    from cotdistill.prompts import load_template
    from cotdistill.sources import load_problems
    from cotdistill.teachers import derive_seed
    from cotdistill.teachers.vllm_offline import VLLMOfflineTeacher, sampling_params
    from cotdistill.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    atexit.register(shutil.rmtree, tmp, True)  # its models and runs are scratch: none left in /tmp
    model = args.model or str(build_tiny_model(tmp / "model", hidden=256, heads=4, layers=4, intermediate=512))

    def cfg(out: Path, logprobs: int | None) -> GenerateConfig:
        return GenerateConfig.model_validate({
            "source": {"kind": "hf", "path": str(ROOT / "data/arithmetic_train.jsonl"),
                       "fields": {"id": "id"}, "limit": args.problems},
            "prompt": {"template": "math_boxed_think"},
            "teacher": {"backend": "vllm", "model": model, "max_model_len": 512,
                        "kv_cache_memory_bytes": 1 << 30, "enforce_eager": True},
            "sampling": {"n": args.n, "temperature": 1.0, "max_tokens": args.max_tokens, "seed": 0,
                         "logprobs": logprobs},
            "output_dir": str(out), "progress": False,
        })

    base = cfg(tmp / "x", None)
    teacher = VLLMOfflineTeacher(base.teacher)
    template = load_template(base.prompt.template)
    problems = load_problems(base.source)
    jobs = [(p, i) for p in problems for i in range(args.n)]
    prompts = [TokensPrompt(prompt_token_ids=teacher.prompt_ids(
        type("J", (), {"messages": template.render(p)})())) for p, _ in jobs]

    def bare(logprobs):
        s = base.sampling.model_copy(update={"logprobs": logprobs})
        params = [sampling_params(s, derive_seed(0, p.id, i)) for p, i in jobs]
        t = time.perf_counter()
        outs = teacher.llm.generate(prompts, params, use_tqdm=False)
        dt = time.perf_counter() - t
        return sum(len(o.outputs[0].token_ids) for o in outs), dt

    counter = iter(range(10_000))

    def ours(logprobs):
        out = tmp / f"run{next(counter)}"
        t = time.perf_counter()
        summary = generate.run(cfg(out, logprobs), teacher=teacher)
        dt = time.perf_counter() - t
        return summary["completion_tokens"], dt

    results = {}
    for label, lp in (() if args.skip_ratio else (("plain", None), ("logprobs", args.logprobs))):
        bare(lp), ours(lp)  # warm-up (first logprob request compiles a helper)
        tb, to = [], []
        for r in range(args.repeats):
            if r % 2 == 0:  # alternate who goes first, so drift on a shared machine cancels out
                nb, db = bare(lp)
                no, do = ours(lp)
            else:
                no, do = ours(lp)
                nb, db = bare(lp)
            assert nb == no, f"token counts differ ({nb} vs {no}): the two sides did not decode the same"
            tb.append(nb / db)
            to.append(no / do)
        results[label] = {"vllm_tok_s": statistics.median(tb), "cotdistill_tok_s": statistics.median(to),
                          "tokens": nb}
        print(
            f"[{label}] bare vLLM {results[label]['vllm_tok_s']:,.0f} tok/s, cotdistill "
            f"{results[label]['cotdistill_tok_s']:,.0f} tok/s over {nb} tokens, "
            f"runs {[round(x) for x in tb]} / {[round(x) for x in to]}"
        )
    teacher.close()
    adaptive = adaptive_ratio(args, tmp) if args.adaptive_problems else {}
    capture = capture_overhead(args, tmp) if args.capture_problems else {}
    final = {
        **(
            {
                "ratio_vs_vllm": round(results["plain"]["cotdistill_tok_s"] / results["plain"]["vllm_tok_s"], 4),
                "ratio_vs_vllm_logprobs": round(
                    results["logprobs"]["cotdistill_tok_s"] / results["logprobs"]["vllm_tok_s"], 4
                ),
            }
            if results
            else {}
        ),
        "requests": len(jobs),
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "logprobs_k": args.logprobs,
        **{f"{k}_{m}": round(v, 1) for k, r in results.items() for m, v in r.items()},
        **adaptive,
        **capture,
        "machine": machine(),
    }
    print(json.dumps(final))


if __name__ == "__main__":
    main()
