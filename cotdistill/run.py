"""The whole pipeline from one config: teacher traces -> filter -> the students' training sets ->
distillation -> evaluation -> report, ending in a table of how much of the teacher each student kept.

    cotdistill run data/configs/run_demo.yaml [--from STAGE] [--skip STAGE ...] [key.sub=value ...]

Stages, in order; each writes under ``output_dir`` and leaves ``stage.json`` there when it is done:

    student_init   a fresh student on the teacher's tokenizer (when ``student`` is a spec)  student_init/
    synthesize     the teacher writes the problems, the problem filters keep some (if set) synthesize/
    generate       teacher traces: n samples at temperature > 0, optional top-k logprobs   generate/
    filter         verified, deduplicated, decontaminated traces                            filter/
    unfiltered     every trace, nothing dropped (baseline; only if a student uses it)      unfiltered/
    answers_only   each problem's gold answer, no chain of thought (baseline, same)       answers_only/
    logits         teacher top-k of the kept traces, for logit_kd students (columnar)      logits/
    train:<name>   one per student                                                          students/<name>/
    eval           teacher and students on the held-out benchmarks                          eval/
    report         report.md with plots                                                     report/

A finished stage is skipped on the next run. Its fingerprint covers its own config and the
fingerprints of the stages it reads, so a changed config stops the run with the stage to re-enter.
``--from STAGE`` deletes that stage's output and everything after it and runs them again;
``--skip STAGE`` leaves a stage out (what follows then uses its saved output, if any).

The plan (stages, folders, configs, fingerprints) is cotdistill/plan.py; this module runs it: RUNNERS maps a
stage's kind to the function that executes it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from cotdistill import answers_only, evaluate
from cotdistill import filter as filter_stage
from cotdistill import generate, logits, report, student_init, synthesize, train
from cotdistill.compare import distillation_table as table
from cotdistill.compare import load_outcomes
from cotdistill.config import EvalConfig, EvalModel, RunConfig, VLLMTeacher
from cotdistill.env import machine, release_memory
from cotdistill.errors import CotdistillError
from cotdistill.loading import save_resolved
from cotdistill.plan import Plan, Stage
from cotdistill.results import EvalResults
from cotdistill.store import check_output_dir, write_atomic
from cotdistill.train import ptq


def _log(msg: str) -> None:
    print(f"[cotdistill run] {msg}", file=sys.stderr, flush=True)


def student_engine(cfg: RunConfig, model: str | Path) -> VLLMTeacher:
    """The vLLM engine block that serves a trained student directory: the teacher's engine settings (or CPU
    defaults when the teacher is a server) with the student's own model, tokenizer and template."""
    engine = cfg.teacher.model_dump() if isinstance(cfg.teacher, VLLMTeacher) else {
        "backend": "vllm", "max_model_len": 4096, "enforce_eager": True}
    if cfg.eval.gpu_memory_utilization is not None:
        engine["gpu_memory_utilization"] = cfg.eval.gpu_memory_utilization
    return VLLMTeacher.model_validate(
        {**engine, "model": str(model), "tokenizer": None, "revision": None, "chat_template": None})


def _eval_config(plan: Plan) -> EvalConfig:
    cfg = plan.cfg
    models = [EvalModel(name="teacher", role="teacher", serve=cfg.teacher)] if cfg.eval.teacher else []
    for name, student in plan.students.items():
        final = Path(student.train.output_dir) / "final"
        if not (final / "config.json").exists():
            _log(f"eval: student '{name}' has no trained model at {final} (stage skipped?); left out")
            continue
        role = "baseline" if student.data != "filtered" else "student"
        models.append(EvalModel(name=name, role=role, serve=student_engine(cfg, final)))
    return EvalConfig(models=models, benchmarks=cfg.eval.benchmarks, sampling=cfg.eval.sampling, ks=cfg.eval.ks,
                      ci=cfg.eval.ci, train_data=[str(plan.dirs["filter"])], ngram=cfg.eval.ngram,
                      contamination=cfg.eval.contamination,
                      output_dir=str(plan.dirs["eval"]))


def distillation_table(plan: Plan, results: EvalResults | dict, outcomes: dict | None = None) -> dict:
    """Accuracy over seeds with intervals, retention, comparisons and targets on the target benchmark."""
    results = EvalResults.of(results)
    bench = plan.cfg.benchmark or plan.cfg.eval.benchmarks[0].name
    if outcomes is None:
        outcomes = load_outcomes(plan.dirs["eval"], list(results.models), bench)
    students = {n: (sr.student, sr.seed, sr.data, sr.method) for n, sr in plan.students.items()}
    return table(students, results, outcomes, plan.cfg.targets, bench)


def check_held_out(plan: Plan) -> None:
    """A benchmark read from the very source the teacher answers (same file or hub set and split) is the training
    set: an error before anything runs, unless eval.contamination is warn (then the eval stage records it)."""
    def key(src):
        d = src.model_dump(mode="json")
        return json.dumps({k: v for k, v in d.items() if k not in ("limit", "fields")}, sort_keys=True)

    source = key(plan.stages["generate"].config.source)
    for b in plan.cfg.eval.benchmarks:
        if key(b.source) == source and plan.cfg.eval.contamination != "warn":
            raise CotdistillError(
                f"eval.benchmarks '{b.name}': the benchmark is the generate stage's own source "
                f"({getattr(b.source, 'path', None) or b.source.model_dump(mode='json')}): the students "
                f"would be scored on their training problems; evaluate on a held-out split, or set "
                f"eval.contamination: warn"
            )


def _train(plan: Plan, st: Stage) -> dict:
    try:
        return train.run(st.config)
    finally:
        release_memory()  # the eval engines start in this process next


def _eval(plan: Plan, st: Stage) -> dict:
    ecfg = _eval_config(plan)
    evaluate.run(ecfg)
    results_path = Path(ecfg.output_dir) / "results.json"
    results = EvalResults.load(results_path)
    results.distillation = distillation_table(plan, results)
    results.save(results_path)
    return {"results": str(results_path), "distillation": results.distillation}


# a stage's kind -> what runs it, given the plan and the stage record
RUNNERS = {
    "student_init": lambda plan, st: student_init.run(st.config, plan.cfg.teacher, st.folder),
    "student_from_teacher": lambda plan, st: student_init.run(st.config, plan.cfg.teacher, st.folder),
    "synthesize": lambda plan, st: synthesize.run(st.config),
    "generate": lambda plan, st: generate.run(st.config),
    "filter": lambda plan, st: filter_stage.run(st.config),
    "answers_only": lambda plan, st: answers_only.run(st.config, plan.stages["generate"].folder, st.folder),
    "logits": lambda plan, st: logits.run(st.config),
    "ptq": lambda plan, st: ptq.run(st.config),
    "train": _train,
    "eval": _eval,
    "report": lambda plan, st: {"report": str(report.write_report(plan.cfg.output_dir))},
}


def _run_stage(plan: Plan, name: str) -> dict:
    st = plan.stages[name]
    return RUNNERS[st.kind](plan, st)


class _Clock:
    """Progress of the run: stages done of those to run, elapsed time, and an ETA from the measured
    seconds of stages of the same kind (train:*@*, student_init@*, ...). ``groups`` puts a stage in a
    middle kind (train stages by method: a PTQ stage takes no time, a training one minutes)."""

    def __init__(self, todo: list[str], groups: dict[str, str] | None = None):
        self.todo, self.t0, self.seen, self.groups = list(todo), time.perf_counter(), {}, groups or {}

    def kinds(self, name: str) -> tuple[str, ...]:
        """The stage without its seed (train:gkd), its group if any (train[sft]), and its family (train)."""
        base, family = name.split("@")[0], name.split(":")[0].split("@")[0]
        return (base, self.groups[name], family) if name in self.groups else (base, family)

    def _guess(self, name: str) -> float | None:
        for k in self.kinds(name):  # the same student's other seeds first, then its group, then any student
            if k in self.seen:
                return sum(self.seen[k]) / len(self.seen[k])
        return None

    def done(self, name: str, seconds: float) -> str:
        for k in set(self.kinds(name)):
            self.seen.setdefault(k, []).append(seconds)
        if name in self.todo:
            self.todo.remove(name)
        guesses = [(n, self._guess(n)) for n in self.todo]
        eta = sum(g for _, g in guesses if g is not None)
        unknown = sorted({self.kinds(n)[-1] for n, g in guesses if g is None})
        fmt = lambda x: f"{int(x // 60)}m{int(x % 60):02d}s"
        left = (f"ETA {fmt(eta)}" + (f" + stages not yet timed ({', '.join(unknown)})" if unknown else "")
                if self.todo else "last stage")
        return f"{len(self.todo)} stage(s) left, elapsed {fmt(time.perf_counter() - self.t0)}, {left}"


def _listing(names: list[str]) -> str:
    """Stage names with their seeds folded: ``train:sft@0, train:sft@1`` -> ``train:sft@{0,1}``."""
    groups: dict[str, list[str]] = {}
    for n in names:
        base, _, seed = n.partition("@")
        groups.setdefault(base, []).append(seed)
    return ", ".join(b if s == [""] else f"{b}@{{{','.join(s)}}}" for b, s in groups.items())


def _selects(given: str, stage: str) -> bool:
    """A stage named on the command line: its own name, a student's name without the seed
    (train:<name> = every seed), student_init (every seed), or "train" for every student."""
    return (given == stage or stage.startswith(given + "@") or (given == "train" and stage.startswith("train:"))
            or (given == "student_init" and stage.startswith("student_init")))


def _stages_asked(plan: Plan, from_stage: str | None, skip) -> tuple[set[str], set[str]]:
    """(stages to re-run, stages to leave out) from --from and --skip; an unknown name is an error."""
    names = plan.order
    for s in [from_stage, *skip]:
        if s is not None and not any(_selects(s, n) for n in names):
            raise CotdistillError(f"unknown stage '{s}'; this config's stages are: {_listing(names)} (or 'train')")
    skipped = {n for n in names for s in skip if _selects(s, n)}
    redo = set()
    if from_stage is not None:
        first = min(i for i, n in enumerate(names) if _selects(from_stage, n))
        redo = set(names[first:]) - skipped
    return redo, skipped


def _preflight(plan: Plan, skipped: set[str]) -> None:
    """What fails before hours of generation rather than at a trainer's init: missing optional packages, and a
    benchmark that is the training source."""
    for st in plan.stages.values():
        if st.kind == "train" and st.name not in skipped:
            train.check_dependencies(st.config, f"stage {st.name}")
    check_held_out(plan)


def _run_one(plan: Plan, name: str, clock: _Clock) -> tuple[float, dict]:
    """Run one stage that is not done, after checking that a started-and-killed copy had the same config."""
    folder, fp = plan.stages[name].folder, plan.stages[name].fingerprint
    started = folder / "stage.started.json"  # a killed stage resumes only into the same config
    if started.exists() and json.loads(started.read_text())["fingerprint"] != fp:
        raise CotdistillError(
            f"{folder}: stage '{name}' was started (and not finished) with a different config (or different "
            f"inputs); re-run it and what follows with --from {name}, or set another output_dir")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(started, json.dumps({"stage": name, "fingerprint": fp}) + "\n")
    _log(f"{name}: running -> {folder}")
    t0 = time.perf_counter()
    summary = _run_stage(plan, name)
    seconds = round(time.perf_counter() - t0, 2)
    folder.mkdir(parents=True, exist_ok=True)
    marker = {"stage": name, "fingerprint": fp, "seconds": seconds, "summary": summary}
    write_atomic(folder / "stage.json", json.dumps(marker, indent=2, default=str) + "\n")
    started.unlink(missing_ok=True)
    _log(f"{name}: done in {seconds:.1f} s; {clock.done(name, seconds)}")
    return seconds, summary


def _finish(cfg: RunConfig, timings: dict, summaries: dict) -> dict:
    root = Path(cfg.output_dir)
    dist = (summaries.get("eval") or {}).get("distillation")
    out = {"output_dir": str(root), "stage_seconds": timings, "total_seconds": round(sum(timings.values()), 2),
           "distillation": dist, "report": (summaries.get("report") or {}).get("report"), "machine": machine()}
    write_atomic(root / "run.json", json.dumps(out, indent=2, default=str) + "\n")
    if dist and cfg.targets.strict and dist["all_targets_met"] is False:
        missed = [k if not v["met"] else f"{k} (worst seed)" for k, v in dist["targets"].items()
                  if not (v["met"] and v["met_on_worst_seed"] is not False)]
        raise CotdistillError(
            f"{root / 'eval' / 'results.json'}: targets missed: {', '.join(missed)} (targets.strict is on)"
        )
    return out


def run(cfg: RunConfig, from_stage: str | None = None, skip: list[str] | tuple = ()) -> dict:
    check_output_dir(cfg.output_dir)
    plan = Plan(cfg)
    redo, skipped = _stages_asked(plan, from_stage, skip)
    _preflight(plan, skipped)
    plan.root.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, plan.root / "config.yaml")
    timings, summaries = {}, {}
    groups = {f"train:{k}": "train[ptq]" if r.method.startswith("ptq") else f"train[{r.method}]"
              for k, r in plan.students.items()}
    clock = _Clock([n for n in plan.order if n not in skipped and (n in redo or plan.done(n) is None)], groups)
    for name in plan.order:
        folder = plan.stages[name].folder
        if name in skipped:
            _log(f"{name}: skipped (--skip)")
            continue
        if name in redo and folder.exists():
            _log(f"{name}: re-entered, removing {folder}")
            shutil.rmtree(folder)
        done = plan.done(name)
        if done is not None and done["fingerprint"] != plan.stages[name].fingerprint:
            raise CotdistillError(
                f"{folder}: stage '{name}' was run with a different config (or different inputs); "
                f"re-run it and what follows with --from {name}, or set another output_dir")
        if done is not None:
            _log(f"{name}: done earlier ({done['seconds']:.1f} s), skipped")
            timings[name], summaries[name] = done["seconds"], done["summary"]
            continue
        timings[name], summaries[name] = _run_one(plan, name, clock)
    return _finish(cfg, timings, summaries)
