"""Do two runs of the same config reach the same verdicts? For the demo run on two CPU kinds (or with the teacher
in bf16 and in float32): every pairwise comparison's verdict (better / worse / no significant difference) and every
target (on the mean and on the worst seed), side by side, with each model's mean and seeds.

    python scripts/same_verdicts.py runs/demo runs/demo-avx2            # prints a markdown table, then JSON
    python scripts/same_verdicts.py A B --names native avx2-emulated

Reads each run's run.json (its `distillation` block). Exits 1 when a verdict or a target differs, 2 when a run has
no distillation table. The last line is one JSON object with ``same_verdicts`` and the differing rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(run: Path) -> dict:
    f = Path(run) / "run.json"
    try:
        dist = json.loads(f.read_text())["distillation"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(_fail(f"{f}: no finished run here ({type(e).__name__}); run `cotdistill run` first"))
    if not dist:
        sys.exit(_fail(f"{f}: the run has no distillation table (was the eval stage skipped?)"))
    return dist


def _fail(msg: str) -> int:
    print(msg, file=sys.stderr)
    return 2


def verdicts(dist: dict) -> dict[str, str]:
    out = {f"{c['a']} - {c['b']}": c["verdict"] for c in dist["comparisons"]}
    for name, t in dist["targets"].items():
        out[f"target {name}"] = "met" if t["met"] else "missed"
        out[f"target {name} (worst seed)"] = "met" if t["met_on_worst_seed"] else "missed"
    return out


def cell(c: dict) -> str:
    return f"{100 * c['difference']:+.1f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] {c['verdict']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", nargs=2, default=None, help="column names (default: the folders)")
    args = ap.parse_args(argv)
    names = args.names or [str(args.a), str(args.b)]
    da, db = load(args.a), load(args.b)
    print(f"| model | {names[0]} mean (seeds) | {names[1]} mean (seeds) |\n|---|---|---|")
    for m in dict.fromkeys([*da["models"], *db["models"]]):
        row = []
        for d in (da, db):
            g = d["models"].get(m)
            seeds = ", ".join(f"{x['accuracy']:.3f}" for x in g["per_seed"]) if g else ""
            row.append(f"{g['accuracy']:.3f} ({seeds})" if g else "-")
        print(f"| {m} | {row[0]} | {row[1]} |")
    va, vb = verdicts(da), verdicts(db)
    ca = {f"{c['a']} - {c['b']}": c for c in da["comparisons"]}
    cb = {f"{c['a']} - {c['b']}": c for c in db["comparisons"]}
    print(f"\n| verdict | {names[0]} | {names[1]} | same |\n|---|---|---|---|")
    differ = []
    for k in dict.fromkeys([*va, *vb]):
        same = va.get(k) == vb.get(k)
        if not same:
            differ.append(k)
        a, b = (cell(c[k]) if k in c else (v.get(k) or "-") for v, c in ((va, ca), (vb, cb)))
        print(f"| {k} | {a} | {b} | {'yes' if same else '**no**'} |")
    print(json.dumps({"same_verdicts": not differ, "differ": differ, "runs": names,
                      "all_targets_met": [da["all_targets_met"], db["all_targets_met"]]}))
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
