"""Benchmark: does cached-logit KD's training memory stay flat when the cache grows 10x?

    python scripts/bench_logit_cache.py [--traces 2000 --factor 10 --steps 30 --k 8]

Builds a top-k cache of N and of factor x N synthetic kept traces (random ASCII completions of about 48
tokens on the embedded teacher's tokenizer, random top-k), then trains the demo-sized student with
logit_kd for the same steps on each, every run in its own process (so one run's memory cannot hide in
another's). Each run's peak RSS is the process's ru_maxrss (building the examples included). Runs
alternate (small, large, large, small). Prints per-run figures and, last, one JSON line with
``rss_peak_ratio`` (large / small, median), the cache's bytes per token and build times.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cotdistill.env import machine  # after the path is set


def build(tmp: Path, n: int, k: int, tok) -> tuple[Path, Path, dict]:
    import datasets
    import numpy as np

    from cotdistill import logit_cache, logits
    from cotdistill.chat import tokenizer_hash

    rng = np.random.default_rng(n)
    special = set(tok.all_special_ids)
    vocab = np.array([i for i in range(len(tok)) if i not in special and tok.decode([i]).strip().isalnum()])
    closing = logits.closing_token(tok)
    data, cache = tmp / f"data{n}", tmp / f"cache{n}"
    writer = logit_cache.CacheWriter(cache / logit_cache.CACHE, 512)
    t = time.perf_counter()

    def rows():
        for i in range(n):
            text = tok.decode(rng.choice(vocab, 48).tolist())
            ids = tok(text, add_special_tokens=False)["input_ids"] + [closing]
            writer.add(f"p{i:07d}", 0, ids, rng.integers(0, len(tok), (len(ids), k)),
                       -rng.random((len(ids), k)).astype(np.float32) * 8)
            yield {"messages": [{"role": "user", "content": f"Question {i}: continue."},
                                {"role": "assistant", "content": text}], "problem_id": f"p{i:07d}", "sample_index": 0}

    datasets.Dataset.from_list(list(rows())).save_to_disk(str(data / "sft"))  # the builder's memory is not measured
    writer.close()
    meta = {"tokenizer_hash": tokenizer_hash(tok), "top_k": k, "traces": writer.rows, "tokens": writer.tokens,
            "bytes": (cache / logit_cache.CACHE).stat().st_size}
    meta["bytes_per_token"] = round(meta["bytes"] / meta["tokens"], 1)
    (cache / logit_cache.META).write_text(json.dumps(meta))
    meta["build_s"] = round(time.perf_counter() - t, 2)
    return data, cache, meta


def train_once(tmp: Path, data: Path, cache: Path, student: Path, steps: int, tag: str) -> dict:
    out = tmp / f"run_{tag}"
    cfg = tmp / f"{tag}.yaml"
    cfg.write_text(json.dumps({"method": "logit_kd", "student": str(student), "dataset_dir": str(data),
                               "logprobs": str(cache), "output_dir": str(out), "max_steps": steps,
                               "per_device_train_batch_size": 32, "max_length": 128, "logging_steps": steps,
                               "save_steps": 10 * steps, "resume": False, "progress": False}))
    t = time.perf_counter()
    # the whole process's peak (ru_maxrss): joining the cache into examples included, not only the steps
    code = ("import resource, sys\nfrom cotdistill.cli import app\nsys.argv = ['cotdistill', 'train', sys.argv[1]]\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    maxrss = int(r.stdout.rsplit("MAXRSS_KIB", 1)[1].split()[0])
    s = json.loads((out / "summary.json").read_text())
    return {"rss_peak_mib": round(maxrss / 1024, 1), "train_rss_growth_mib": s["memory"]["rss_growth_mib"],
            "wall_s": round(time.perf_counter() - t, 1), "examples": s["preflight"]["examples"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="ABBA pairs")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from cotdistill.tiny import build_student

    tmp = Path(tempfile.mkdtemp(prefix="bench_logit_cache_"))
    atexit.register(shutil.rmtree, tmp, True)  # its models and runs are scratch: none left in /tmp
    tok = AutoTokenizer.from_pretrained(str(ROOT / "data/teacher"))
    student = build_student(str(ROOT / "data/teacher"), tmp / "student", 128, 4, 2, None, 0)
    small, large = args.traces, args.traces * args.factor
    built = {n: build(tmp, n, args.k, tok) for n in (small, large)}
    for n, (_, _, meta) in built.items():
        print(f"[cache] {n} traces: {meta['tokens']} tokens, {meta['bytes'] / 2**20:.1f} MiB, "
              f"{meta['bytes_per_token']} bytes/token, built in {meta['build_s']} s")
    runs = {small: [], large: []}
    for r in range(args.repeats):
        for n in ((small, large) if r % 2 == 0 else (large, small)):
            data, cache, _ = built[n]
            res = train_once(tmp, data, cache, student, args.steps, f"{n}_{r}")
            runs[n].append(res)
            print(f"[train] {n} traces: process peak RSS {res['rss_peak_mib']} MiB (during the steps: +"
                  f"{res['train_rss_growth_mib']} MiB), "
                  f"{res['examples']} examples, {res['wall_s']} s")
    peak = {n: round(statistics.median(x["rss_peak_mib"] for x in v), 1) for n, v in runs.items()}
    ratios = [b["rss_peak_mib"] / a["rss_peak_mib"] for a, b in zip(runs[small], runs[large])]
    print(json.dumps({"rss_peak_ratio": round(statistics.median(ratios), 4),
                      "rss_peak_ratio_range": [round(min(ratios), 4), round(max(ratios), 4)],
                      "rss_peak_mib": {str(n): v for n, v in peak.items()}, "traces": [small, large],
                      "bytes_per_token": built[large][2]["bytes_per_token"], "top_k": args.k, "steps": args.steps,
                      "machine": machine()}))


if __name__ == "__main__":
    main()
