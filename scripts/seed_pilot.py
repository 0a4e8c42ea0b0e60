"""Seed pilot for the demo's regime: the demo's SFT students on many seeds, to see whether any seed stays on the
task's plateau (a student that learnt the output format but not the mod-10 tables: about 0.3-0.5 pass@1, where
learnt students score 0.75-1.0).

One `cotdistill run` of data/configs/run_demo.yaml with only `sft_filtered` and `sft_unfiltered` (the students
every other demo student starts from or is compared with), over seeds 0..N-1, evaluated as the demo evaluates.

    python scripts/seed_pilot.py                                   # 10 seeds, native arithmetic
    python scripts/seed_pilot.py teacher.dtype=float32             # the teacher served in float32
    bash scripts/emulate_avx2.sh .venv/bin/python scripts/seed_pilot.py --out runs/seed-pilot-avx2
    python scripts/seed_pilot.py --students sft_filtered student.init_std=null students.0.train.max_steps=1200
                                                                   # the regime before 2026-12-07
    python scripts/seed_pilot.py --smoke                           # 2 seeds, a few problems and steps (CI)

Extra arguments are the run config's overrides (``key.sub=value``). Resumable (the run). The last line is one JSON
object: every seed's pass@1 per student, the lowest, and ``plateau_seeds`` (seeds below ``--plateau``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STUDENTS = ("sft_filtered", "sft_unfiltered")
SMOKE = ["generate.source.limit=40", "generate.sampling.n=2", "eval.benchmarks.0.source.limit=20",
         "eval.sampling.n=1", "eval.ks=[1]", "students.0.train.max_steps=10", "students.2.train.max_steps=10"]


def left_plateau(plan, student: str, seed: int, below: float) -> int | None:
    """The first logged step whose training loss is under ``below`` (None: never): how long the seed sat on the
    plateau, where its loss stays near 0.5 (learnt: about 0.05 on filtered traces, 0.15 on all of them)."""
    log = Path(plan.students[f"{student}@{seed}"].train.output_dir) / "trainer_log.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        r = json.loads(line)
        if "loss" in r and r["loss"] < below:
            return r["step"]
    return None


def main(argv=None) -> dict:
    from cotdistill.config import RunConfig
    from cotdistill.env import machine
    from cotdistill.loading import load_config
    from cotdistill.plan import Plan
    from cotdistill.run import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/seed-pilot")
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    ap.add_argument("--plateau", type=float, default=0.6, help="pass@1 below this counts as the plateau")
    ap.add_argument("--loss", type=float, default=0.25,
                    help="training loss below which a student has left the plateau (left_plateau_at_step)")
    ap.add_argument("--students", nargs="+", choices=STUDENTS, default=list(STUDENTS))
    ap.add_argument("--smoke", action="store_true")
    a, overrides = ap.parse_known_args(argv)
    seeds = 2 if a.smoke else a.seeds
    cfg = load_config(RunConfig, ROOT / "data/configs/run_demo.yaml",
                      [f"output_dir={a.out}", "targets.strict=false", f"seeds={list(range(seeds))}",
                       *(SMOKE if a.smoke else []), *overrides])
    cfg = cfg.model_copy(update={"students": [s for s in cfg.students if s.name in a.students]})
    start = time.monotonic()
    summary = run(cfg)
    plan = Plan(cfg)
    models = summary["distillation"]["models"]
    per_seed = {n: {x["seed"]: round(x["accuracy"], 4) for x in models[n]["per_seed"]} for n in a.students}
    out = {"seeds": seeds, "per_seed": per_seed,
           "lowest": {n: min(v.values()) for n, v in per_seed.items()},
           "spread_points": {n: round(100 * (max(v.values()) - min(v.values())), 2) for n, v in per_seed.items()},
           "plateau": a.plateau,
           "left_plateau_at_step": {n: {seed: left_plateau(plan, n, seed, a.loss) for seed in v}
                                    for n, v in per_seed.items()},
           "plateau_seeds": {n: [s for s, acc in v.items() if acc < a.plateau] for n, v in per_seed.items()},
           "teacher": summary["distillation"]["teacher_accuracy"],
           "teacher_dtype": cfg.teacher.dtype, "stage_seconds": summary["stage_seconds"],
           "wall_s": round(time.monotonic() - start, 1), "smoke": a.smoke, "machine": machine()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
