"""``cotdistill report RUN_DIR``: a self-contained Markdown report with matplotlib PNGs.

Everything is found under RUN_DIR by file name: ``results.json`` (eval), ``filter_report.json``
(filter funnel), ``trainer_log.jsonl`` (loss curves), generation ``summary.json`` files (cost).
Writes RUN_DIR/report/report.md and its PNGs; sections without data say so.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.errors import CotdistillError

ROLE_COLOURS = {"teacher": "#1f77b4", "student": "#2ca02c", "baseline": "#7f7f7f"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "figure.dpi": 110})
    return plt


def _accuracy_plot(results: dict, path: Path) -> None:
    plt = _plt()
    models = list(results["models"])
    benches = list(results["benchmarks"])
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(benches) + 1.2 * len(models)), 4))
    for i, name in enumerate(models):
        info = results["models"][name]
        vals = [info["scores"][b]["pass@1"]["value"] for b in benches]
        lo = [v - info["scores"][b]["pass@1"]["ci95"][0] for v, b in zip(vals, benches)]
        hi = [info["scores"][b]["pass@1"]["ci95"][1] - v for v, b in zip(vals, benches)]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(benches))]
        ax.bar(xs, vals, width * 0.9, yerr=[lo, hi], capsize=3, label=f"{name} ({info['role']})",
               color=ROLE_COLOURS.get(info["role"]), alpha=0.55 + 0.45 * (i % 2))
    ax.set_xticks(range(len(benches)), benches)
    ax.set_ylabel("pass@1 (95% CI)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Accuracy per model and benchmark")
    # many models (a sweep: one per size and seed): more legend columns, smaller type; the legend sits
    # below the axes and savefig's tight box takes it in (tight_layout cannot, and warns)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(2 + len(models) // 12, len(models)),
              frameon=False, fontsize="small" if len(models) > 12 else None)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _lengths_plot(eval_dir: Path, results: dict, path: Path) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    per_model = {}
    for name in results["models"]:
        toks = []
        for f in (eval_dir / name).glob("*/verdicts.jsonl"):
            toks += [json.loads(x)["completion_tokens"] for x in f.read_text().splitlines() if x.strip()]
        if toks:
            per_model[name] = toks
    any_data = bool(per_model)
    if any_data:  # one set of bin edges for all models, so bars line up and stay readable
        lo, hi = min(map(min, per_model.values())), max(map(max, per_model.values()))
        edges = [lo + (hi - lo + 1) * i / 30 for i in range(31)]
        for name, toks in per_model.items():
            ax.hist(toks, bins=edges, alpha=0.55, label=name, color=ROLE_COLOURS.get(results["models"][name]["role"]))
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("samples")
    ax.set_title("Completion length per model (all benchmarks)")
    if any_data:
        many = len(per_model) > 12
        ax.legend(
            frameon=False,
            **(
                {
                    "loc": "upper left",
                    "bbox_to_anchor": (1.01, 1),
                    "ncol": 1 + len(per_model) // 25,
                    "fontsize": "x-small",
                }
                if many
                else {}
            ),
        )
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return any_data


def _funnel_plot(report: dict, path: Path) -> None:
    plt = _plt()
    stages = ["generated"] + [s["stage"] for s in report["funnel"]]
    left, remaining = report["traces"], [report["traces"]]
    for s in report["funnel"]:
        left -= s["dropped"]
        remaining.append(left)
    fig, ax = plt.subplots(figsize=(7, 0.38 * len(stages) + 1.2))
    ax.barh(range(len(stages)), remaining, color="#1f77b4")
    ax.set_yticks(range(len(stages)), [stages[0]] + ["− " + s.replace("_", " ") for s in stages[1:]])
    ax.invert_yaxis()
    for i, v in enumerate(remaining):
        ax.text(v, i, f" {v}", va="center", fontsize=9)
    ax.set_xlabel("traces remaining after each filter")
    ax.set_xlim(0, max(remaining) * 1.15 + 1)
    ax.set_title("Filter funnel")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _loss_plot(logs: list[Path], root: Path, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for f in logs:
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        pts = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=str(f.parent.relative_to(root)))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def write_report(run_dir: str | Path) -> Path:
    root = Path(run_dir)
    if not root.is_dir():
        raise CotdistillError(f"{root}: run directory not found")
    out = root / "report"
    out.mkdir(exist_ok=True)
    results_files = sorted(p for p in root.rglob("results.json") if "report" not in p.parts)
    filter_reports = sorted(root.rglob("filter_report.json"))
    logs = sorted(root.rglob("trainer_log.jsonl"))
    gen_summaries = [p for p in root.rglob("summary.json")
                     if "traces_expected" in p.read_text() and "/report/" not in str(p)]
    if not (results_files or filter_reports or logs or gen_summaries):
        raise CotdistillError(f"{root}: no results.json, filter_report.json, trainer_log.jsonl or generation "
                              f"summary.json under it; run the pipeline stages into this directory first")
    md = [f"# cotdistill report: `{root}`", ""]
    for rf in results_files:
        results = json.loads(rf.read_text())
        tag = rf.parent.name
        md += [f"## Evaluation ({rf.relative_to(root)})", "",
               f"Sampling: n={results['sampling']['n']}, temperature={results['sampling']['temperature']}, "
               f"max_tokens={results['sampling']['max_tokens']}, seed={results['sampling']['seed']}; "
               f"intervals: 95% {results['ci']}. Versions: "
               + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), ""]
        benches = list(results["benchmarks"])
        md += ["| model | role | " + " | ".join(f"{b} pass@1 [95% CI]" for b in benches) + " | retention |",
               "|---|---|" + "---|" * len(benches) + "---|"]
        for name, info in results["models"].items():
            cells = [f"{s['pass@1']['value']:.3f} [{s['pass@1']['ci95'][0]:.3f}, {s['pass@1']['ci95'][1]:.3f}]"
                     for s in (info["scores"][b] for b in benches)]
            ret = ", ".join(
                f"{b}: {v:.2f}" if v is not None else f"{b}: n/a" for b, v in info.get("retention", {}).items()
            )
            md.append(f"| {name} | {info['role']} | " + " | ".join(cells) + f" | {ret or 'no teacher'} |")
        md += [
            "",
            "| model | benchmark | other metrics | mean tokens | truncated | cannot tell |",
            "|---|---|---|---|---|---|",
        ]
        for name, info in results["models"].items():
            for b, s in info["scores"].items():
                extra = ", ".join(f"{k} {v['value']:.3f}" for k, v in s.items() if "@" in k and k != "pass@1")
                md.append(f"| {name} | {b} | {extra or '-'} | {s['mean_completion_tokens']:.1f} | "
                          f"{s['truncation_rate']:.1%} | {s['cannot_tell_rate']:.1%} |")
        if "distillation" in results:
            md += _distillation_md(results["distillation"])
            _distillation_plot(results["distillation"], out / f"distillation_{tag}.png")
            md += ["", f"![distillation](distillation_{tag}.png)", ""]
        for w in results["warnings"]:
            md.append(f"\n> warning: {w}")
        _accuracy_plot(results, out / f"accuracy_{tag}.png")
        md += ["", f"![accuracy](accuracy_{tag}.png)", ""]
        if _lengths_plot(rf.parent, results, out / f"lengths_{tag}.png"):
            md += [f"![completion lengths](lengths_{tag}.png)", ""]
    if not results_files:
        md += ["## Evaluation", "", "No results.json found.", ""]
    for i, fr in enumerate(filter_reports):
        rep = json.loads(fr.read_text())
        _funnel_plot(rep, out / f"funnel_{i}.png")
        md += [f"## Filter funnel ({fr.relative_to(root)})", "",
               f"{rep['kept']} of {rep['traces']} traces kept ({rep['acceptance']:.1%}); mean teacher pass rate "
               f"{rep['mean_pass_rate']}; decontamination hits: {len(rep['decontamination_hits'])}.", "",
               f"![funnel](funnel_{i}.png)", ""]
    for pf in sorted(p for p in root.rglob("payoff.json") if "report" not in p.parts):
        payoff = json.loads(pf.read_text())
        md += _payoff_md(payoff, pf.relative_to(root))
        _payoff_plot(payoff, out / "retention_vs_compression.png")
        _speed_plot(payoff, out / "speedup_vs_compression.png")
        md += ["![retention vs compression](retention_vs_compression.png)", "",
               "![speedup and memory vs compression](speedup_vs_compression.png)", ""]
    if logs:
        _loss_plot(logs, root, out / "loss.png")
        md += ["## Training loss", "", "![loss](loss.png)", ""]
    if gen_summaries:
        md += [
            "## Generation cost",
            "",
            "| run | traces | prompt tokens | completion tokens | tokens/s | accepted per 1k teacher tokens |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for g in sorted(gen_summaries):
            s = json.loads(g.read_text())
            acc = _accepted_per_k(g.parent, filter_reports, s)
            md.append(
                f"| {g.parent.relative_to(root)} | {s['traces']} | {s['prompt_tokens']} | {s['completion_tokens']} | "
                f"{s.get('completion_tokens_per_s') or '-'} | {acc} |"
            )
        md.append("")
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


# the seeds' expectations: retention at a compression ratio (distillation surveys)
BANDS = [{"from": 2, "to": 4, "retention": [0.95, 0.98]}, {"from": 4, "to": 8, "retention": [0.90, 0.95]},
         {"from": 8, "to": 16, "retention": [0.80, 0.90]}, {"from": 16, "to": None, "retention": [0.0, 0.80]}]


def band_of(c: float) -> dict | None:
    return next((b for b in BANDS if c >= b["from"] and (b["to"] is None or c < b["to"])), None)


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _payoff_md(p: dict, where) -> list[str]:
    """The compression sweep (scripts/compression_sweep.py): retention vs compression with the serving
    payoff per size, then the quantized students."""
    t, batch = p["teacher"], p["batch"]
    md = [
        f"## Payoff ({where})",
        "",
        f"Teacher: {t['params']:,} parameters, {t['bytes_on_disk']:,} bytes, accuracy {t['accuracy']:.3f}; "
        f"vLLM decode {t[f'decode_tok_s_batch{batch}']:,.0f} tok/s at batch {batch}, "
        f"{t['decode_tok_s_batch1']:,.0f} at batch 1, time to first token {t['ttft_ms']:.1f} ms, "
        f"serving peak {t['serving_peak_mib']:,.0f} MiB (the whole process, measured). Model memory: weights + "
        f"KV cache for batch {batch} x max_model_len tokens in the served dtype, computed from the config; the "
        "process floor is not in it. Retention = student / teacher accuracy, per seed; reference band: the seeds' "
        "expectation at that compression.",
        "",
        f"| student | parameters | compression | retention mean [range] | reference band "
        f"| decode speedup (batch {batch}) | batch 1 | TTFT ratio | serving peak ratio | model memory ratio "
        "| retention x speedup |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["sizes"]:
        band = f"{r['band'][0]:.2f}-{r['band'][1]:.2f} ({r['vs_band']})" if r.get("band") else "-"
        md.append(
            f"| {r['name']} | {r['params']:,} | {r['compression']:.1f}x | {r['retention_mean']:.3f} "
            f"[{r['retention_range'][0]:.3f}, {r['retention_range'][1]:.3f}] | {band} | {r['decode_speedup']:.2f}x | "
            f"{r['decode_speedup_batch1']:.2f}x | {r['ttft_ratio']:.2f}x | {r['memory_ratio']:.2f}x | "
            f"{_ratio(r.get('model_memory_ratio'))} | {r['retention_x_speedup']:.3f} |"
        )
    quant = {**p.get("ptq", {}), **p.get("qat", {})}
    if quant:
        md += ["", "| quantized / KD student | method | bits | retention mean [range] | bytes shipped | vs teacher |",
               "|---|---|---:|---|---:|---:|"]
        for n, r in quant.items():
            shipped = r.get("quantized_bytes") or r["fp32_bytes"]
            md.append(f"| {n} | {r.get('method') or '-'} | {r['bits'] or 32} | {r['retention_mean']:.3f} "
                      f"[{r['retention_range'][0]:.3f}, {r['retention_range'][1]:.3f}] | {shipped:,} | "
                      f"{t['bytes_on_disk'] / shipped:.1f}x |")
    s = p.get("int8_speed") or {}
    if s:
        md += ["", f"int8 weights ({s['engine']}, vLLM has no weight-only int8 path on CPU): "
                   f"{s['int8_speedup_batch1']:.2f}x the fp32 decode speed at batch 1, "
                   f"{s[f'int8_speedup_batch{batch}']:.2f}x at batch {batch}."]
    return md + [""]


def _payoff_plot(p: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for b in BANDS:
        ax.fill_between([b["from"], b["to"] or 64], *b["retention"], alpha=0.15, color="tab:gray")
    for r in p["sizes"]:
        ax.scatter([r["compression"]] * len(r["retention_per_seed"]), r["retention_per_seed"], s=14, alpha=0.6)
        ax.annotate(r["name"], (r["compression"], r["retention_mean"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    # KD and quantized students at their parameter compression (bits shrink the bytes, not the count)
    others = [(n, r) for n, r in {**p.get("ptq", {}), **p.get("qat", {})}.items() if r.get("compression")]
    for i, (n, r) in enumerate(others):  # nudged right so the seeds of one size do not hide each other
        ax.scatter([r["compression"] * 1.04 ** (i % 5 + 1)] * len(r["retention_per_seed"]), r["retention_per_seed"],
                   s=16, marker="x" if r.get("bits") else "^", alpha=0.7, label=f"{n} ({r.get('bits') or 32}-bit)")
    if others:
        ax.legend(fontsize=6, loc="lower left", ncol=2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compression (teacher parameters / student parameters)")
    ax.set_ylabel("retention (student / teacher accuracy)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Retention vs compression (points: seeds; grey: reference bands)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _speed_plot(p: dict, path: Path) -> None:
    """Measured serving ratios against the teacher per size, beside the line "N x smaller is N x faster"."""
    from matplotlib.ticker import ScalarFormatter

    plt = _plt()
    rows, batch = p["sizes"], p["batch"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    c = [r["compression"] for r in rows]
    top = max(c + [2.0]) * 1.2
    ax.plot([1, top], [1, top], color="tab:gray", ls="--", lw=1, label="N x smaller = N x faster (reference)")
    series = [
        ("decode_speedup", f"decode speedup, batch {batch}", "o"),
        ("decode_speedup_batch1", "decode speedup, batch 1", "s"),
        ("ttft_ratio", "time-to-first-token ratio", "^"),
        ("memory_ratio", "serving peak memory ratio", "v"),
        ("model_memory_ratio", "model memory ratio (weights + KV cache, computed)", "D"),
    ]
    for key, label, marker in series:
        pts = [(r["compression"], r[key]) for r in rows if r.get(key)]
        if pts:
            ax.plot(*zip(*pts), marker=marker, ms=5, lw=1, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("compression (teacher parameters / student parameters)")
    ax.set_ylabel("teacher / student (higher: student cheaper)")
    ax.set_title("Serving payoff vs compression (vLLM measured; model memory computed)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _distillation_md(d: dict) -> list[str]:
    """The run's summary table: what each student's training data bought, over its seeds."""
    what = {"filtered": "verified teacher traces", "unfiltered": "all teacher traces (unfiltered)",
            "answers_only": "final answers only, no chain of thought"}
    ci = lambda c: f"[{c[0]:.3f}, {c[1]:.3f}]" if c else "-"
    md = ["", f"### Distillation on `{d['benchmark']}`", "",
          f"Accuracy is the mean over seeds; interval: {d.get('interval', '95%')}. Every seed is listed.", "",
          "| model | trained on | method | accuracy [95% CI] | per seed | retention (mean / worst seed) |",
          "|---|---|---|---|---|---:|"]
    for name, r in sorted(d["models"].items(), key=lambda x: -x[1]["accuracy"]):
        ret = f"{r['retention']:.3f} / {r['worst_seed_retention']:.3f}" if r["retention"] is not None else "-"
        seeds = ", ".join(f"{s['accuracy']:.3f}" + (f" (s{s['seed']})" if s["seed"] is not None else "")
                          for s in r["per_seed"])
        md.append(f"| {name}{' (best distilled)' if name == d['best_distilled'] else ''} | "
                  f"{what.get(r['data'], 'teacher' if r['role'] == 'teacher' else '-')} | {r['method'] or '-'} | "
                  f"{r['accuracy']:.3f} {ci(r['ci95'])} | {seeds} | {ret} |")
    best = d["best_distilled"]
    vs = [c for c in d.get("comparisons", []) if best in (c["a"], c["b"])]
    if vs:
        md += ["", f"`{best}` (best distilled) minus each other model (points, 95% CI; an interval that "
                   f"contains 0 is no significant difference):", "", "| vs | difference | 95% CI | verdict |",
               "|---|---:|---|---|"]
        for c in vs:
            sign, other = (1, c["b"]) if c["a"] == best else (-1, c["a"])
            lo, hi = sorted((sign * c["ci95"][0], sign * c["ci95"][1]))
            verdict = (
                c["verdict"] if sign == 1 else {"better": "worse", "worse": "better"}.get(c["verdict"], c["verdict"])
            )
            verdict = {"better": f"{best} better", "worse": f"{other} better"}.get(verdict, verdict)
            md.append(
                f"| {other} | {100 * sign * c['difference']:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] | {verdict} |"
            )
    md += ["", "| target | mean | goal | on the mean | worst seed | on the worst seed | significance |",
           "|---|---:|---:|---|---:|---|---|"]
    t = d["targets"]

    def ok(x):
        return "met" if x else "MISSED"

    def sig(c):
        return "-" if not c else f"{c['verdict']} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]"

    if "retention" in t:
        r = t["retention"]
        md.append(f"| best distilled student / teacher | {r['value']:.3f} | >= {r['target']:.2f} | {ok(r['met'])} | "
                  f"{r['worst_seed']:.3f} | {ok(r['met_on_worst_seed'])} | - |")
    if "gain_over_answers_only" in t:
        g = t["gain_over_answers_only"]
        md.append(
            f"| best distilled - answers-only (points) | {100 * g['value']:+.1f} | >= {100 * g['target']:+.1f} | "
            f"{ok(g['met'])} | {100 * g['worst_seed']:+.1f} | {ok(g['met_on_worst_seed'])} | "
            f"{sig(g.get('comparison'))} |"
        )
    if "filtered_vs_unfiltered" in t:
        f = t["filtered_vs_unfiltered"]
        md.append(
            f"| filtered - unfiltered, same method (points) | {100 * f['value']:+.1f} | not significantly < 0 | "
            f"{ok(f['met'])} | {100 * f['worst_seed']:+.1f} | {ok(f['met_on_worst_seed'])} | "
            f"{sig(f.get('comparison'))} |"
        )
    md.append("\nWorst seed: seed by seed where both sides have the same seeds (the same initial weights and data "
              "order), else the lowest seed of one side against the highest of the other. Differences between "
              "students with the same seeds are paired by seed.")
    return md + [""]


def _distillation_plot(d: dict, path: Path) -> None:
    """One bar per model (mean over seeds, 95% CI), a dot per seed."""
    plt = _plt()
    names = sorted(d["models"], key=lambda n: -d["models"][n]["accuracy"])
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 1), 4))
    for i, n in enumerate(names):
        r = d["models"][n]
        lo, hi = r["ci95"] or (r["accuracy"], r["accuracy"])
        ax.bar(i, r["accuracy"], 0.7, yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]], capsize=4,
               color=ROLE_COLOURS.get(r["role"]), alpha=0.6)
        accs = [s["accuracy"] for s in r["per_seed"]]
        offs = [(j - (len(accs) - 1) / 2) * 0.12 for j in range(len(accs))]
        ax.scatter([i + o for o in offs], accs, color="black", s=14, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(f"accuracy on {d['benchmark']} (bar: mean, dots: seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Distillation: every seed")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _accepted_per_k(gen_dir: Path, filter_reports: list[Path], summary: dict) -> str:
    import yaml

    for fr in filter_reports:
        cfg = fr.parent / "config.yaml"
        if (
            cfg.exists()
            and Path(yaml.safe_load(cfg.read_text()).get("generate_dir", "")).resolve() == gen_dir.resolve()
        ):
            total = summary["prompt_tokens"] + summary["completion_tokens"]
            return f"{1000 * json.loads(fr.read_text())['kept'] / total:.2f}" if total else "-"
    return "-"
