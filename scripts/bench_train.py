"""Benchmark the distill stage: ratios measured side by side in one run, same student, same data.

    python scripts/bench_train.py [--steps 30]

1. batching_speedup: SFT epoch on a realistic length mix (log-normal completion lengths, 40 to
   ~900 tokens) with length-grouped batches vs naive random batches; real (non-pad) tokens/s
   ratio. Target >= 1.5.
2. Traces from a teacher 4x wider and 4x deeper than the student, generated through vLLM with
   top-8 logprobs, filtered, then on the same examples: cached-logprob KD step time / SFT step
   time (target <= 1.1) and GKD (live teacher, lmbda=0) step time / cached-KD step time
   (target >= 2). Step times are medians over steps after a warm-up, via a timing callback.
The last line is JSON with the three ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def step_times(trainer) -> list[float]:
    from transformers import TrainerCallback

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Timer())
    trainer.train()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    import datasets

    from cotdistill import filter as filter_stage
    from cotdistill import generate
    from cotdistill.config import FilterConfig, GenerateConfig, TrainConfig
    from cotdistill.tiny import build_tiny_model
    from cotdistill.train import gkd, logit_kd, sft

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    student = build_tiny_model(tmp / "student", hidden=128, heads=4, layers=2, intermediate=256, seed=1)
    teacher = build_tiny_model(tmp / "teacher", hidden=512, heads=8, layers=8, intermediate=1024, seed=2)

    def tcfg(data: Path, out: str, **kw) -> TrainConfig:
        d = dict(student=str(student), dataset_dir=str(data), output_dir=str(tmp / out), max_steps=args.steps,
                 per_device_train_batch_size=args.batch, logging_steps=10_000, save_steps=10_000,
                 max_length=1024, progress=False, resume=False)
        d.update(kw)
        return TrainConfig.model_validate(d)

    # 1. length-grouped vs naive batching on a realistic length mix
    rng = random.Random(0)
    rows = []
    for i in range(256):
        n = int(min(900, max(40, rng.lognormvariate(5.0, 0.8))))
        words = " ".join(f"{rng.randint(0, 99)} + {rng.randint(0, 99)}" for _ in range(n // 6))
        rows.append({"messages": [{"role": "user", "content": f"Problem {i}"},
                                  {"role": "assistant", "content": f"<think>{words}</think>\\boxed{{{i}}}"}],
                     "problem_id": f"m{i}", "sample_index": 0})
    mix = tmp / "mix"
    datasets.Dataset.from_list(rows).save_to_disk(str(mix / "sft"))
    rates = {}
    for grouped in (False, True):
        c = tcfg(mix, f"batch_{grouped}", length_grouped=grouped, max_steps=-1, num_train_epochs=1)
        trainer, tok, pre = sft.build(c)
        t = time.perf_counter()
        trainer.train()
        rates[grouped] = pre["trained_tokens"] / (time.perf_counter() - t)
        print(f"SFT epoch, {'length-grouped' if grouped else 'naive random'} batches: {rates[grouped]:,.0f} trained tokens/s")
    batching_speedup = rates[True] / rates[False]

    # 2. cached KD vs SFT vs GKD on teacher traces
    gen = GenerateConfig.model_validate({
        "source": {"kind": "hf", "path": str(ROOT / "data/arithmetic_train.jsonl"), "fields": {"id": "id"}, "limit": 64},
        "prompt": {"template": "math_boxed_think"},
        "teacher": {"backend": "vllm", "model": str(teacher), "max_model_len": 512,
                    "kv_cache_memory_bytes": 512 << 20, "enforce_eager": True},
        "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 160, "seed": 0, "logprobs": 8},
        "output_dir": str(tmp / "gen"), "progress": False})
    generate.run(gen)
    filter_stage.run(FilterConfig(generate_dir=str(tmp / "gen"), output_dir=str(tmp / "flt"), require_correct=False,
                                  require_stop=False, format_check=False, near_dup_threshold=None, progress=False))
    warm = 3
    med = {}
    for name, builder, kw in (
        ("sft", sft.build, {}),
        ("cached_kd", logit_kd.build, {"method": "logit_kd", "logprobs": str(tmp / "gen/logprobs.jsonl")}),
        ("gkd_lmbda0", gkd.build, {"method": "gkd", "teacher": str(teacher), "gkd": {"lmbda": 0.0, "beta": 0.5}}),
    ):
        trainer, _, _ = builder(tcfg(tmp / "flt", name, length_grouped=False, **kw))
        times = step_times(trainer)
        med[name] = statistics.median(times[warm:])
        print(f"{name}: median step {med[name] * 1000:.1f} ms over {len(times) - warm} steps")
    final = {
        "batching_speedup": round(batching_speedup, 3),
        "cached_kd_step_vs_sft": round(med["cached_kd"] / med["sft"], 3),
        "cached_kd_speedup_vs_gkd": round(med["gkd_lmbda0"] / med["cached_kd"], 3),
        "step_ms": {k: round(v * 1000, 2) for k, v in med.items()},
        "tokens_per_s": {"naive": round(rates[False]), "length_grouped": round(rates[True])},
        "batch": args.batch, "steps": args.steps,
    }
    print(json.dumps(final))


if __name__ == "__main__":
    main()
