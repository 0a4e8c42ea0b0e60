"""The report's figures (matplotlib, Agg backend, PNG files): accuracy per model and benchmark, completion
lengths, the filter funnel, training loss, the distillation table's seeds, and the compression sweep's payoff.
Each takes the data it draws and a path; report.py writes the Markdown around them."""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.results import EvalResults

ROLE_COLOURS = {"teacher": "#1f77b4", "student": "#2ca02c", "baseline": "#7f7f7f"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "figure.dpi": 110})
    return plt


def accuracy_plot(results: EvalResults, path: Path) -> None:
    plt = _pyplot()
    models = list(results.models)
    benches = list(results.benchmarks)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(benches) + 1.2 * len(models)), 4))
    for i, name in enumerate(models):
        info = results.models[name]
        est = [info.scores[b].pass1 for b in benches]
        vals = [e.value for e in est]
        lo = [e.value - e.ci95[0] for e in est]
        hi = [e.ci95[1] - e.value for e in est]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(benches))]
        ax.bar(xs, vals, width * 0.9, yerr=[lo, hi], capsize=3, label=f"{name} ({info.role})",
               color=ROLE_COLOURS.get(info.role), alpha=0.55 + 0.45 * (i % 2))
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


def lengths_plot(eval_dir: Path, results: EvalResults, path: Path) -> bool:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    per_model = {}
    for name in results.models:
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
            ax.hist(toks, bins=edges, alpha=0.55, label=name, color=ROLE_COLOURS.get(results.models[name].role))
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


def funnel_plot(report: dict, path: Path) -> None:
    plt = _pyplot()
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


def loss_plot(logs: list[Path], root: Path, path: Path) -> None:
    plt = _pyplot()
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


# the seeds' expectations: retention at a compression ratio (distillation surveys)
BANDS = [{"from": 2, "to": 4, "retention": [0.95, 0.98]}, {"from": 4, "to": 8, "retention": [0.90, 0.95]},
         {"from": 8, "to": 16, "retention": [0.80, 0.90]}, {"from": 16, "to": None, "retention": [0.0, 0.80]}]


def payoff_plot(p: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for b in BANDS:
        ax.fill_between([b["from"], b["to"] or 64], *b["retention"], alpha=0.15, color="tab:gray")
    curves = p.get("curves") or {"sft": p["sizes"]}
    for k, (fam, rs) in enumerate(curves.items()):  # one line per method through its mean, seeds as points
        nudge = 1.03 ** k  # so the seeds of one size do not hide each other
        line = ax.plot([r["compression"] * nudge for r in rs], [r["retention_mean"] for r in rs], marker="o",
                       ms=4, lw=1.2, label=f"{fam} (mean; points: seeds)")[0]
        for r in rs:
            ax.scatter([r["compression"] * nudge] * len(r["retention_per_seed"]), r["retention_per_seed"], s=12,
                       alpha=0.5, color=line.get_color())
    # quantized students at their parameter compression (bits shrink the bytes, not the count); with
    # curves, only the trained ones (QAT): PTQ sits on its fp32 model's point
    quant = {**p.get("ptq", {}), **p.get("qat", {})} if not p.get("curves") else p.get("qat", {})
    others = [(n, r) for n, r in quant.items() if r.get("compression")]
    for i, (n, r) in enumerate(others):  # nudged right so the seeds of one size do not hide each other
        ax.scatter([r["compression"] * 1.04 ** (i % 5 + 1)] * len(r["retention_per_seed"]), r["retention_per_seed"],
                   s=16, marker="x" if r.get("bits") else "^", alpha=0.7, label=f"{n} ({r.get('bits') or 32}-bit)")
    ax.legend(fontsize=6, loc="lower left", ncol=2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compression (teacher parameters / student parameters)")
    ax.set_ylabel("retention (student / teacher accuracy)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Retention vs compression (points: seeds; grey: reference bands)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def speed_plot(p: dict, path: Path) -> None:
    """Measured serving ratios against the teacher per size, beside the line "N x smaller is N x faster"."""
    from matplotlib.ticker import ScalarFormatter

    plt = _pyplot()
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


def distillation_plot(d: dict, path: Path) -> None:
    """One bar per model (mean over seeds, 95% CI), a dot per seed."""
    plt = _pyplot()
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
