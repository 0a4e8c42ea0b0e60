"""What the filter stage writes, from its decisions (a module of the filter stage): the training sets (sft/,
prompts/ and their jsonl twins), verdicts.jsonl, filter_report.json (the funnel, verdicts, pass rates, lengths,
contamination, per teacher) and README.md, the dataset card."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cotdistill.config import FilterConfig
from cotdistill.records import Verdict
from cotdistill.store import save_dataset_atomic, write_atomic

FUNNEL = ["truncated", "length", "format", "contaminated", "cannot_tell", "incorrect",
          "duplicate_exact", "near_duplicate", "over_per_problem_cap"]


@dataclass
class Decisions:
    """What the filter decided about every trace, and why."""

    verdicts: dict[str, Verdict]  # trace key -> the verifier's verdict
    labels: dict[str, tuple]  # problem id -> (gold or voted label, "gold" | "voted" | None)
    drop: dict[str, str]  # trace key -> the funnel stage that dropped it
    contam_hits: list  # decontamination hits, for the report
    problem_hit: set  # problems found in an eval set: no prompt row either
    fields: dict[str, dict]  # problem id -> Problem.fields(), carried on the prompt rows


EMPTY_COLUMNS = {"sft": ["messages", "problem_id", "sample_index", "teacher", "tokenizer_hash", "template",
                         "template_hash", "gold", "label_source", "extracted", "correct", "verify_reason",
                         "completion_tokens"],
                 "prompts": ["prompt", "problem_id", "gold", "label_source", "problem_fields"]}


PASS_RATE_BINS = [("0", lambda r: r == 0), ("(0, 0.25]", lambda r: 0 < r <= 0.25),
                  ("(0.25, 0.5]", lambda r: 0.25 < r <= 0.5), ("(0.5, 0.75]", lambda r: 0.5 < r <= 0.75),
                  ("(0.75, 1)", lambda r: 0.75 < r < 1), ("1", lambda r: r == 1)]


def _rows(traces, d: Decisions) -> tuple[list[dict], list[str]]:
    """The kept traces as TRL conversational rows with their lineage, and every trace's verdict line."""
    rows, verdict_lines = [], []
    for t in traces:
        v = d.verdicts[t.key]
        label, source = d.labels[t.problem_id]
        verdict_lines.append(json.dumps({"problem_id": t.problem_id, "sample_index": t.sample_index,
                                         **v.model_dump(), "label": label, "label_source": source,
                                         "dropped": d.drop.get(t.key)}))
        if t.key in d.drop:
            continue
        msgs = [m.model_dump() for m in t.messages] + [{"role": "assistant", "content": t.completion}]
        rows.append({"messages": msgs, "problem_id": t.problem_id, "sample_index": t.sample_index,
                     "teacher": t.teacher.model, "tokenizer_hash": t.teacher.tokenizer_hash,
                     "template": t.template.name, "template_hash": t.template.hash, "gold": label,
                     "label_source": source, "extracted": v.extracted, "correct": v.correct,
                     "verify_reason": v.reason, "completion_tokens": t.completion_tokens})
    return rows, verdict_lines


def _prompts(traces, d: Decisions) -> list[dict]:
    """One prompt per labelled, uncontaminated problem (for on-policy methods: GKD rolls out from these), with the
    problem's fields as JSON text (on_policy routes prompts to teachers by them)."""
    first = {}
    for t in traces:
        first.setdefault(t.problem_id, t)
    return [{"prompt": [m.model_dump() for m in t.messages], "problem_id": pid, "gold": d.labels[pid][0],
             "label_source": d.labels[pid][1], "problem_fields": json.dumps(d.fields[pid], sort_keys=True)}
            for pid, t in first.items() if pid not in d.problem_hit and d.labels[pid][0] is not None]


def _save(out: Path, rows: list[dict], prompts: list[dict], verdict_lines: list[str]) -> None:
    import datasets

    for name, data in (("sft", rows), ("prompts", prompts)):
        write_atomic(out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
        # an empty selection still gets a loadable dataset (no rows, the usual columns)
        ds = datasets.Dataset.from_list(data) if data else datasets.Dataset.from_dict(
            {c: [] for c in EMPTY_COLUMNS[name]})
        save_dataset_atomic(ds, out / name, num_shards=1 if not data else None)  # datasets fails on 0 rows else
    write_atomic(out / "verdicts.jsonl", "".join(x + "\n" for x in verdict_lines))


def _report(traces, rows: list[dict], prompts: list[dict], d: Decisions) -> dict:
    """filter_report.json: the funnel, verdicts, pass rates, lengths, contamination, per teacher."""
    counts = Counter(d.drop.values())
    n_samples = Counter(t.problem_id for t in traces)
    n_correct = Counter(t.problem_id for t in traces if d.verdicts[t.key].correct)
    pass_rates = [n_correct[pid] / n_samples[pid] for pid in n_samples]
    kept_tokens = [r["completion_tokens"] for r in rows]
    correct = [t.completion_tokens for t in traces if d.verdicts[t.key].correct]
    return {
        "traces": len(traces), "kept": len(rows), "acceptance": round(len(rows) / len(traces), 4),
        "funnel": [{"stage": s, "dropped": counts.get(s, 0)} for s in FUNNEL],
        "verdicts": dict(Counter("correct" if v.correct else "cannot_tell" if v.correct is None else "incorrect"
                                 for v in d.verdicts.values())),
        "problems": len(n_samples), "problems_with_kept_traces": len({r["problem_id"] for r in rows}),
        "voted_labels": sum(1 for lab, src in d.labels.values() if src == "voted"),
        "pass_rate_histogram": {name: sum(1 for r in pass_rates if f(r)) for name, f in PASS_RATE_BINS},
        "mean_pass_rate": round(statistics.fmean(pass_rates), 4) if pass_rates else None,
        "kept_completion_tokens": ({"min": min(kept_tokens), "median": statistics.median(kept_tokens),
                                    "mean": round(statistics.fmean(kept_tokens), 1), "max": max(kept_tokens)}
                                   if kept_tokens else None),
        "completion_tokens": {"generated": _lengths([t.completion_tokens for t in traces]),
                              "verified": _lengths(correct), "kept": _lengths(kept_tokens)},
        "decontamination_hits": d.contam_hits, "prompts": len(prompts),
        "per_teacher": _per_teacher(traces, d.verdicts, d.drop),
        "adaptive": _adaptive_saving(traces, len(n_samples)),
    }


def _lengths(tokens: list[int]) -> dict | None:
    """Length distribution of a set of traces (completion tokens): what length control changed."""
    if not tokens:
        return None
    q = sorted(tokens)
    return {"traces": len(q), "min": q[0], "median": statistics.median(q), "mean": round(statistics.fmean(q), 1),
            "p90": q[min(len(q) - 1, int(0.9 * len(q)))], "max": q[-1], "total": sum(q)}


def write(cfg, out: Path, traces, d: Decisions) -> dict:
    """The training sets (sft/, prompts/), verdicts.jsonl, filter_report.json and the dataset card."""
    rows, verdict_lines = _rows(traces, d)
    prompts = _prompts(traces, d)
    _save(out, rows, prompts, verdict_lines)
    report = _report(traces, rows, prompts, d)
    write_atomic(out / "filter_report.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "README.md", dataset_card(cfg, report))
    return {k: v for k, v in report.items() if k != "decontamination_hits"} | {
        "decontamination_hits": len(d.contam_hits)
    }


def _adaptive_saving(traces, problems: int) -> dict | None:
    """Adaptive sampling (until_verified): samples generated against the fixed-n budget."""
    k = traces[0].sampling.until_verified if traces else None
    if k is None:
        return None
    budget = problems * traces[0].sampling.n
    rounds = Counter(t.round for t in traces)
    return {"until_verified": k, "budget_traces": budget, "traces": len(traces),
            "saved_share": round(1 - len(traces) / budget, 4) if budget else None,
            "completion_tokens": sum(t.completion_tokens for t in traces),
            "traces_per_round": {str(r): c for r, c in sorted(rounds.items(), key=lambda x: (x[0] is None, x[0]))}}


def _per_teacher(traces, verdicts, drop) -> dict:
    """Traces, verified-correct and kept traces by the teacher that wrote them (multi-teacher runs)."""
    out: dict[str, dict] = {}
    for t in traces:
        row = out.setdefault(t.teacher.model, {"traces": 0, "correct": 0, "kept": 0})
        row["traces"] += 1
        row["correct"] += bool(verdicts[t.key].correct)
        row["kept"] += t.key not in drop
    return out


# the card's YAML header: `datasets.load_dataset(FOLDER)` loads the kept traces, `load_dataset(FOLDER, "prompts")`
# the prompts, `"verdicts"` every trace's verdict (the folder's JSONL files have different columns)
CARD_CONFIGS = ["---", "configs:", "- config_name: sft", "  data_files: sft.jsonl", "  default: true",
                "- config_name: prompts", "  data_files: prompts.jsonl", "- config_name: verdicts",
                "  data_files: verdicts.jsonl", "---", ""]


def dataset_card(cfg: FilterConfig, r: dict) -> str:
    lines = [*CARD_CONFIGS, "# cotdistill filtered traces", "",
             f"Source generation: `{cfg.generate_dir}`. {r['kept']} of {r['traces']} traces kept "
             f"(acceptance {r['acceptance']:.1%}) over {r['problems_with_kept_traces']} of {r['problems']} problems.",
             "Files: `sft/` + `sft.jsonl` (TRL conversational `messages`), `prompts/` + `prompts.jsonl` "
             "(prompt-only), `verdicts.jsonl` (every trace's verdict and drop reason). Load them with "
             "`datasets.load_dataset(\"<this folder>\")` (the kept traces), `load_dataset(..., \"prompts\")`, "
             "`load_dataset(..., \"verdicts\")`, or `datasets.load_from_disk(\"<this folder>/sft\")`.", "",
             "## Funnel", "", "| stage | dropped | remaining |", "|---|---:|---:|"]
    left = r["traces"]
    lines.append(f"| generated | | {left} |")
    for s in r["funnel"]:
        left -= s["dropped"]
        lines.append(f"| {s['stage']} | {s['dropped']} | {left} |")
    if r.get("adaptive"):
        a = r["adaptive"]
        lines += ["", "## Adaptive sampling", "",
                  f"`until_verified: {a['until_verified']}`: {a['traces']} traces generated of a budget of "
                  f"{a['budget_traces']} ({a['saved_share']:.1%} saved); per round: "
                  + ", ".join(f"{r}: {c}" for r, c in a["traces_per_round"].items()) + "."]
    if len(r.get("per_teacher") or {}) > 1:
        lines += ["", "## Traces per teacher", "", "| teacher | traces | correct | kept |", "|---|---:|---:|---:|"]
        lines += [f"| `{m}` | {c['traces']} | {c['correct']} | {c['kept']} |" for m, c in r["per_teacher"].items()]
    lines += ["", "## Teacher pass rate per problem", "", f"Mean pass rate: {r['mean_pass_rate']}. "
              f"Pseudo-labels by vote: {r['voted_labels']}.", "", "| pass rate | problems | |", "|---|---:|---|"]
    most = max(r["pass_rate_histogram"].values()) or 1
    for name, c in r["pass_rate_histogram"].items():
        lines.append(f"| {name} | {c} | {'#' * round(30 * c / most)} |")
    lines += ["", "## Completion length (tokens), before and after the filter", "",
              f"Length control: max_completion_tokens {cfg.max_completion_tokens}, max_per_problem "
              f"{cfg.max_per_problem} ({cfg.select}), shortest_share {cfg.shortest_share}.", "",
              "| traces | count | min | median | mean | p90 | max | total |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, k in r["completion_tokens"].items():
        lines.append(f"| {name} | 0 | | | | | | 0 |" if k is None else
                     f"| {name} | {k['traces']} | {k['min']} | {k['median']} | {k['mean']} | {k['p90']} | {k['max']} "
                     f"| {k['total']} |")
    lines += ["", "## Decontamination", ""]
    if not cfg.decontam.eval_sets:
        lines.append("No evaluation sets configured: not checked.")
    else:
        sets = ", ".join(f"`{s.path}`" for s in cfg.decontam.eval_sets)
        lines.append(
            f"Checked against {sets} with {cfg.decontam.ngram}-word n-grams: {len(r['decontamination_hits'])} hits."
        )
        if r["decontamination_hits"]:
            lines += ["", "| problem | where | eval set | eval id | shared n-gram |", "|---|---|---|---|---|"]
            lines += [f"| {h['problem_id']} | {h['where']} | {h['eval_set']} | {h['eval_id']} | {h['ngram']} |"
                      for h in r["decontamination_hits"][:200]]
    return "\n".join(lines) + "\n"
