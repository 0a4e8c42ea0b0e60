"""Benchmark: the demo's generation with the teacher served in bf16 against fp32, on this CPU as it is and with its
matmuls held to AVX2 (an emulation of the AVX2-only machines of our kind).

    python scripts/bench_cpu_dtype.py [--problems 1000 --rounds 3 --modes native,avx2]

Why: vLLM's ``dtype: auto`` serves every model in bf16 on an x86 CPU. With AMX or AVX512-BF16 bf16 matmuls are the
fast path; without them oneDNN has no bf16 matmul, vLLM falls back to torch's ``linear``, and torch to its generic
bf16 loop. ``cotdistill.env.engine_dtype`` therefore starts float32 engines on such CPUs; this script measures the
choice. Each measurement is its own process (the caps must be set before torch loads): one in-process engine with
cotdistill's engine settings (``engine_kwargs``), a warm-up run, then ``generate.run`` over the demo task (the
embedded teacher, 4 samples at temperature 1.5, up to 64 tokens) timed end to end, traces written. Rounds alternate
the order of the two dtypes.

``avx2`` mode: each measurement runs under ``scripts/emulate_avx2.sh`` (oneDNN, MKL and ATen capped at AVX2, torch's
AMX / AVX-512 / AVX512-BF16 probes answering no), so vLLM takes the paths it takes on such a CPU for its linear
layers and loads its AVX2 kernel build. Not emulated: clock and memory speeds are this machine's; on a real AVX2-only
CPU ``native`` is the measurement and ``avx2`` adds nothing.

The last line is JSON: per mode ``bfloat16_tok_s`` and ``float32_tok_s`` (median over rounds, every round listed) and
``float32_over_bfloat16`` (> 1: fp32 generates faster), ``auto_here`` (what ``dtype: auto`` starts on this CPU),
``machine``.
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
from cotdistill.env import engine_dtype, machine  # after the path is set

EMULATE_AVX2 = ["bash", str(ROOT / "scripts/emulate_avx2.sh")]
DTYPES = ("bfloat16", "float32")


def demo_config(out: Path, limit: int, dtype: str):
    from cotdistill.config import GenerateConfig

    return GenerateConfig.model_validate({
        "source": {"kind": "hf", "path": str(ROOT / "data/digit_chain_train.jsonl"), "fields": {"id": "id"},
                   "limit": limit},
        "prompt": {"template": "arithmetic_cot"},
        "teacher": {"backend": "vllm", "model": str(ROOT / "data/teacher"), "max_model_len": 256,
                    "kv_cache_memory_bytes": 1 << 28, "enforce_eager": True, "dtype": dtype},
        "sampling": {"n": 4, "temperature": 1.5, "max_tokens": 64, "seed": 0},
        "output_dir": str(out), "progress": False})


def worker(mode: str, dtype: str, problems: int, out: Path) -> None:
    """One measurement, in this process: prints one RESULT line."""
    from cotdistill import generate
    from cotdistill.teachers.vllm_offline import VLLMOfflineTeacher

    teacher = VLLMOfflineTeacher(demo_config(out / "warm", 32, dtype).teacher)
    try:
        generate.run(demo_config(out / "warm", 32, dtype), teacher=teacher)
        t = time.perf_counter()
        s = generate.run(demo_config(out / "timed", problems, dtype), teacher=teacher)
        elapsed = time.perf_counter() - t
    finally:
        teacher.close()
    print("RESULT", json.dumps({"tok_s": s["completion_tokens"] / elapsed, "tokens": s["completion_tokens"],
                                "seconds": round(elapsed, 2), "engine_dtype": teacher.info.dtype}), flush=True)


def measure(mode: str, dtype: str, problems: int, tmp: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"{mode}_{dtype}_", dir=tmp))
    cmd = [sys.executable, __file__, "--worker", mode, dtype, str(problems), str(out)]
    p = subprocess.run((EMULATE_AVX2 if mode == "avx2" else []) + cmd, capture_output=True, text=True, timeout=1800)
    shutil.rmtree(out, ignore_errors=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{mode} {dtype}: the measurement failed (exit {p.returncode}): {p.stderr[-1500:]}")
    res = json.loads(lines[-1][7:])
    if res["engine_dtype"] != dtype:
        raise SystemExit(f"{mode} {dtype}: the engine ran {res['engine_dtype']}, not the dtype asked for")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=1000, help="demo problems per measurement (x4 samples)")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per mode and dtype, order alternating")
    ap.add_argument("--modes", default="native,avx2", help="native, avx2 (emulated), or both")
    ap.add_argument("--worker", nargs=4, metavar=("MODE", "DTYPE", "PROBLEMS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, dtype, problems, out = args.worker
        return worker(mode, dtype, int(problems), Path(out))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"native", "avx2"} or args.problems < 1 or args.rounds < 1:
        raise SystemExit("--modes takes native and/or avx2; --problems and --rounds at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="bench_cpu_dtype_"))
    atexit.register(shutil.rmtree, tmp, True)
    runs = {m: {d: [] for d in DTYPES} for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            for dtype in (DTYPES if r % 2 == 0 else DTYPES[::-1]):
                res = measure(mode, dtype, args.problems, tmp)
                runs[mode][dtype].append(res)
                print(f"round {r} {mode:6s} {dtype:8s}: {res['tok_s']:8.0f} tok/s ({res['tokens']} tokens, "
                      f"{res['seconds']} s, engine {res['engine_dtype']})", flush=True)
    out = {"problems": args.problems, "rounds": args.rounds}
    for mode in modes:
        med = {d: statistics.median(x["tok_s"] for x in runs[mode][d]) for d in DTYPES}
        out[mode] = {f"{d}_tok_s": round(med[d]) for d in DTYPES}
        out[mode].update({f"{d}_rounds": [round(x["tok_s"]) for x in runs[mode][d]] for d in DTYPES})
        out[mode]["float32_over_bfloat16"] = round(med["float32"] / med["bfloat16"], 3)
    out["auto_here"] = {"auto": "bfloat16"}.get(engine_dtype("auto"), engine_dtype("auto"))  # vLLM: bf16 on CPUs
    out["machine"] = machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
