"""Stage 2: verify the teacher's traces, drop the bad ones (saying why), write a training set.

    cotdistill filter data/configs/filter_demo.yaml [key=value ...]

Reads a generation directory (``traces.jsonl``, ``problems.jsonl``). Every trace gets a verdict
and at most one drop reason, checked in funnel order: truncated, length, format, contaminated,
cannot_tell, incorrect, duplicate_exact, near_duplicate, over_per_problem_cap (length control:
``max_per_problem`` with ``select: shortest``, ``shortest_share`` for a mix, ``max_completion_tokens`` as a
budget). Problems without a
gold answer get a voted pseudo-label when enough samples agree. Output directory:
    sft/ + sft.jsonl          TRL conversational rows ("messages") with lineage and verdict
    prompts/ + prompts.jsonl  prompt-only view ("prompt") of every clean problem, for on-policy trainers
    verdicts.jsonl            every trace: verdict and drop reason
    filter_report.json, README.md (dataset card: funnel, pass rates, lengths, decontamination hits)
"""

from __future__ import annotations

import hashlib
import sys
from collections import defaultdict
from pathlib import Path

from cotdistill.adaptive import normalise, verifiable
from cotdistill.config import FilterConfig
from cotdistill.decontam import eval_index
from cotdistill.dedup import minhash
from cotdistill.errors import CotdistillError
from cotdistill.filter_outputs import Decisions, write
from cotdistill.loading import save_resolved
from cotdistill.problem_checks import consensus
from cotdistill.prompts import load_template
from cotdistill.records import Problem, Trace, Verdict
from cotdistill.store import read_records
from cotdistill.verify import compare
from cotdistill.verify_pool import verify_and_check


def _read(path: Path, cls, what: str) -> list:
    if not path.exists():
        hint = " (shard files? run `cotdistill merge` first)" if list(path.parent.glob("traces-*-of-*.jsonl")) else ""
        raise CotdistillError(f"{path}: {what} file not found{hint}; point generate_dir at a generation output")
    return read_records(path, cls, what)


def _vote(traces: list[Trace], verdicts: dict[str, Verdict], threshold: float) -> str | None:
    """The answer of at least ``threshold`` of the samples that finished with an answer (a cut-off or
    answer-less sample has no vote, and does not dilute the others)."""
    vote = consensus([verdicts[t.key].extracted if t.finish_reason == "stop" else None for t in traces])
    return vote.label if vote.voters and vote.agreement >= threshold else None


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
            labels[pid] = (p.answer, "tests" if p.answer is None and p.metadata.get("tests") else "gold")
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
    cfg: FilterConfig, traces, verdicts, why_malformed, index, problem_hit, contam_hits
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
        elif cfg.format_check and why_malformed[t.key]:
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


def _in_share(problem_id: str, share: float) -> bool:
    """Is this problem in the given share of all problems? A hash of the id, so the choice is the same in every run
    and for every config that differs elsewhere."""
    h = int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "little")
    return h / 2**64 < share


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
            m = minhash(norm, cfg.minhash_perm)
            if lsh is not None:
                if lsh.query(m):
                    drop[t.key] = "near_duplicate"
                    continue
                lsh.insert(t.key, m)
            sigs.append(m)
        kept.append(t)
    k = cfg.max_per_problem
    if cfg.shortest_share is not None and kept and _in_share(kept[0].problem_id, cfg.shortest_share):
        k = 1  # kept is shortest first
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
    index = eval_index(cfg.decontam.eval_sets, cfg.decontam.ngram)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out / "config.yaml")
    formats = ([(templates[t.template.name].spec.think, templates[t.template.name].spec.answer_format)
                for t in traces] if cfg.format_check else None)
    found, malformed = verify_and_check([(t.completion, problems[t.problem_id]) for t in traces], formats,
                                        cfg.verify_workers, cfg.verify_timeout_s, cfg.progress)  # hard per-item limit
    verdicts: dict[str, Verdict] = {t.key: v for t, v in zip(traces, found)}
    why_malformed = {t.key: why for t, why in zip(traces, malformed)}  # the format check's answer per trace
    by_problem: dict[str, list[Trace]] = defaultdict(list)
    for t in traces:
        by_problem[t.problem_id].append(t)
    labels = _pseudo_labels(cfg, problems, by_problem, verdicts)
    problem_hit, contam_hits = _contaminated_problems(index, problems)
    drop = _per_trace_drops(cfg, traces, verdicts, why_malformed, index, problem_hit, contam_hits)
    for ts in by_problem.values():
        _dedup_and_cap(cfg, ts, drop)
    fields = {pid: p.fields() for pid, p in problems.items()}
    summary = write(cfg, out, traces, Decisions(verdicts, labels, drop, contam_hits, problem_hit, fields))
    if summary["kept"] == 0:
        summary["warning"] = nothing_kept(summary)
        print(f"filter: warning: {summary['warning']}", file=sys.stderr)
    return summary


def nothing_kept(summary: dict) -> str:
    """Why a filter kept no trace, from its funnel: the steps that dropped most, and what to change."""
    steps = sorted((f for f in summary["funnel"] if f["dropped"]), key=lambda f: -f["dropped"])[:3]
    why = ", ".join(f"{f['stage']} {f['dropped']}" for f in steps) or "no traces to filter"
    return (f"kept 0 of {summary['traces']} traces ({why}); training on this folder will refuse it: see "
            f"filter_report.json's funnel, then loosen the step that drops them or check the teacher and gold answers")


