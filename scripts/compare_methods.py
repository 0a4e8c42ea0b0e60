"""Every distillation method on the embedded task, measured side by side: one `cotdistill run` of
data/configs/run_methods.yaml (same student size, traces and step budget, 3 seeds), then a table of
accuracy per seed, mean, 95% interval, the difference to sft (paired by seed, with a verdict at 95%
and at the Bonferroni level of all the comparisons), wall time per step and peak memory growth.

    python scripts/compare_methods.py                 # about an hour on 2 CPU cores; resumable
    python scripts/compare_methods.py --smoke         # 2 steps per method, 1 seed, a few problems (CI)
    python scripts/compare_methods.py seeds=[0,1,2,3] students.2.train.kd.temperature=4

The last line printed is one JSON object: {"methods": {NAME: {"per_seed": [...], "mean": x, ...}},
"teacher": acc, ...}. A method whose interval against sft holds 0 is reported as no difference.
The ensemble needs the second teacher data/teacher_b (python scripts/train_teacher.py --out
data/teacher_b --seed 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cotdistill.env import machine  # after the path is set

BASELINE = "sft"
HELPERS = {"assistant"}  # trained for another method (progressive), not a method itself


def smoke_overrides(cfg_path: Path) -> list[str]:
    import yaml

    students = yaml.safe_load(cfg_path.read_text())["students"]
    out = ["output_dir=runs/methods-smoke", "seeds=[0]", "generate.source.limit=12", "generate.sampling.n=2",
           "eval.benchmarks.0.source.limit=12", "eval.sampling.n=1", "eval.ks=[1]"]
    for i, s in enumerate(students):
        out += [f"students.{i}.train.max_steps=2", f"students.{i}.train.logging_steps=1"]
        if (s.get("train") or {}).get("method") in ("gkd", "distill"):  # rollouts: a few tokens
            out.append(f"students.{i}.train.gkd.max_new_tokens=8")
    return out


def method_rows(plan, table: dict, outcomes: dict) -> dict:
    from cotdistill.compare import difference

    models = table["models"]
    methods = [n for n in models if n not in ("teacher", *HELPERS)]
    others = [n for n in methods if n != BASELINE]
    level = 1 - 0.05 / max(1, len(others))  # Bonferroni over the comparisons with the baseline
    mats = {n: [outcomes.get(x["model"]) for x in models[n]["per_seed"]] for n in models}
    rows = {}
    for n in [m for m in models if m != "teacher"]:
        g = models[n]
        runs = [plan.students[x["model"]] for x in g["per_seed"]]
        sums = [json.loads((Path(r.train.output_dir) / "summary.json").read_text()) for r in runs]
        row = {"per_seed": [x["accuracy"] for x in g["per_seed"]], "seeds": [x["seed"] for x in g["per_seed"]],
               "mean": g["accuracy"], "ci95": g["ci95"], "retention": g["retention"],
               "s_per_step": round(sum(s["train_runtime_s"] / max(1, s["steps"]) for s in sums) / len(sums), 4),
               "peak_rss_growth_mib": max((s.get("memory") or {}).get("rss_growth_mib") or 0 for s in sums),
               "steps": sums[0]["steps"], "helper": n in HELPERS}
        if n in others and BASELINE in models and all(m is not None for m in mats[n] + mats[BASELINE]):
            import numpy as np

            a, b = np.stack(mats[n]), np.stack(mats[BASELINE])
            paired = row["seeds"] == [x["seed"] for x in models[BASELINE]["per_seed"]]
            d = difference(a, b, paired=paired)
            strict = difference(a, b, paired=paired, level=level)
            row["vs_sft"] = {
                "difference": d["difference"],
                "ci95": d["ci95"],
                "verdict": d["verdict"],
                "bonferroni": {"level": round(level, 5), "ci": strict["ci"], "verdict": strict["verdict"]},
            }
        rows[n] = row
    return rows


def print_table(rows: dict, teacher: float | None) -> None:
    head = (
        f"{'method':<22}{'mean':>7}  {'95% CI':<16}{'per seed':<24}{'vs sft (95% CI)':<32}{'s/step':>7}{'RSS+ MiB':>9}"
    )
    print(head)
    print("-" * len(head))
    for n, r in rows.items():
        vs = r.get("vs_sft")
        v = (
            (
                f"{vs['difference']:+.3f} [{vs['ci95'][0]:+.3f},{vs['ci95'][1]:+.3f}] "
                f"{ {'better': 'better', 'worse': 'worse'}.get(vs['verdict'], 'no diff') }"
                + ("*" if vs["bonferroni"]["verdict"] != "no significant difference" else "")
            )
            if vs
            else "(baseline)"
            if n == BASELINE
            else ""
        )
        ci = f"[{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}]" if r["ci95"] else "-"
        seeds = " ".join(f"{x:.3f}" for x in r["per_seed"])
        label = n + (" (helper)" if r["helper"] else "")
        print(f"{label:<22}{r['mean']:>7.3f}  {ci:<16}{seeds:<24}{v:<32}", end="")
        print(f"{r['s_per_step']:>7.3f}{r['peak_rss_growth_mib']:>9.0f}")
    if teacher is not None:
        print(f"{'teacher':<22}{teacher:>7.3f}")
    print("* also significant at the Bonferroni level (all comparisons with sft jointly)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "data" / "configs" / "run_methods.yaml"))
    ap.add_argument("--smoke", action="store_true", help="2 steps per method, 1 seed, 12 problems")
    ap.add_argument("overrides", nargs="*", help="key=value, as for `cotdistill run`")
    args = ap.parse_args()

    from cotdistill.compare import load_outcomes
    from cotdistill.config import RunConfig
    from cotdistill.errors import CotdistillError
    from cotdistill.loading import load_config
    from cotdistill.plan import Plan
    from cotdistill.run import run

    overrides = (smoke_overrides(Path(args.config)) if args.smoke else []) + args.overrides
    try:
        cfg = load_config(RunConfig, args.config, overrides)
        for s in cfg.students:
            for t in s.train.get("teachers") or []:
                if not Path(t["model"]).exists():
                    raise CotdistillError(
                        f"students '{s.name}': teacher {t['model']} not found; build it with "
                        f"`python scripts/train_teacher.py --out {t['model']} --seed 1` (about 11 min)"
                    )
        summary = run(cfg)
    except CotdistillError as e:
        sys.exit(f"error: {e}")
    plan = Plan(cfg)
    table = summary.get("distillation") or json.loads((plan.dirs["eval"] / "results.json").read_text())["distillation"]
    outcomes = load_outcomes(plan.dirs["eval"], [m for g in table["models"].values() for m in
                                                  (x["model"] for x in g["per_seed"])], table["benchmark"])
    rows = method_rows(plan, table, outcomes)
    print_table(rows, table["teacher_accuracy"])
    better = [n for n, r in rows.items() if (r.get("vs_sft") or {}).get("verdict") == "better"]
    worse = [n for n, r in rows.items() if (r.get("vs_sft") or {}).get("verdict") == "worse"]
    print(json.dumps({"methods": {n: r for n, r in rows.items()}, "teacher": table["teacher_accuracy"],
                      "baseline": BASELINE, "better_than_sft": better, "worse_than_sft": worse,
                      "seeds": cfg.seeds, "benchmark": table["benchmark"], "output_dir": cfg.output_dir,
                      "machine": machine()}))


if __name__ == "__main__":
    main()
