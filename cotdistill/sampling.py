"""The sampling engine that the generate and eval stages share: render the problems of one shard through a
prompt template, ask the teacher (or a student served like one) for the samples not yet on disk, and append
them as Trace records, resumable at any point (a leaf module: it imports no stage).

    summary = generate_shard(cfg)        # cfg: GenerateConfig; generate.run adds the Ray dispatch

Resume: keys (problem id, sample index) already in traces.jsonl are skipped; a torn last line is repaired;
a folder holding another config's (or another template version's) traces is refused.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from cotdistill.adaptive import Seen, next_samples, normalise, verifiable
from cotdistill.artifacts import output_paths, shard_of, trace_summary
from cotdistill.config import GenerateConfig, VLLMTeacher
from cotdistill.context import describe, over_context, refuse
from cotdistill.env import machine
from cotdistill.errors import CotdistillError
from cotdistill.loading import check_same_config, load_config, save_resolved
from cotdistill.prompts import PromptTemplate, load_template
from cotdistill.records import Problem, SamplingInfo, TokenLogprobs, Trace, trace_key
from cotdistill.sources import load_problems
from cotdistill.store import (
    AppendWriter,
    iter_jsonl,
    keep_only_keys,
    read_keys,
    read_records,
    repair_tail,
    write_atomic,
)
from cotdistill.teachers import Job, Teacher, derive_seed, make_teacher
from cotdistill.teachers.vllm_offline import check_servable
from cotdistill.verify_pool import verify_pairs


@dataclass
class Totals:
    """What this run added (resumed traces are not counted)."""

    written: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_s: float = 0.0


class LazyTeacher:
    """A teacher backend built on first use (none when every trace is on disk), closed if built here. ``given``:
    a backend already built, or the LazyTeacher of a caller running several generate runs (synthesis rounds),
    which builds its engine only if one of them has work left and closes it itself."""

    def __init__(self, given: Teacher | LazyTeacher | None, tcfg, sampling):
        self.given, self.tcfg, self.sampling, self.teacher = given, tcfg, sampling, given

    def get(self) -> Teacher:
        if isinstance(self.given, LazyTeacher):
            return self.given.get()
        if self.teacher is None:
            self.teacher = make_teacher(self.tcfg, seed=self.sampling.seed, need_logprobs=bool(self.sampling.logprobs))
        if self.sampling.logprobs and not self.teacher.info.tokenizer_hash:
            raise CotdistillError("teacher.tokenizer: logprob capture needs the teacher tokenizer's identity")
        return self.teacher

    def close(self) -> None:
        if self.given is None and self.teacher is not None:
            self.teacher.close()
            self.teacher = None


@dataclass
class Shard:
    """One shard's work: its config, files, problems and their rendered prompts, and the running counts."""

    cfg: GenerateConfig
    paths: dict[str, Path]
    template: PromptTemplate
    mine: list[Problem]
    rendered: dict[str, list]
    sampling_info: SamplingInfo
    bar: tqdm | None = None
    totals: Totals = field(default_factory=Totals)
    skipped: int = 0  # problems whose prompt cannot fit the teacher's context (skipped.jsonl)


def moved_source(cfg: GenerateConfig, saved_cfg: GenerateConfig, saved: list[Problem],
                 problems: list[Problem]) -> bool:
    """The saved run read these very problems (``saved``: ids, questions, answers, metadata; their ``source`` label
    names the path) from a source that differs from ``cfg.source`` in its path only: the file was moved, or the run
    folder copied next to a copy of it."""
    old, new = saved_cfg.source.model_dump(mode="json"), cfg.source.model_dump(mode="json")
    if old == new or {**old, "path": None} != {**new, "path": None}:
        return False
    return [_content(p) for p in saved] == [_content(p) for p in problems]


def _content(p: Problem) -> dict:
    return p.model_dump(mode="json", exclude={"source"})


def check_same_problems(paths: dict[str, Path], cfg: GenerateConfig, saved: list[Problem],
                        problems: list[Problem]) -> None:
    """The saved run's problems (``saved``) must all be in ``problems`` unchanged: a problems file edited in place
    (same path, same config) would otherwise leave traces of the old questions beside the new ones. Added problems
    are fine: resuming generates their traces."""
    now = {p.id: p for p in problems}
    for old in saved:
        new = now.get(old.id)
        if new is None or _content(new) != _content(old):
            what = "is gone" if new is None else "changed (" + ", ".join(
                k for k, v in _content(new).items() if v != _content(old).get(k)) + ")"
            raise CotdistillError(
                f"{cfg.source.model_dump().get('path') or 'source'}: problem '{old.id}' {what} since "
                f"{paths['traces']} was written from it; use a new output_dir, or restore the problem to resume")


def check_same_run(paths: dict[str, Path], cfg: GenerateConfig, template_hash: str | None = None,
                   problems: list[Problem] | None = None) -> None:
    """Resuming into a directory made by a different config, with an edited template of the same name, or with
    problems edited since, would mix two runs' traces. A source that only moved (the same ``problems``) does not."""
    if not paths["config"].exists() or not paths["traces"].exists():
        return
    first = next((obj for _, obj in iter_jsonl(paths["traces"])), None)
    old_hash = (first or {}).get("template", {}).get("hash")
    if template_hash and old_hash and old_hash != template_hash:
        raise CotdistillError(
            f"{paths['traces']}: its traces were rendered with another version of template "
            f"'{cfg.prompt.template}' (hash {old_hash}, now {template_hash}); use a new output_dir, or restore the "
            f"template to resume")
    # the problems the saved run read, once: to tell a moved source, then to check none was edited since
    saved = None
    if problems is not None and paths["problems"].exists():
        saved = read_records(paths["problems"], Problem, "problem")
    moved = saved is not None and moved_source(cfg, load_config(GenerateConfig, paths["config"]), saved, problems)
    check_same_config(paths["config"], cfg, {"output_dir", "progress", "flush_every", "too_long",
                                             *(["source"] if moved else [])})
    if saved is not None:
        check_same_problems(paths, cfg, saved, problems)


def _prepare(cfg: GenerateConfig) -> tuple[Shard, list[Problem], set[str]]:
    """Everything checked before a teacher starts: the template renders every problem, the folder holds this
    run (or nothing), the resolved config and the problems are written; returns the keys already on disk."""
    out = Path(cfg.output_dir)
    paths = output_paths(out, cfg.shard)
    template = load_template(cfg.prompt.template)
    problems = load_problems(cfg.source)
    mine = [p for p in problems if shard_of(p.id, cfg.shard.count) == cfg.shard.index]
    rendered = {p.id: template.render(p, cfg.prompt.variables) for p in mine}
    for i, t in enumerate([cfg.teacher, *cfg.extra_teachers]):  # a missing or unfetchable model: before any write
        if isinstance(t, VLLMTeacher):
            check_servable(t, "teacher" if i == 0 else f"extra_teachers.{i - 1}")
    over = over_context([cfg.teacher, *cfg.extra_teachers], rendered)  # before anything is written
    if over and cfg.too_long == "refuse":
        refuse(over)
    mine = [p for p in mine if p.id not in over]
    rendered = {pid: m for pid, m in rendered.items() if pid not in over}
    out.mkdir(parents=True, exist_ok=True)
    check_same_run(paths, cfg, template.hash, problems)
    save_resolved(cfg, paths["config"])
    write_atomic(paths["problems"], "".join(p.model_dump_json() + "\n" for p in problems))
    if over:
        write_atomic(paths["skipped"], "".join(json.dumps({"problem_id": pid, "reason": "too_long", **v}) + "\n"
                                               for pid, v in over.items()))
        print(f"generate: warning: skipped {len(over)} problem(s): {describe(over)}; listed in {paths['skipped']}",
              file=sys.stderr)
    else:
        paths["skipped"].unlink(missing_ok=True)
    repair_tail(paths["traces"])
    done = read_keys(paths["traces"])
    if cfg.sampling.logprobs:
        repair_tail(paths["logprobs"])
        keep_only_keys(paths["logprobs"], done)  # drop side records whose trace was never written
    s = cfg.sampling
    info = SamplingInfo(n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
                        stop=list(s.stop), logprobs=s.logprobs, until_verified=s.until_verified)
    return Shard(cfg, paths, template, mine, rendered, info, skipped=len(over)), problems, done


def generate_shard(cfg: GenerateConfig, teacher: Teacher | LazyTeacher | None = None) -> dict:
    """Generate the missing traces of ``cfg.shard``; ``teacher``: reuse an already built backend (e.g. one vLLM
    engine across several runs), by default one is built from ``cfg.teacher``. Returns summary.json's dict."""
    t0 = time.perf_counter()
    shard, _, done = _prepare(cfg)
    s = cfg.sampling
    teachers = [cfg.teacher, *cfg.extra_teachers]  # teacher k owns sample indices k*n .. k*n + n - 1
    expected = len(shard.mine) * s.n * len(teachers)  # adaptive sampling: the budget
    adaptive = None
    shard.bar = tqdm(total=expected, initial=len(done), unit="trace", disable=not cfg.progress, dynamic_ncols=True,
                     desc="generate" + (" (adaptive)" if s.until_verified else ""))
    try:
        for k, tcfg in enumerate(teachers):
            engine = LazyTeacher(teacher if k == 0 else None, tcfg, s)
            try:
                if s.until_verified:
                    adaptive = _adaptive(shard, engine)
                    continue
                jobs = [Job(p.id, i, shard.rendered[p.id], derive_seed(s.seed, p.id, i))
                        for p in shard.mine for i in range(k * s.n, (k + 1) * s.n) if trace_key(p.id, i) not in done]
                if len(teachers) > 1:
                    shard.bar.set_description(f"generate (teacher {k + 1}/{len(teachers)})")
                _write_batch(shard, jobs, engine)
            finally:
                engine.close()
    finally:
        shard.bar.close()
    return _summary(shard, expected, len(done), len(teachers), adaptive, time.perf_counter() - t0)


def _summary(shard: Shard, expected: int, resumed: int, teachers: int, adaptive: dict | None, wall_s: float) -> dict:
    summary = trace_summary(shard.paths["traces"], len(shard.mine), expected)
    t = shard.totals
    summary.update({
        "shard": shard.cfg.shard.model_dump(), "resumed_from": resumed, "written_this_run": t.written,
        "this_run_prompt_tokens": t.prompt_tokens, "this_run_completion_tokens": t.completion_tokens,
        "generation_s": round(t.generation_s, 3), "wall_s": round(wall_s, 3),
        "completion_tokens_per_s": (round(t.completion_tokens / t.generation_s, 1)
                                    if t.written and t.generation_s > 0 else None),
        "complete": adaptive["complete"] if adaptive else summary["traces"] == expected, "teachers": teachers,
        "skipped_too_long": shard.skipped,
        "machine": machine(),
    })
    if adaptive:
        summary["adaptive"] = {k: v for k, v in adaptive.items() if k != "complete"}
    write_atomic(shard.paths["summary"], json.dumps(summary, indent=2) + "\n")
    return summary


def _adaptive(shard: Shard, engine: LazyTeacher) -> dict:
    """Rounds of sampling until every problem has k distinct correct traces or its budget is spent
    (cotdistill/adaptive.py). Resumes from the traces on disk, which are verified again."""
    cfg, mine = shard.cfg, shard.mine
    s, by_id = cfg.sampling, {p.id: p for p in mine}
    seen: dict[str, dict[int, Seen]] = {p.id: {} for p in mine}

    def record(traces: list[Trace]) -> None:
        check = [t for t in traces if verifiable(by_id[t.problem_id])]
        verdicts = dict(zip((t.key for t in check), verify_pairs(
            [(t.completion, by_id[t.problem_id]) for t in check], cfg.verify_workers, cfg.verify_timeout_s)))
        for t in traces:
            ok = t.finish_reason == "stop" and t.key in verdicts and verdicts[t.key].correct is True
            seen[t.problem_id][t.sample_index] = Seen(ok, normalise(t.completion))

    if shard.paths["traces"].exists():
        record([t for t in read_records(shard.paths["traces"], Trace, "trace") if t.problem_id in by_id])
    rounds = 0
    while True:
        jobs, round_of = [], {}
        for p in mine:
            idx, rnd = next_samples(s.until_verified, s.n, seen[p.id], verifiable(p))
            for i in idx:
                jobs.append(Job(p.id, i, shard.rendered[p.id], derive_seed(s.seed, p.id, i)))
                round_of[trace_key(p.id, i)] = rnd
        if not jobs:
            break
        rounds += 1
        shard.bar.set_description(f"generate (adaptive, round {max(round_of.values())})")
        record(_write_batch(shard, jobs, engine, round_of))
    done_k = sum(1 for p in mine if len({x.text for x in seen[p.id].values() if x.correct}) >= s.until_verified)
    generated = sum(len(v) for v in seen.values())
    return {"until_verified": s.until_verified, "budget_traces": len(mine) * s.n, "traces": generated,
            "saved_share": round(1 - generated / max(1, len(mine) * s.n), 4), "problems_with_k_correct": done_k,
            "unverifiable_problems": sum(1 for p in mine if not verifiable(p)), "rounds_this_run": rounds,
            "complete": True}


def _write_batch(shard: Shard, jobs: list[Job], engine: LazyTeacher, round_of: dict | None = None) -> list[Trace]:
    """One batch of jobs, appended as they complete (flushed every ``flush_every`` traces or 2 s, a trace's
    logprobs before it); adds to ``shard.totals``; returns the traces written."""
    cfg, totals, out = shard.cfg, shard.totals, []
    if not jobs:
        return out
    teacher = engine.get()
    t_gen, compl0 = time.perf_counter(), totals.completion_tokens
    traces_w = AppendWriter(shard.paths["traces"])
    lp_w = AppendWriter(shard.paths["logprobs"]) if cfg.sampling.logprobs else None
    last_flush = time.monotonic()
    try:
        for job, res in teacher.generate(jobs, cfg.sampling):
            if lp_w is not None:
                lp = TokenLogprobs.from_arrays(job.problem_id, job.sample_index,
                                               teacher.info.tokenizer_hash, **res.logprobs)
                lp_w.add(lp.model_dump_json())
            out.append(_trace(shard, job, res, teacher, round_of))
            traces_w.add(out[-1].model_dump_json())
            totals.written += 1
            totals.prompt_tokens += res.prompt_tokens
            totals.completion_tokens += res.completion_tokens
            if len(traces_w) >= cfg.flush_every or time.monotonic() - last_flush > 2.0:
                if lp_w is not None:
                    lp_w.flush()  # side record first: a trace on disk always has its logprobs
                traces_w.flush()
                last_flush = time.monotonic()
            shard.bar.update(1)
            rate = (totals.completion_tokens - compl0) / max(time.perf_counter() - t_gen, 1e-9)
            shard.bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
    finally:
        if lp_w is not None:
            lp_w.close()
        traces_w.close()
        totals.generation_s += time.perf_counter() - t_gen
    return out


def _trace(shard: Shard, job: Job, res, teacher: Teacher, round_of: dict | None) -> Trace:
    return Trace(problem_id=job.problem_id, sample_index=job.sample_index, messages=job.messages,
                 completion=res.completion, finish_reason=res.finish_reason, prompt_tokens=res.prompt_tokens,
                 completion_tokens=res.completion_tokens, teacher=teacher.info, template=shard.template.info,
                 sampling=shard.sampling_info, seed=job.seed,
                 round=round_of[trace_key(job.problem_id, job.sample_index)] if round_of else None)
