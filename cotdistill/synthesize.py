"""Stage 0 (optional): the teacher writes the problems, then the problem filters keep the good ones.

    cotdistill synthesize data/configs/synthesize_demo.yaml [key.sub=value ...]
    python -c "from cotdistill.synthesize import run; ..."   # run(SynthesizeConfig) -> summary

Round 0 asks the teacher for new problems: from ``shots`` seed problems per request (few_shot, rotated so every
seed is shown), from a topic (topics), or from nothing but the chat template's opening of a user turn (magpie).
Each ``evolve`` round rewrites the problems the previous round kept ("harder", ...). Every round is a generate
run (cotdistill/generate.py: the same backends, Ray replicas, exactly-once resume) over "writing request"
problems. What the teacher wrote is checked in funnel order: truncated, too_short/too_long, pattern,
task_invalid (the task's own checker), duplicate_exact / near_duplicate (among all written problems and the
seeds), contaminated (n-gram overlap with the eval benchmarks); then, with ``consistency``, the teacher answers
every survivor n times (one more generate run): no_answer, inconsistent (agreement under the threshold),
disagrees_with_written, and with ``difficulty`` too_easy / too_hard (pass rate outside the band).
Output directory:
    round<k>/          the generate run of writing round k (requests.jsonl, traces.jsonl, ...)
    answers/           the consistency run (the teacher's answers to every candidate)
    candidates.jsonl   every written problem with its lineage and drop reason (null: kept)
    problems.jsonl     the kept problems (id, question, answer = the voted label, lineage columns): a generate source
    synth_report.json  funnel, throughput (problems kept per teacher-second), decontamination hits
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

from cotdistill import generate
from cotdistill.config import GenerateConfig
from cotdistill.config.synthesize import SynthesizeConfig
from cotdistill.decontam import NgramIndex, eval_index
from cotdistill.dedup import TextDedup
from cotdistill.errors import CotdistillError
from cotdistill.loading import check_same_config, save_resolved
from cotdistill.problem_checks import consensus, malformed, parse_written, true_answer
from cotdistill.records import Problem, Trace
from cotdistill.sampling import LazyTeacher
from cotdistill.sources import load_problems
from cotdistill.store import read_records, write_atomic
from cotdistill.teachers import Teacher
from cotdistill.verify import answer_key

WRITE_STEPS = ["truncated", "too_short", "too_long", "pattern", "task_invalid", "duplicate_exact",
               "near_duplicate", "contaminated"]
ANSWER_STEPS = ["no_answer", "inconsistent", "disagrees_with_written", "too_easy", "too_hard", "over_max_problems"]


def _first_requests(cfg: SynthesizeConfig, seeds: list[Problem]) -> list[Problem]:
    """Round 0's writing requests. few_shot: the seeds are shuffled (seeded) and dealt ``shots`` at a time,
    reshuffled whenever they run out, so every seed appears equally often."""
    out, where = [], f"synth:{cfg.mode}"
    if cfg.mode == "few_shot":
        rng, deck = random.Random(cfg.seed), []
        for i in range(cfg.requests):
            shown = []
            while len(shown) < min(cfg.shots, len(seeds)):
                if not deck:
                    deck = list(seeds)
                    rng.shuffle(deck)
                p = deck.pop()
                if p not in shown:
                    shown.append(p)
            out.append(Problem(id=f"r0-{i:05d}", question="\n".join(p.question for p in shown), source=where,
                               metadata={"seeds": ",".join(p.id for p in shown)}))
    elif cfg.mode == "topics":
        out = [Problem(id=f"r0-{i:05d}", question=cfg.topics[i % len(cfg.topics)], source=where,
                       metadata={"topic": cfg.topics[i % len(cfg.topics)]}) for i in range(cfg.requests)]
    else:
        out = [Problem(id=f"r0-{i:05d}", question="(open user turn)", source=where) for i in range(cfg.requests)]
    return out


def _teacher_seconds(folder: Path, summary: dict) -> float:
    """Teacher generation seconds of a generate run, summed over every resume of it (summary.json holds the last
    run's only), kept in ``teacher_seconds.json`` beside it."""
    path = folder / "teacher_seconds.json"
    total = (json.loads(path.read_text())["seconds"] if path.exists() else 0.0) + (summary.get("generation_s") or 0.0)
    write_atomic(path, json.dumps({"seconds": round(total, 3)}) + "\n")
    return total


def _write_round(cfg: SynthesizeConfig, k: int, requests: list[Problem], template: str, n: int, teacher) -> tuple:
    """One writing round as a generate run over the requests; returns (traces in request order, summary)."""
    folder = Path(cfg.output_dir) / f"round{k}"
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "requests.jsonl"
    write_atomic(src, "".join(json.dumps({"id": r.id, "question": r.question, **r.metadata}) + "\n"
                              for r in requests))
    gen = GenerateConfig.model_validate({
        "source": {"kind": "hf", "path": str(src), "fields": {"id": "id", "answer": None}},
        "prompt": {"template": template, "variables": cfg.variables()},
        "teacher": cfg.teacher.model_dump(), "sampling": {**cfg.sampling.model_dump(), "n": n,
                                                          "seed": cfg.sampling.seed + k},
        "output_dir": str(folder), "progress": cfg.progress})
    summary = generate.run(gen, teacher)  # an engine only if work is left
    summary["teacher_s"] = _teacher_seconds(folder, summary)
    rank = {r.id: i for i, r in enumerate(requests)}
    traces = sorted(read_records(folder / "traces.jsonl", Trace, "trace"),
                    key=lambda t: (rank[t.problem_id], t.sample_index))
    return traces, summary


def _screen(cfg, k: int, traces: list[Trace], requests: dict, dedup: TextDedup, index: NgramIndex | None,
            hits: list) -> list[dict]:
    """Candidates of one round, each with its lineage and the first write-time check it fails (None: passed)."""
    out = []
    for t in traces:
        question, written = parse_written(t.completion)
        req = requests[t.problem_id]
        row = {"id": f"syn-{t.problem_id}-s{t.sample_index}", "question": question, "written_answer": written,
               "synth_round": k, "synth_request": t.problem_id, "synth_sample": t.sample_index,
               "synth_template": f"{t.template.name}@{t.template.hash}", "synth_teacher": t.teacher.model,
               **{f"synth_{key}": v for key, v in req.metadata.items()}}
        reason = malformed(question, t.finish_reason, cfg.checks) if question else "too_short"
        if reason is None:
            reason = dedup.check(question)
        if reason is None and index is not None:
            found = index.hits(question)
            if found:
                reason = "contaminated"
                hits += [{"candidate": row["id"], "eval_set": s, "eval_id": i, "ngram": g} for s, i, g in found]
        if reason is None:
            dedup.add(row["id"], question)
            if cfg.checks.task is not None:
                row["true_answer"] = true_answer(question, cfg.checks)
        row["drop"] = reason
        out.append(row)
    return out


def _answer(cfg: SynthesizeConfig, rows: list[dict], teacher) -> dict:
    """The consistency run: the teacher answers every surviving candidate n times; sets label, agreement,
    pass rate and the answer-time drop reason on each row."""
    from cotdistill.verify_pool import verify_pairs

    c, folder = cfg.consistency, Path(cfg.output_dir) / "answers"
    alive = [r for r in rows if r["drop"] is None]
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "candidates.jsonl"
    write_atomic(src, "".join(json.dumps({"id": r["id"], "question": r["question"]}) + "\n" for r in alive))
    if not alive:
        return {"teacher_s": 0.0}
    gen = GenerateConfig.model_validate({
        "source": {"kind": "hf", "path": str(src), "fields": {"id": "id", "answer": None}},
        "prompt": {"template": c.template}, "teacher": cfg.teacher.model_dump(),
        "sampling": {**c.sampling.model_dump(), "n": c.n}, "output_dir": str(folder), "progress": cfg.progress})
    summary = generate.run(gen, teacher)  # an engine only if work is left
    summary["teacher_s"] = _teacher_seconds(folder, summary)
    traces = read_records(folder / "traces.jsonl", Trace, "trace")
    blank = {r["id"]: Problem(id=r["id"], question=r["question"], source="synth") for r in alive}
    found = verify_pairs([(t.completion, blank[t.problem_id]) for t in traces], progress=False)
    answers: dict[str, list] = {r["id"]: [None] * c.n for r in alive}
    for t, v in zip(traces, found):
        answers[t.problem_id][t.sample_index] = v.extracted if t.finish_reason == "stop" else None
    for r in alive:
        vote = consensus(answers[r["id"]], r["written_answer"])
        r.update(answer=vote.label, agreement=round(vote.agreement, 4), pass_rate=round(vote.pass_rate, 4))
        if vote.voters == 0 or vote.label is None:
            r["drop"] = "no_answer"
        elif r["written_answer"] is not None and c.enabled and vote.votes < vote.voters / 2:
            r["drop"] = "disagrees_with_written"
        elif c.enabled and vote.agreement < c.threshold:
            r["drop"] = "inconsistent"
        elif cfg.difficulty is not None and vote.pass_rate < cfg.difficulty.min_pass:
            r["drop"] = "too_hard"
        elif cfg.difficulty is not None and vote.pass_rate > cfg.difficulty.max_pass:
            r["drop"] = "too_easy"
    return summary


def _funnel(rows: list[dict], steps: list[str]) -> list[dict]:
    left, out, reasons = len(rows), [], Counter(r["drop"] for r in rows)
    for step in steps:
        out.append({"step": step, "dropped": reasons.get(step, 0), "left": left - reasons.get(step, 0)})
        left -= reasons.get(step, 0)
    return out


def _write_time_checks(cfg: SynthesizeConfig, seeds: list[Problem]) -> tuple[TextDedup, NgramIndex | None]:
    """The dedup memory (the seeds already in it) and the decontamination index of the eval benchmarks."""
    dedup = TextDedup(cfg.checks.dedup_exact, cfg.checks.near_dup_threshold, cfg.checks.minhash_perm)
    for p in seeds:
        dedup.add(f"seed:{p.id}", p.question)
    return dedup, eval_index(cfg.decontam.eval_sets, cfg.decontam.ngram)


def _rounds(cfg: SynthesizeConfig, seeds: list[Problem], teacher: LazyTeacher, hits: list) -> tuple[list, list, float]:
    """Round 0 and every evolve round (each rewrites what the round before kept): (candidates, rounds, seconds)."""
    dedup, index = _write_time_checks(cfg, seeds)
    rows, rounds, write_s = [], [], 0.0
    requests = _first_requests(cfg, seeds)
    plan = [(cfg.mode_template(), cfg.sampling.n)] + [(e.template, e.n) for e in cfg.evolve]
    for k, (template, n) in enumerate(plan):
        if not requests:
            break
        traces, summary = _write_round(cfg, k, requests, template, n, teacher)
        write_s += summary["teacher_s"]
        new = _screen(cfg, k, traces, {r.id: r for r in requests}, dedup, index, hits)
        rows += new
        passed = [x for x in new if x["drop"] is None]
        rounds.append({"round": k, "template": template, "requests": len(requests), "written": len(new),
                       "passed_checks": len(passed)})
        requests = [Problem(id=f"r{k + 1}-{j:05d}", question=r["question"], source="synth:evolve",
                            metadata={"parent": r["id"]}) for j, r in enumerate(passed)]
    return rows, rounds, write_s


def _report(cfg, rows, kept, rounds, hits, seconds: tuple[float, float], n_seeds: int, wall_s: float) -> dict:
    write_s, answer_s = seconds
    right = [r for r in kept if r.get("true_answer") is not None and r.get("answer") is not None]
    return {
        "mode": cfg.mode, "seeds": n_seeds, "rounds": rounds, "written": len(rows), "kept": len(kept),
        "funnel": _funnel(rows, WRITE_STEPS + ANSWER_STEPS), "decontamination_hits": hits,
        "writing_s": round(write_s, 3), "answering_s": round(answer_s, 3),
        "problems_kept_per_teacher_s": round(len(kept) / (write_s + answer_s), 3) if write_s + answer_s else None,
        # how often the voted label is the true answer (the task's checker; never used to select)
        "label_accuracy": (round(sum(answer_key(r["answer"]) == answer_key(r["true_answer"]) for r in right)
                                 / len(right), 4) if right else None),
        "pass_rate_histogram": dict(sorted(Counter(str(r.get("pass_rate")) for r in kept).items())),
        "wall_s": round(wall_s, 3), "problems": str(Path(cfg.output_dir) / "problems.jsonl"),
    }


def run(cfg: SynthesizeConfig, teacher: Teacher | None = None) -> dict:
    """Write, check and (with ``consistency``) answer problems; ``teacher``: reuse an already built backend (one
    vLLM engine across runs), by default one is built from ``cfg.teacher``. Returns synth_report.json's dict."""
    t0, out = time.perf_counter(), Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_same_config(out / "config.yaml", cfg, {"output_dir", "progress"}, "a synthesis")
    save_resolved(cfg, out / "config.yaml")
    seeds = load_problems(cfg.seeds) if cfg.seeds is not None else []
    if cfg.mode == "few_shot" and not seeds:
        raise CotdistillError(f"seeds ({cfg.seeds.path}): no seed problems; give at least one")
    # one backend for every round and the answers: the one given, or one built on first use and closed here
    engine, hits, answer_s = LazyTeacher(teacher, cfg.teacher, cfg.sampling), [], 0.0
    try:
        rows, rounds, write_s = _rounds(cfg, seeds, engine, hits)
        if cfg.consistency is not None:
            answer_s = _answer(cfg, rows, engine)["teacher_s"]
    finally:
        engine.close()
    kept = [r for r in rows if r["drop"] is None]
    for r in kept[cfg.max_problems:] if cfg.max_problems is not None else []:
        r["drop"] = "over_max_problems"
    kept = kept[:cfg.max_problems] if cfg.max_problems is not None else kept
    write_atomic(out / "candidates.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_atomic(out / "problems.jsonl", "".join(json.dumps(
        {"id": r["id"], "question": r["question"], "answer": r.get("answer", r["written_answer"]),
         **{k: v for k, v in r.items() if k not in ("id", "question", "answer", "drop")}}) + "\n" for r in kept))
    report = _report(cfg, rows, kept, rounds, hits, (write_s, answer_s), len(seeds), time.perf_counter() - t0)
    write_atomic(out / "synth_report.json", json.dumps(report, indent=2) + "\n")
    if not kept:
        lost = ", ".join(f"{f['step']} {f['dropped']}" for f in report["funnel"] if f["dropped"])
        raise CotdistillError(f"{out / 'synth_report.json'}: no written problem survived ({len(rows)} written; "
                              f"dropped: {lost or 'none written'}); write more (requests, sampling.n) or loosen "
                              f"the filter that dropped most")
    return report
