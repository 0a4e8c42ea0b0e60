"""Stage 2: verify the teacher's traces, drop the bad ones (saying why), write a training set.

    cotdistill filter data/configs/filter_demo.yaml [key=value ...]

Reads a generation directory (``traces.jsonl``, ``problems.jsonl``). Every trace gets a verdict
and at most one drop reason, checked in funnel order: truncated, length, format, contaminated,
cannot_tell, incorrect, duplicate_exact, near_duplicate, over_per_problem_cap. Problems without a
gold answer get a voted pseudo-label when enough samples agree. Output directory:
    sft/ + sft.jsonl          TRL conversational rows ("messages") with lineage and verdict
    prompts/ + prompts.jsonl  prompt-only view ("prompt") of every clean problem, for on-policy trainers
    verdicts.jsonl            every trace: verdict and drop reason
    filter_report.json, README.md (dataset card: funnel, pass rates, lengths, decontamination hits)
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from cotdistill.adaptive import normalise, verifiable
from cotdistill.config import FilterConfig
from cotdistill.decontam import NgramIndex
from cotdistill.errors import CotdistillError
from cotdistill.loading import save_resolved
from cotdistill.prompts import load_template
from cotdistill.records import Problem, Trace, Verdict
from cotdistill.sources import load_problems
from cotdistill.store import read_records, write_atomic
from cotdistill.verify import answer_key, check_format, compare
from cotdistill.verify_pool import verify_pairs

FUNNEL = ["truncated", "length", "format", "contaminated", "cannot_tell", "incorrect",
          "duplicate_exact", "near_duplicate", "over_per_problem_cap"]


def _read(path: Path, cls, what: str) -> list:
    if not path.exists():
        hint = " (shard files? run `cotdistill merge` first)" if list(path.parent.glob("traces-*-of-*.jsonl")) else ""
        raise CotdistillError(f"{path}: {what} file not found{hint}; point generate_dir at a generation output")
    return read_records(path, cls, what)


def _shingles(text: str) -> set[bytes]:
    w = text.split()
    return {" ".join(w[i: i + 3]).encode() for i in range(max(1, len(w) - 2))}


def _minhash(text: str, perm: int):
    from datasketch import MinHash

    m = MinHash(num_perm=perm, seed=1)
    m.update_batch(list(_shingles(text)))
    return m


def _decontam_index(cfg: FilterConfig) -> NgramIndex | None:
    if not cfg.decontam.eval_sets:
        return None
    index = NgramIndex(cfg.decontam.ngram)
    for src in cfg.decontam.eval_sets:
        for p in load_problems(src):
            index.add(src.path, p.id, p.question)
    return index


def _vote(traces: list[Trace], verdicts: dict[str, Verdict], threshold: float) -> str | None:
    """The answer of at least ``threshold`` of the samples that finished with an answer (a cut-off or
    answer-less sample has no vote, and does not dilute the others)."""
    voters = [t for t in traces if t.finish_reason == "stop" and verdicts[t.key].extracted]
    keys = [answer_key(verdicts[t.key].extracted) for t in voters]
    if not keys:
        return None
    top, count = Counter(keys).most_common(1)[0]
    if count / len(voters) < threshold:
        return None
    return next(verdicts[t.key].extracted for t in voters if answer_key(verdicts[t.key].extracted) == top)


def _templates(traces: list[Trace], gen: Path) -> dict:
    """The templates the traces were rendered with, checked by the hash recorded at generation: the
    format check must judge a trace by the template that wrote its prompt."""
    out = {}
    for t in traces:
        if t.template.name in out:
            continue
        tmpl = load_template(t.template.name)
        if t.template.hash and tmpl.hash != t.template.hash:
            raise CotdistillError(
                f"{gen / 'traces.jsonl'}: trace ({t.problem_id}, {t.sample_index}) was rendered with template "
                f"'{t.template.name}' hash {t.template.hash}, the template is now {tmpl.hash}; restore that version "
                f"(or regenerate), or set format_check: false")
        out[t.template.name] = tmpl
    return out


def _load(gen: Path) -> tuple[dict[str, Problem], list[Trace]]:
    problems: dict[str, Problem] = {p.id: p for p in _read(gen / "problems.jsonl", Problem, "problem")}
    traces: list[Trace] = _read(gen / "traces.jsonl", Trace, "trace")
    if not traces:
        raise CotdistillError(f"{gen / 'traces.jsonl'}: no traces to filter")
    for i, t in enumerate(traces, start=1):
        if t.problem_id not in problems:
            raise CotdistillError(
                f"{gen / 'traces.jsonl'}: line {i}: problem '{t.problem_id}' is not in problems.jsonl; "
                f"traces and problems come from different runs"
            )
    # generate writes traces as they complete, so the file's order depends on timing; every output
    # (training rows, dedup winners, prompts) follows this canonical order instead: problem order, then sample.
    rank = {pid: i for i, pid in enumerate(problems)}
    traces.sort(key=lambda t: (rank[t.problem_id], t.sample_index))
    return problems, traces


def _pseudo_labels(cfg: FilterConfig, problems, by_problem, verdicts) -> dict[str, tuple[str | None, str | None]]:
    """Gold where there is one; elsewhere a majority vote, and the verdicts re-judged against it."""
    labels: dict[str, tuple[str | None, str | None]] = {}  # problem -> (label, source)
    for pid, ts in by_problem.items():
        p = problems[pid]
        if verifiable(p):
            labels[pid] = (p.answer, "gold")
            continue
        label = _vote(ts, verdicts, cfg.vote_threshold)
        labels[pid] = (label, "voted" if label else None)
        if label:
            for t in ts:
                v = verdicts[t.key]
                ok = compare(label, v.extracted) if v.extracted else False
                verdicts[t.key] = Verdict(extracted=v.extracted, correct=ok,
                                          reason="no_answer" if not v.extracted else "match" if ok else "mismatch")
    return labels


def _contaminated_problems(index, problems) -> tuple[dict[str, list], list[dict]]:
    problem_hit: dict[str, list] = {}
    hits_out: list[dict] = []
    if index is None:
        return problem_hit, hits_out
    for pid, p in problems.items():
        hits = index.hits(p.question)
        if hits:
            problem_hit[pid] = hits
            hits_out += [{"problem_id": pid, "where": "problem", "eval_set": s, "eval_id": i, "ngram": g}
                         for s, i, g in hits]
    return problem_hit, hits_out


def _per_trace_drops(
    cfg: FilterConfig, traces, verdicts, templates, index, problem_hit, contam_hits
) -> dict[str, str]:
    """The funnel stages that judge one trace alone, in order; the first that fails names the drop."""
    drop: dict[str, str] = {}
    for t in traces:
        v = verdicts[t.key]
        reason = None
        if cfg.require_stop and t.finish_reason != "stop":
            reason = "truncated"
        elif t.completion_tokens < cfg.min_completion_tokens or (
                cfg.max_completion_tokens is not None and t.completion_tokens > cfg.max_completion_tokens):
            reason = "length"
        elif cfg.format_check and check_format(t.completion, templates[t.template.name].spec.think):
            reason = "format"
        elif t.problem_id in problem_hit:
            reason = "contaminated"
        elif index is not None and cfg.decontam.check_traces and (hits := index.hits(t.completion)):
            reason = "contaminated"
            contam_hits += [{"problem_id": t.problem_id, "sample_index": t.sample_index, "where": "trace",
                             "eval_set": s, "eval_id": i, "ngram": g} for s, i, g in hits]
        elif cfg.require_correct and v.correct is None:
            reason = "cannot_tell"
        elif cfg.require_correct and v.correct is False:
            reason = "incorrect"
        if reason:
            drop[t.key] = reason
    return drop


def _dedup_and_cap(cfg: FilterConfig, ts: list[Trace], drop: dict[str, str]) -> None:
    """Within one problem, shortest first: exact duplicates, near duplicates (MinHash LSH), then the
    per-problem cap (the shortest, or greedily the least similar to those chosen)."""
    alive = sorted((t for t in ts if t.key not in drop), key=lambda t: (t.completion_tokens, t.sample_index))
    seen_text, kept, sigs = set(), [], []
    lsh = None
    if cfg.near_dup_threshold is not None:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=cfg.near_dup_threshold, num_perm=cfg.minhash_perm)
    for t in alive:
        norm = normalise(t.completion)  # the same key adaptive sampling counts distinct traces by
        if cfg.dedup_exact and norm in seen_text:
            drop[t.key] = "duplicate_exact"
            continue
        seen_text.add(norm)
        if lsh is not None or cfg.select == "diverse":
            m = _minhash(norm, cfg.minhash_perm)
            if lsh is not None:
                if lsh.query(m):
                    drop[t.key] = "near_duplicate"
                    continue
                lsh.insert(t.key, m)
            sigs.append(m)
        kept.append(t)
    k = cfg.max_per_problem
    if k is not None and len(kept) > k:
        chosen = kept[:k]
        if cfg.select == "diverse":
            sig = {t.key: s for t, s in zip(kept, sigs)}
            chosen = [kept[0]]
            while len(chosen) < k:
                rest = [t for t in kept if t not in chosen]
                chosen.append(min(rest, key=lambda t: max(sig[t.key].jaccard(sig[c.key]) for c in chosen)))
        for t in kept:
            if t not in chosen:
                drop[t.key] = "over_per_problem_cap"


def run(cfg: FilterConfig) -> dict:
    gen, out = Path(cfg.generate_dir), Path(cfg.output_dir)
    problems, traces = _load(gen)
    templates = _templates(traces, gen) if cfg.format_check else {}
    index = _decontam_index(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out / "config.yaml")
    found = verify_pairs([(t.completion, problems[t.problem_id]) for t in traces], cfg.verify_workers,
                         cfg.verify_timeout_s, cfg.progress)  # pool, hard per-item limit
    verdicts: dict[str, Verdict] = {t.key: v for t, v in zip(traces, found)}
    by_problem: dict[str, list[Trace]] = defaultdict(list)
    for t in traces:
        by_problem[t.problem_id].append(t)
    labels = _pseudo_labels(cfg, problems, by_problem, verdicts)
    problem_hit, contam_hits = _contaminated_problems(index, problems)
    drop = _per_trace_drops(cfg, traces, verdicts, templates, index, problem_hit, contam_hits)
    for ts in by_problem.values():
        _dedup_and_cap(cfg, ts, drop)
    return _write(cfg, out, problems, traces, verdicts, labels, drop, contam_hits, problem_hit)


def _write(cfg, out, problems, traces, verdicts, labels, drop, contam_hits, problem_hit) -> dict:
    import datasets

    rows, kept_tokens = [], []
    verdict_lines = []
    for t in traces:
        v = verdicts[t.key]
        label, source = labels[t.problem_id]
        verdict_lines.append(json.dumps({"problem_id": t.problem_id, "sample_index": t.sample_index,
                                         **v.model_dump(), "label": label, "label_source": source,
                                         "dropped": drop.get(t.key)}))
        if t.key in drop:
            continue
        msgs = [m.model_dump() for m in t.messages] + [{"role": "assistant", "content": t.completion}]
        rows.append({"messages": msgs, "problem_id": t.problem_id, "sample_index": t.sample_index,
                     "teacher": t.teacher.model, "tokenizer_hash": t.teacher.tokenizer_hash,
                     "template": t.template.name, "template_hash": t.template.hash, "gold": label,
                     "label_source": source, "extracted": v.extracted, "correct": v.correct,
                     "verify_reason": v.reason, "completion_tokens": t.completion_tokens})
        kept_tokens.append(t.completion_tokens)
    first = {}
    for t in traces:
        first.setdefault(t.problem_id, t)
    prompts = [{"prompt": [m.model_dump() for m in t.messages], "problem_id": pid, "gold": labels[pid][0],
                "label_source": labels[pid][1]}
               for pid, t in first.items() if pid not in problem_hit and labels[pid][0] is not None]
    empty_cols = {"sft": ["messages", "problem_id", "sample_index", "teacher", "tokenizer_hash", "template",
                          "template_hash", "gold", "label_source", "extracted", "correct", "verify_reason",
                          "completion_tokens"],
                  "prompts": ["prompt", "problem_id", "gold", "label_source"]}
    for name, data in (("sft", rows), ("prompts", prompts)):
        write_atomic(out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
        # an empty selection still gets a loadable dataset (no rows, the usual columns)
        ds = (
            datasets.Dataset.from_list(data) if data else datasets.Dataset.from_dict({c: [] for c in empty_cols[name]})
        )
        ds.save_to_disk(str(out / name), num_shards=1 if not data else None)  # datasets fails on 0 rows otherwise
    write_atomic(out / "verdicts.jsonl", "".join(x + "\n" for x in verdict_lines))

    counts = Counter(drop.values())
    n_samples = Counter(t.problem_id for t in traces)
    n_correct = Counter(t.problem_id for t in traces if verdicts[t.key].correct)
    pass_rates = [n_correct[pid] / n_samples[pid] for pid in n_samples]
    bins = [
        ("0", lambda r: r == 0),
        ("(0, 0.25]", lambda r: 0 < r <= 0.25),
        ("(0.25, 0.5]", lambda r: 0.25 < r <= 0.5),
        ("(0.5, 0.75]", lambda r: 0.5 < r <= 0.75),
        ("(0.75, 1)", lambda r: 0.75 < r < 1),
        ("1", lambda r: r == 1),
    ]
    report = {
        "traces": len(traces), "kept": len(rows), "acceptance": round(len(rows) / len(traces), 4),
        "funnel": [{"stage": s, "dropped": counts.get(s, 0)} for s in FUNNEL],
        "verdicts": dict(Counter("correct" if v.correct else "cannot_tell" if v.correct is None else "incorrect"
                                 for v in verdicts.values())),
        "problems": len(n_samples), "problems_with_kept_traces": len({r["problem_id"] for r in rows}),
        "voted_labels": sum(1 for lab, src in labels.values() if src == "voted"),
        "pass_rate_histogram": {name: sum(1 for r in pass_rates if f(r)) for name, f in bins},
        "mean_pass_rate": round(statistics.fmean(pass_rates), 4) if pass_rates else None,
        "kept_completion_tokens": ({"min": min(kept_tokens), "median": statistics.median(kept_tokens),
                                    "mean": round(statistics.fmean(kept_tokens), 1), "max": max(kept_tokens)}
                                   if kept_tokens else None),
        "decontamination_hits": contam_hits, "prompts": len(prompts),
        "per_teacher": _per_teacher(traces, verdicts, drop),
        "adaptive": _adaptive_saving(traces, len(n_samples)),
    }
    write_atomic(out / "filter_report.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "README.md", dataset_card(cfg, report))
    return {k: v for k, v in report.items() if k != "decontamination_hits"} | {
        "decontamination_hits": len(contam_hits)
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


def dataset_card(cfg: FilterConfig, r: dict) -> str:
    lines = ["# cotdistill filtered traces", "",
             f"Source generation: `{cfg.generate_dir}`. {r['kept']} of {r['traces']} traces kept "
             f"(acceptance {r['acceptance']:.1%}) over {r['problems_with_kept_traces']} of {r['problems']} problems.",
             "Files: `sft/` + `sft.jsonl` (TRL conversational `messages`), `prompts/` + `prompts.jsonl` "
             "(prompt-only), `verdicts.jsonl` (every trace's verdict and drop reason).", "",
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
    lines += ["", "## Kept completion length (tokens)", ""]
    k = r["kept_completion_tokens"]
    lines.append(
        "No trace kept." if k is None else f"min {k['min']}, median {k['median']}, mean {k['mean']}, max {k['max']}"
    )
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
