"""How small can the student be, and what does distillation buy at each size? One `cotdistill run` of
data/configs/run_sweep.yaml (students of several sizes, the same traces and step budget, 3 seeds: SFT, its
int8 / int4 PTQ, cached-logit KD and its int8 PTQ, and GKD from each size's SFT model), then each method's
retention (student accuracy / teacher accuracy, per seed) against the compression (teacher parameters /
student parameters) with its paired difference to SFT at the same size, the seeds' reference bands, and
each size's serving payoff (cotdistill/payoff.py: one process per model and round, alternating order).

    python scripts/compression_sweep.py                 # resumable (the run skips finished stages)
    python scripts/compression_sweep.py --smoke         # 2 sizes, a few steps, 1 seed (CI)

Prints tables and, last, one JSON line {"sizes": [{"compression", "params", "retention_mean",
"retention_range", "decode_speedup", "memory_ratio", ...}], "curves": {method: [{"size", "compression",
"retention_per_seed", "vs_sft", ...}]}, "ptq": {...}, "qat": {...}, "teacher": {...}, "bands": [...]}; writes
OUTPUT_DIR/payoff/payoff.json, a "payoff" key in eval/results.json, and the report's Payoff section
(tables + retention_vs_compression.png).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cotdistill.env import machine  # after the path is set


def smoke_overrides(cfg_path: Path) -> list[str]:
    import yaml

    students = yaml.safe_load(cfg_path.read_text())["students"]
    out = ["output_dir=runs/sweep-smoke", "seeds=[0]", "generate.source.limit=12", "generate.sampling.n=2",
           "eval.benchmarks.0.source.limit=12", "eval.sampling.n=1", "eval.ks=[1]",
           'sweep.sizes=[{"hidden": 128, "layers": 1, "heads": 4}, {"hidden": 64, "layers": 1, "heads": 2}]',
           "sweep.train={}"]  # the full sweep's per-size overrides name sizes the smoke run does not have
    for i, s in enumerate(students):
        if s.get("train"):
            out += [f"students.{i}.train.max_steps=2", f"students.{i}.train.logging_steps=1"]
    return out


def bonferroni(curves: dict, table: dict, plan) -> None:
    """Each method-vs-SFT comparison of the curves also at level 1 - 0.05 / m (m: all of them), paired by
    seed and problem as the eval's own, so a verdict that holds jointly is told from one of m chances."""
    import numpy as np

    from cotdistill.compare import difference, load_outcomes

    rows = [r for fam, rs in curves.items() if fam != "sft" for r in rs if r.get("vs_sft")]
    if not rows:
        return
    level = 1 - 0.05 / len(rows)
    seeds = {n: [x["model"] for x in g["per_seed"]] for n, g in table["models"].items()}
    outcomes = load_outcomes(plan.dirs["eval"], [m for ms in seeds.values() for m in ms], table["benchmark"])
    for r in rows:
        a, b = r["name"], r["vs_sft"]["than"]
        if all(m in outcomes for m in seeds[a] + seeds[b]):
            d = difference(np.stack([outcomes[m] for m in seeds[a]]), np.stack([outcomes[m] for m in seeds[b]]),
                           paired=len(seeds[a]) == len(seeds[b]), level=level)
            r["vs_sft"]["bonferroni"] = {"level": round(level, 5), "ci": d["ci"], "verdict": d["verdict"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "data/configs/run_sweep.yaml"))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--payoff-repeats", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from cotdistill.config import RunConfig
    from cotdistill.config.run import size_label
    from cotdistill.errors import CotdistillError
    from cotdistill.loading import load_config
    from cotdistill.payoff import measure
    from cotdistill.plan import Plan
    from cotdistill.report import BANDS, band_of, points_ci
    from cotdistill.run import run

    overrides = (smoke_overrides(Path(args.config)) if args.smoke else []) + args.overrides
    try:
        cfg = load_config(RunConfig, args.config, overrides)
        summary = run(cfg)
    except CotdistillError as e:
        sys.exit(f"error: {e}")
    plan = Plan(cfg)
    table = summary.get("distillation") or json.loads((plan.dirs["eval"] / "results.json").read_text())["distillation"]
    teacher_acc = table["teacher_accuracy"]
    groups = {n: g for n, g in table["models"].items() if n != "teacher"}
    final = {n: Path(plan.students[g["per_seed"][0]["model"]].train.output_dir) / "final" for n, g in groups.items()}
    quantized = {n for n in groups if (final[n] / "cotdistill_quant.json").exists()}
    sizes = [n for n in groups if n.startswith("sft-")]
    teacher_dir = cfg.teacher.model
    batch = 4 if args.smoke else 64
    max_tokens = 16 if args.smoke else 64
    from cotdistill.payoff import size_on_disk, torch_decode_speed
    from cotdistill.prompts import load_template
    from cotdistill.sources import load_problems

    bench = cfg.eval.benchmarks[0]
    template = load_template(bench.template)
    messages = [[m.model_dump() for m in template.render(p)] for p in load_problems(bench.source)[:64]]
    # vLLM serving: the teacher and one seed's model per size (quantized copies serve as fp32 in vLLM: not timed there)
    serve = measure([teacher_dir, *[str(final[n]) for n in sizes]], messages, batch=batch, max_tokens=max_tokens,
                    repeats=1 if args.smoke else args.payoff_repeats)
    by_model = {r["model"]: r for r in serve}
    t = by_model[teacher_dir]

    def accuracy_row(n):
        g = groups[n]
        per = [x["accuracy"] / teacher_acc for x in g["per_seed"]]
        return {
            "name": n,
            "method": g.get("method"),
            "accuracy_mean": g["accuracy"],
            "accuracy_per_seed": [x["accuracy"] for x in g["per_seed"]],
            "retention_mean": round(sum(per) / len(per), 4),
            "retention_per_seed": [round(x, 4) for x in per],
            "retention_range": [round(min(per), 4), round(max(per), 4)],
        }

    rows = []
    for n in sizes:
        p = by_model[str(final[n])]
        b = band_of(p["compression"])  # the seeds' expected retention at this compression
        row = accuracy_row(n)
        rows.append(
            {
                **row,
                "compression": p["compression"],
                "params": p["params"],
                "bytes_on_disk": p["bytes_on_disk"],
                "decode_speedup": p[f"speedup_batch{batch}"],
                "decode_speedup_batch1": p["speedup_batch1"],
                "ttft_ratio": p["ttft_ratio"],
                "memory_ratio": p["memory_ratio"],
                "model_memory_ratio": p["model_memory_ratio"],
                "kv_bytes_per_token": p["kv_bytes_per_token"],
                "retention_x_speedup": round(row["retention_mean"] * p[f"speedup_batch{batch}"], 4),
                "band": b["retention"] if b else None,
                "vs_band": None
                if not b
                else (
                    "above"
                    if row["retention_range"][0] > b["retention"][1]
                    else "below"
                    if row["retention_range"][1] < b["retention"][0]
                    else "within"
                ),
            }
        )
    rows.sort(key=lambda r: r["compression"])
    def fp32_size(n):  # parameters (so compression, as for the sizes) and the fp32 bytes of final/
        d = size_on_disk(final[n])
        return {
            "params": d["params"],
            "compression": round(t["params"] / d["params"], 3),
            "fp32_bytes": d["bytes_on_disk"],
        }

    pairs = {(c["a"], c["b"]): c for c in table.get("comparisons", [])}

    def vs(a, b):  # a - b in points with the eval's paired interval and verdict (for a against b)
        if (a, b) in pairs:
            c = pairs[(a, b)]
            return {"than": b, "difference": c["difference"], "ci95": c["ci95"], "verdict": c["verdict"]}
        if (b, a) in pairs:
            c = pairs[(b, a)]
            flip = {"better": "worse", "worse": "better"}
            return {"than": b, "difference": 0.0 - c["difference"],  # 0.0 - x: no "-0.0"
                    "ci95": [0.0 - c["ci95"][1], 0.0 - c["ci95"][0]],
                    "verdict": flip.get(c["verdict"], c["verdict"])}
        return None

    # every swept method's retention per size, beside SFT's at the same size (the curves)
    labels = [size_label(s) for s in cfg.sweep.sizes] if cfg.sweep else []
    curves = {}
    for fam in ["sft", *[f for f in ("logit_kd", "gkd") if any(f"{f}-{b}" in groups for b in labels)]]:
        curves[fam] = []
        for b in labels:
            n = f"{fam}-{b}"
            if n in groups:
                curves[fam].append({**accuracy_row(n), "size": b, **fp32_size(n),
                                    **({"vs_sft": vs(n, f"sft-{b}")} if fam != "sft" else {})})
        curves[fam].sort(key=lambda r: r["compression"])
    bonferroni(curves, table, plan)

    # quantized students: accuracy, and bytes a deployment ships (int codes + scales) against the teacher's;
    # each against the fp32 model it was quantized from (PTQ) or the PTQ it competes with (QAT)
    spec = {s.name: s for s in cfg.students}

    def own_size(n):  # a QAT student's method and size label: its rivals are named from them
        s = spec[n]
        return s.train.get("method", "sft"), size_label(s.student if s.student is not None else cfg.student)

    def against(n, bits):  # PTQ: the model it quantized; QAT (trained): PTQ of the same method, size and bits
        if spec[n].init_from:
            return spec[n].init_from
        method, size = own_size(n)
        return f"{method}_ptq{bits}-{size}"

    quant = {}
    for n in sorted(quantized):
        info = json.loads((final[n] / "cotdistill_quant.json").read_text())
        fp32 = against(n, info["bits"])
        quant[n] = {
            **accuracy_row(n),
            **fp32_size(n),
            "bits": info["bits"],
            "quantized_bytes": info["quantized_bytes"],
            "disk_ratio_vs_teacher": round(t["bytes_on_disk"] / info["quantized_bytes"], 3),
            "vs": vs(n, fp32) if fp32 in groups else None,
        }
    demo = next((n for n in sizes if n.endswith("h128l2")), sizes[0] if sizes else None)
    speed = torch_decode_speed(final[demo], messages, batch=batch, max_tokens=max_tokens,
                               repeats=1 if args.smoke else 3) if demo else {}
    trained = {s.name for s in cfg.students if s.train}
    ptq = {n: r for n, r in quant.items() if n not in trained}  # PTQ: quantized, never trained
    qat = {n: r for n, r in quant.items() if n in trained}
    for n, r in qat.items():  # and against the same method's fp32 student of that size
        fp32 = "-".join(own_size(n))
        r["vs_fp32"] = vs(n, fp32) if fp32 in groups else None

    print(
        f"teacher: {t['params']:,} parameters, accuracy {teacher_acc:.3f}, "
        f"decode {t[f'decode_tok_s_batch{batch}']:,.0f} tok/s at batch {batch}, "
        f"{t['decode_tok_s_batch1']:,.0f} at batch 1, TTFT {t['ttft_ms']:.1f} ms (vLLM)"
    )
    print(f"{'student':<22} {'params':>9} {'compr.':>7} {'retention mean [range]':>24} {'band':>11} "
          f"{'speedup':>8} {'b1':>6} {'mem':>6} {'model':>6}")
    for r in rows:
        band = f"{r['band'][0]:.2f}-{r['band'][1]:.2f}" if r["band"] else "-"
        print(
            f"{r['name']:<22} {r['params']:>9,} {r['compression']:>6.1f}x {r['retention_mean']:>8.3f} "
            f"[{r['retention_range'][0]:.3f}, {r['retention_range'][1]:.3f}] {band:>11} {r['decode_speedup']:>7.2f}x "
            f"{r['decode_speedup_batch1']:>5.2f}x {r['memory_ratio']:>5.2f}x {r['model_memory_ratio']:>5.2f}x  "
            f"{r['vs_band'] or ''}"
        )
    def pts(d):
        return "" if not d else f"{points_ci(d)} {d['verdict']}"

    print(f"{'method':<10} {'size':<14} {'compr.':>7} {'retention per seed':>26} {'mean':>6}  vs sft, points [95% CI]")
    for fam, rs in curves.items():
        for r in rs:
            per = ", ".join(f"{x:.3f}" for x in r["retention_per_seed"])
            strict = ((r.get("vs_sft") or {}).get("bonferroni") or {}).get("verdict", "")
            star = "*" if strict in ("better", "worse") else ""
            print(f"{fam:<10} {r['size']:<14} {r['compression']:>6.1f}x {per:>26} {r['retention_mean']:>6.3f}  "
                  f"{pts(r.get('vs_sft'))}{star}")
    if any(r.get("vs_sft", {}).get("bonferroni") for rs in curves.values() for r in rs):
        print("* also significant at the Bonferroni level (all method-vs-SFT comparisons of the curves jointly)")
    print(f"{'quantized':<26} {'bits':>4} {'retention mean [range]':>24} {'shipped bytes':>14} {'vs teacher':>10}  "
          f"vs fp32 / PTQ, points")
    for n, r in quant.items():
        print(f"{n:<26} {r['bits']:>4} {r['retention_mean']:>8.3f} [{r['retention_range'][0]:.3f}, "
              f"{r['retention_range'][1]:.3f}] {r['quantized_bytes']:>14,} "
              f"{t['bytes_on_disk'] / r['quantized_bytes']:>9.1f}x  {pts(r['vs'])}")
    if speed:
        for bits in (8, 4):
            print(f"int{bits} weights, {demo} ({speed['engine']}): {speed[f'int{bits}_speedup_batch1']:.2f}x at "
                  f"batch 1, {speed[f'int{bits}_speedup_batch{batch}']:.2f}x at batch {batch} vs its fp32 weights")
    result = {"sizes": rows, "curves": curves, "ptq": ptq, "qat": qat, "quant_speed": speed,
              "teacher": {k: v for k, v in t.items() if k != "runs"} | {"accuracy": teacher_acc},
              "bands": BANDS, "batch": batch, "seeds": cfg.seeds, "output_dir": cfg.output_dir, "machine": machine()}
    # results.json gets a payoff key per model; payoff/payoff.json feeds the report's Payoff section
    from cotdistill.report import write_report
    from cotdistill.store import write_atomic

    root = Path(cfg.output_dir)
    write_atomic(root / "payoff" / "payoff.json", json.dumps(result, indent=2) + "\n")
    rpath = plan.dirs["eval"] / "results.json"
    results = json.loads(rpath.read_text())
    results["payoff"] = {"teacher": result["teacher"], **{r["name"]: r for r in rows}, **ptq, **qat,
                         **{r["name"]: r for fam, rs in curves.items() if fam != "sft" for r in rs},
                         "quant_speed": speed}
    write_atomic(rpath, json.dumps(results, indent=2) + "\n")
    print(f"report: {write_report(root)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
