"""``cotdistill report RUN_DIR``: a self-contained Markdown report with matplotlib PNGs.

Everything is found under RUN_DIR by file name: ``results.json`` (eval), ``filter_report.json``
(filter funnel), ``trainer_log.jsonl`` (loss curves), generation ``summary.json`` files (cost).
Writes RUN_DIR/report/report.md and its PNGs; sections without data say so.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill import plots
from cotdistill.errors import CotdistillError
from cotdistill.plots import BANDS
from cotdistill.results import EvalResults


def _find(root: Path) -> dict[str, list[Path]]:
    """Every input the report reads under ``root``, by kind."""
    return {
        "results": sorted(p for p in root.rglob("results.json") if "report" not in p.parts),
        "filter": sorted(root.rglob("filter_report.json")),
        "logs": sorted(root.rglob("trainer_log.jsonl")),
        "generation": sorted(p for p in root.rglob("summary.json")
                             if "traces_expected" in p.read_text() and "/report/" not in str(p)),
        "payoff": sorted(p for p in root.rglob("payoff.json") if "report" not in p.parts),
    }


def write_report(run_dir: str | Path) -> Path:
    root = Path(run_dir)
    if not root.is_dir():
        raise CotdistillError(f"{root}: run directory not found")
    found = _find(root)
    if not any(found[k] for k in ("results", "filter", "logs", "generation")):
        raise CotdistillError(f"{root}: no results.json, filter_report.json, trainer_log.jsonl or generation "
                              f"summary.json under it; run the pipeline stages into this directory first")
    out = root / "report"
    out.mkdir(exist_ok=True)
    md = [f"# cotdistill report: `{root}`", ""]
    for rf in found["results"]:
        md += _eval_section(rf, root, out)
    if not found["results"]:
        md += ["## Evaluation", "", "No results.json found.", ""]
    for i, fr in enumerate(found["filter"]):
        md += _filter_section(fr, root, out / f"funnel_{i}.png")
    for pf in found["payoff"]:
        md += _payoff_section(pf, root, out)
    if found["logs"]:
        plots.loss_plot(found["logs"], root, out / "loss.png")
        md += ["## Training loss", "", "![loss](loss.png)", ""]
    if found["generation"]:
        md += _generation_section(found["generation"], found["filter"], root)
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _eval_section(rf: Path, root: Path, out: Path) -> list[str]:
    results, tag = EvalResults.load(rf), rf.parent.name
    sp = results.sampling
    md = [f"## Evaluation ({rf.relative_to(root)})", "",
          f"Sampling: n={sp['n']}, temperature={sp['temperature']}, max_tokens={sp['max_tokens']}, seed={sp['seed']}; "
          f"intervals: 95% {results.ci}. Versions: " + ", ".join(f"{k} {v}" for k, v in results.versions.items()), ""]
    md += _accuracy_table(results)
    if results.distillation is not None:
        md += _distillation_md(results.distillation)
        plots.distillation_plot(results.distillation, out / f"distillation_{tag}.png")
        md += ["", f"![distillation](distillation_{tag}.png)", ""]
    for w in results.warnings:
        md.append(f"\n> warning: {w}")
    plots.accuracy_plot(results, out / f"accuracy_{tag}.png")
    md += ["", f"![accuracy](accuracy_{tag}.png)", ""]
    if plots.lengths_plot(rf.parent, results, out / f"lengths_{tag}.png"):
        md += [f"![completion lengths](lengths_{tag}.png)", ""]
    return md


def _accuracy_table(results: EvalResults) -> list[str]:
    """pass@1 with its interval and retention per model, then the other metrics and sample statistics."""
    benches = list(results.benchmarks)
    md = ["| model | role | " + " | ".join(f"{b} pass@1 [95% CI]" for b in benches) + " | retention |",
          "|---|---|" + "---|" * len(benches) + "---|"]
    for name, info in results.models.items():
        cells = [f"{e.value:.3f} [{e.ci95[0]:.3f}, {e.ci95[1]:.3f}]" for e in (info.scores[b].pass1 for b in benches)]
        ret = ", ".join(f"{b}: {v:.2f}" if v is not None else f"{b}: n/a" for b, v in (info.retention or {}).items())
        md.append(f"| {name} | {info.role} | " + " | ".join(cells) + f" | {ret or 'no teacher'} |")
    md += ["", "| model | benchmark | other metrics | mean tokens | truncated | cannot tell | distinct-2 | "
           "pairwise similarity | all samples agree |", "|---|---|---|---|---|---|---|---|---|"]
    for name, info in results.models.items():
        for b, s in info.scores.items():
            extra = ", ".join(f"{k} {e.value:.3f}" for k, e in s.estimates().items() if k != "pass@1")
            d = s.diversity or {}
            div = " | ".join("-" if d.get(k) is None else f"{d[k]:.3f}"
                             for k in ("distinct_2", "pairwise_similarity", "all_agree_share"))
            md.append(f"| {name} | {b} | {extra or '-'} | {s.mean_completion_tokens:.1f} | "
                      f"{s.truncation_rate:.1%} | {s.cannot_tell_rate:.1%} | {div} |")
    return md


def _filter_section(fr: Path, root: Path, png: Path) -> list[str]:
    rep = json.loads(fr.read_text())
    plots.funnel_plot(rep, png)
    return [f"## Filter funnel ({fr.relative_to(root)})", "",
            f"{rep['kept']} of {rep['traces']} traces kept ({rep['acceptance']:.1%}); mean teacher pass rate "
            f"{rep['mean_pass_rate']}; decontamination hits: {len(rep['decontamination_hits'])}.", "",
            f"![funnel]({png.name})", ""]


def _payoff_section(pf: Path, root: Path, out: Path) -> list[str]:
    payoff = json.loads(pf.read_text())
    plots.payoff_plot(payoff, out / "retention_vs_compression.png")
    plots.speed_plot(payoff, out / "speedup_vs_compression.png")
    return _payoff_md(payoff, pf.relative_to(root)) + [
        "![retention vs compression](retention_vs_compression.png)", "",
        "![speedup and memory vs compression](speedup_vs_compression.png)", ""]


def _generation_section(summaries: list[Path], filter_reports: list[Path], root: Path) -> list[str]:
    md = ["## Generation cost", "",
          "| run | traces | prompt tokens | completion tokens | tokens/s | accepted per 1k teacher tokens |",
          "|---|---:|---:|---:|---:|---:|"]
    for g in summaries:
        s = json.loads(g.read_text())
        acc = _accepted_per_k(g.parent, filter_reports, s)
        md.append(f"| {g.parent.relative_to(root)} | {s['traces']} | {s['prompt_tokens']} | "
                  f"{s['completion_tokens']} | {s.get('completion_tokens_per_s') or '-'} | {acc} |")
    return md + [""]


def band_of(c: float) -> dict | None:
    return next((b for b in BANDS if c >= b["from"] and (b["to"] is None or c < b["to"])), None)


def points_ci(d: dict) -> str:
    """A difference of accuracies (compare.difference's dict) in points with its 95% interval: "+1.2 [-0.3, +2.7]"."""
    return f"{100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"


def _strict(d: dict | None) -> str:
    """A comparison's verdict at its Bonferroni level (all of its family jointly), where it has one."""
    b = (d or {}).get("bonferroni") or {}
    return f"; at the Bonferroni level {b['level']}: {b['verdict']}" if b else ""


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
    def pts(d):
        return "-" if not d else f"{points_ci(d)} ({d['verdict']})"

    curves = p.get("curves") or {}
    if len(curves) > 1:  # each distillation method beside SFT at every size, paired by seed and problem
        md += ["", "| method | size | compression | retention per seed | retention mean | vs SFT at this size, "
                   "points [95% CI] |", "|---|---|---:|---|---:|---|"]
        for fam, rs in curves.items():
            for r in rs:
                md.append(f"| {fam} | {r['size']} | {r['compression']:.1f}x | "
                          f"{', '.join(f'{x:.3f}' for x in r['retention_per_seed'])} | {r['retention_mean']:.3f} | "
                          f"{pts(r.get('vs_sft'))}{_strict(r.get('vs_sft'))} |")
    quant = {**p.get("ptq", {}), **p.get("qat", {})}
    if quant:
        md += ["", "| quantized / KD student | method | bits | retention mean [range] | bytes shipped | vs teacher "
                   "| vs the model it quantized (PTQ) or PTQ (QAT), points [95% CI] |",
               "|---|---|---:|---|---:|---:|---|"]
        for n, r in quant.items():
            shipped = r.get("quantized_bytes") or r["fp32_bytes"]
            md.append(f"| {n} | {r.get('method') or '-'} | {r['bits'] or 32} | {r['retention_mean']:.3f} "
                      f"[{r['retention_range'][0]:.3f}, {r['retention_range'][1]:.3f}] | {shipped:,} | "
                      f"{t['bytes_on_disk'] / shipped:.1f}x | {pts(r.get('vs'))} |")
    s = p.get("quant_speed") or {}
    for bits in (8, 4):
        if f"int{bits}_speedup_batch1" in s:
            md += ["", f"int{bits} weights ({s['engine']}, vLLM has no weight-only integer path on CPU): "
                       f"{s[f'int{bits}_speedup_batch1']:.2f}x the fp32 decode speed at batch 1, "
                       f"{s[f'int{bits}_speedup_batch{batch}']:.2f}x at batch {batch}."]
    return md + [""]


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
    md += _comparisons_md(d) + _targets_md(d["targets"])
    md.append("\nWorst seed: seed by seed where both sides have the same seeds (the same initial weights and data "
              "order), else the lowest seed of one side against the highest of the other. Differences between "
              "students with the same seeds are paired by seed.")
    return md + [""]


def _comparisons_md(d: dict) -> list[str]:
    """The best distilled student minus each other model it was compared with."""
    best = d["best_distilled"]
    vs = [c for c in d.get("comparisons", []) if best in (c["a"], c["b"])]
    if not vs:
        return []
    md = ["", f"`{best}` (best distilled) minus each other model (points, 95% CI; an interval that "
              f"contains 0 is no significant difference):", "", "| vs | difference | 95% CI | verdict |",
          "|---|---:|---|---|"]
    for c in vs:
        sign, other = (1, c["b"]) if c["a"] == best else (-1, c["a"])
        lo, hi = sorted((sign * c["ci95"][0], sign * c["ci95"][1]))
        verdict = c["verdict"] if sign == 1 else {"better": "worse", "worse": "better"}.get(c["verdict"], c["verdict"])
        verdict = {"better": f"{best} better", "worse": f"{other} better"}.get(verdict, verdict)
        diff = 100 * sign * c["difference"]
        md.append(f"| {other} | {diff:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] | {verdict} |")
    return md


def _targets_md(t: dict) -> list[str]:
    md = ["", "| target | mean | goal | on the mean | worst seed | on the worst seed | significance |",
          "|---|---:|---:|---|---:|---|---|"]

    def ok(x):
        return "not judged" if x is None else "met" if x else "MISSED"

    def sig(c):
        return "-" if not c else f"{c['verdict']} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]"

    if "retention" in t:
        r = t["retention"]
        md.append(f"| best distilled student / teacher | {r['value']:.3f} | >= {r['target']:.2f} | {ok(r['met'])} | "
                  f"{r['worst_seed']:.3f} | {ok(r['met_on_worst_seed'])} | - |")
    if "gain_over_answers_only" in t:
        g = t["gain_over_answers_only"]
        md.append(f"| best distilled - answers-only (points) | {100 * g['value']:+.1f} | >= {100 * g['target']:+.1f} "
                  f"| {ok(g['met'])} | {100 * g['worst_seed']:+.1f} | {ok(g['met_on_worst_seed'])} | "
                  f"{sig(g.get('comparison'))} |")
    if "filtered_vs_unfiltered" in t:
        f = t["filtered_vs_unfiltered"]
        md.append(f"| filtered - unfiltered, same method (points) | {100 * f['value']:+.1f} | not significantly < 0 "
                  f"| {ok(f['met'])} | {100 * f['worst_seed']:+.1f} | {ok(f['met_on_worst_seed'])} | "
                  f"{sig(f.get('comparison'))} |")
    return md


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
