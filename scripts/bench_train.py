"""Benchmark the distill stage: ratios measured side by side in one run, same student, same data.

    python scripts/bench_train.py [--steps 24 --warmup 4 --repeats 4]

Timing is of whole optimizer steps, data loading and collation included: the interval between one
step's end and the next (the first ``--warmup`` intervals of each run are dropped), and for the
batching comparison the wall time of a whole epoch. Every comparison runs its sides ``--repeats``
times in ABBA order (A B, B A, A B, ...), so drift on a shared machine cancels out, and reports the
median of the per-pair ratios with their range.

1. batching_speedup: SFT epoch on a realistic length mix (log-normal completion lengths, 40 to
   ~900 tokens), length-grouped vs naive random batches: trained (non-pad) tokens/s ratio.
2. The embedded distillation pair: the shipped teacher (data/teacher, 2.0M parameters) writes the
   cache through vLLM (top-8 logprobs, 300 digit-chain problems x 2 samples; the kept traces' records in a
   `cotdistill logits` cache, as a run does), and the demo's
   student (a fresh 0.36M Llama on its tokenizer) trains on the kept traces. Ratios of step time:
   cached-logprob KD / SFT, live-teacher KD (method kd, the teacher that wrote the cache) / cached
   KD, and TRL GKD with lmbda = 0 (off-policy: teacher forward, no student rollouts) / cached KD.
The last line is JSON with every ratio as {"median", "min", "max"} and the step times.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cotdistill.env import machine  # after the path is set


def timed(trainer, warmup: int) -> dict:
    """Train; return the median whole-step interval after ``warmup`` steps and the epoch wall time."""
    from transformers import TrainerCallback

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            marks.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.train()
    steps = [b - a for a, b in zip(marks, marks[1:])]
    return {"step_s": statistics.median(steps[warmup:] or steps), "wall_s": marks[-1] - marks[0], "steps": len(steps)}


def abba(sides: dict, repeats: int, measure) -> dict[str, list]:
    """Run each side ``repeats`` times, alternating which goes first; returns the measurements."""
    names = list(sides)
    out: dict[str, list] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(measure(n, sides[n]))
    return out


def spread(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--problems", type=int, default=300, help="digit-chain problems the teacher answers (x 2 samples)")
    ap.add_argument("--mix", type=int, default=256, help="examples in the batching comparison")
    args = ap.parse_args()
    import datasets

    from cotdistill import filter as filter_stage
    from cotdistill import generate
    from cotdistill.config import FilterConfig, GenerateConfig, TrainConfig
    from cotdistill.tiny import build_student, build_tiny_model
    from cotdistill.train import gkd, kd, logit_kd, sft

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    atexit.register(shutil.rmtree, tmp, True)  # its models and runs are scratch: none left in /tmp
    counter = iter(range(1_000_000))

    def tcfg(student, data: Path, **kw) -> TrainConfig:
        d = dict(student=str(student), dataset_dir=str(data), output_dir=str(tmp / f"run{next(counter)}"),
                 max_steps=args.steps, per_device_train_batch_size=args.batch, logging_steps=10_000,
                 save_steps=10_000, max_length=1024, progress=False, resume=False, length_grouped=False)
        d.update(kw)
        return TrainConfig.model_validate(d)

    # 1. length-grouped vs naive batching on a realistic length mix (whole epochs)
    mix_student = build_tiny_model(tmp / "mix_student", hidden=128, heads=4, layers=2, intermediate=256, seed=1)
    rng = random.Random(0)
    rows = []
    for i in range(args.mix):
        n = int(min(900, max(40, rng.lognormvariate(5.0, 0.8))))
        words = " ".join(f"{rng.randint(0, 99)} + {rng.randint(0, 99)}" for _ in range(n // 6))
        rows.append({"messages": [{"role": "user", "content": f"Problem {i}"},
                                  {"role": "assistant", "content": f"<think>{words}</think>\\boxed{{{i}}}"}],
                     "problem_id": f"m{i}", "sample_index": 0})
    mix = tmp / "mix"
    datasets.Dataset.from_list(rows).save_to_disk(str(mix / "sft"))

    def epoch(name, grouped):
        trainer, _, pre = sft.build(tcfg(mix_student, mix, length_grouped=grouped, max_steps=-1, num_train_epochs=1,
                                         per_device_train_batch_size=8))
        r = timed(trainer, args.warmup)
        rate = pre["trained_tokens"] / r["wall_s"]
        print(f"SFT epoch, {name}: {rate:,.0f} trained tokens/s ({r['wall_s']:.1f} s)")
        return rate

    epoch("warm-up", True)
    rates = abba({"naive random batches": False, "length-grouped batches": True}, args.repeats, epoch)
    batching = [g / n for n, g in zip(rates["naive random batches"], rates["length-grouped batches"])]

    # 2. the embedded pair: the cache comes from the teacher that is live in kd / gkd
    teacher = ROOT / "data" / "teacher"
    gen = GenerateConfig.model_validate(
        {
            "source": {
                "kind": "hf",
                "path": str(ROOT / "data/digit_chain_train.jsonl"),
                "fields": {"id": "id"},
                "limit": args.problems,
            },
            "prompt": {"template": "arithmetic_cot"},
            "teacher": {
                "backend": "vllm",
                "model": str(teacher),
                "max_model_len": 256,
                "kv_cache_memory_bytes": 256 << 20,
                "enforce_eager": True,
            },
            "sampling": {"n": 2, "temperature": 1.5, "max_tokens": 64, "seed": 0, "logprobs": 8},
            "output_dir": str(tmp / "gen"),
            "progress": False,
        }
    )
    generate.run(gen)
    flt = filter_stage.run(FilterConfig(generate_dir=str(tmp / "gen"), output_dir=str(tmp / "flt"),
                                        max_completion_tokens=64, progress=False))
    from cotdistill import logits
    from cotdistill.config import LogitsConfig

    logits.run(LogitsConfig(teacher=str(teacher), filter_dir=str(tmp / "flt"), output_dir=str(tmp / "logits"),
                            mode="in_pass", logprobs=str(tmp / "gen/logprobs.jsonl"), top_k=8, progress=False))
    student = build_student(teacher, tmp / "student", hidden=128, heads=4, layers=2, seed=0)
    methods = {
        "sft": (sft.build, {}),
        "cached_kd": (logit_kd.build, {"method": "logit_kd", "logprobs": str(tmp / "logits"),  # the columnar cache
                                       "kd": {"alpha": 0.5, "temperature": 2.0}}),
        "kd_live": (kd.build, {"method": "kd", "teacher": str(teacher), "kd": {"alpha": 0.5, "temperature": 2.0}}),
        "gkd_lmbda0": (gkd.build, {"method": "gkd", "teacher": str(teacher), "gkd": {"lmbda": 0.0, "beta": 0.5}}),
    }

    def step(name, spec):
        builder, kw = spec
        trainer, _, _ = builder(tcfg(student, tmp / "flt", **kw))
        return timed(trainer, args.warmup)["step_s"]

    for name, spec in methods.items():  # warm-up: first builds compile kernels and fill caches
        step(name, spec)
    pairs = {"cached_kd_step_vs_sft": ("cached_kd", "sft"), "kd_live_step_vs_cached_kd": ("kd_live", "cached_kd"),
             "gkd_step_vs_cached_kd": ("gkd_lmbda0", "cached_kd")}
    ratios, times = {}, {}
    for key, (a, b) in pairs.items():
        got = abba({a: methods[a], b: methods[b]}, args.repeats, step)
        ratios[key] = spread([x / y for x, y in zip(got[a], got[b])])
        for n in (a, b):
            times.setdefault(n, []).extend(got[n])
        print(f"{key}: {ratios[key]['median']:.3f} (range {ratios[key]['min']:.3f}-{ratios[key]['max']:.3f}); "
              f"{a} {statistics.median(got[a]) * 1000:.1f} ms, {b} {statistics.median(got[b]) * 1000:.1f} ms per step")
    final = {
        "batching_speedup": spread(batching), **ratios,
        "step_ms": {n: round(statistics.median(t) * 1000, 2) for n, t in times.items()},
        "tokens_per_s": {k: round(statistics.median(v)) for k, v in rates.items()},
        "kept_traces": flt["kept"], "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
        "repeats": args.repeats, "teacher": "data/teacher (2.0M)", "student": "0.36M (hidden 128, 2 layers)",
        "machine": machine(),
    }
    print(json.dumps(final))


if __name__ == "__main__":
    main()
