"""The whole pipeline from one config: teacher traces -> filter -> the students' training sets ->
distillation -> evaluation -> report, ending in a table of how much of the teacher each student kept.

    cotdistill run data/configs/run_demo.yaml [--from STAGE] [--skip STAGE ...] [key.sub=value ...]

Stages, in order; each writes under ``output_dir`` and leaves ``stage.json`` there when it is done:

    student_init   a fresh student on the teacher's tokenizer (when ``student`` is a spec)  student_init/
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
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

from cotdistill.config import (
    EvalConfig,
    EvalModel,
    FilterConfig,
    GenerateConfig,
    LogitsConfig,
    PTQStage,
    RunConfig,
    StudentFromTeacher,
    StudentInit,
    TrainConfig,
    VLLMTeacher,
)
from cotdistill.env import machine, release_memory  # noqa: F401 (release_memory: re-exported)
from cotdistill.errors import CotdistillError
from cotdistill.loading import save_resolved
from cotdistill.store import write_atomic

UNFILTERED = {"require_correct": False, "require_stop": False, "format_check": False, "dedup_exact": False,
              "near_dup_threshold": None, "max_per_problem": None, "min_completion_tokens": 0,
              "max_completion_tokens": None}


def _log(msg: str) -> None:
    print(f"[cotdistill run] {msg}", file=sys.stderr, flush=True)


def _fp(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StudentRun(NamedTuple):
    student: str  # the run config's student name
    seed: int
    data: str  # filtered | unfiltered | answers_only
    train: TrainConfig
    method: str  # what the results table calls it: the train method, "+ qat intN", or "ptq intN"


def _init_owner(s) -> str | None:
    """Whose starting model a student uses: its own (``student:`` given) or, None, the run's."""
    return s.name if s.student is not None else None


def seeds_of(cfg: RunConfig, s) -> list[int]:
    return list(s.seeds or cfg.seeds)


# options added after runs existed: unset, they leave a stage's fingerprint as it was (no refused resume)
UNSET_NOT_FINGERPRINTED = {"qat", "loss_chunk_tokens", "chunk_tokens", "contamination", "chat_template"}


def logits_stage(data: str) -> str:
    return "logits" if data == "filtered" else f"logits:{data}"


class Plan:
    """Stage names, folders, configs and fingerprints, derived from the run config alone. Every
    student is one stage per seed, ``train:<name>@<seed>``, trained into students/<name>/seed<seed>."""

    def __init__(self, cfg: RunConfig):
        self.cfg, root = cfg, Path(cfg.output_dir)
        self.dirs: dict[str, Path] = {}
        self.configs: dict[str, object] = {}
        self.fps: dict[str, str] = {}
        used = {s.data for s in cfg.students}
        teacher = cfg.teacher.model_dump()
        self.inits: dict[tuple[str | None, int], str] = {}  # (student or None for the run's, seed) -> init stage
        for s in cfg.students:
            if s.init_from is None:
                for seed in seeds_of(cfg, s):
                    self._add_init(_init_owner(s), s.student or cfg.student, seed)
        gen = GenerateConfig.model_validate({**cfg.generate, "teacher": teacher, "output_dir": str(root / "generate")})
        self._add("generate", root / "generate", gen, [])
        datasets = {"filtered": "filter", "unfiltered": "unfiltered", "answers_only": "answers_only"}
        self._add("filter", root / "filter", FilterConfig.model_validate(
            {**cfg.filter, "generate_dir": gen.output_dir, "output_dir": str(root / "filter")}), ["generate"])
        if "unfiltered" in used:
            self._add("unfiltered", root / "unfiltered", FilterConfig.model_validate(
                {**cfg.filter, **UNFILTERED, "generate_dir": gen.output_dir, "output_dir": str(root / "unfiltered")}),
                ["generate"])
        if "answers_only" in used:
            self._add("answers_only", root / "answers_only", gen.prompt, ["generate"])
        logit_data = sorted({s.data for s in cfg.students if s.train.get("method") == "logit_kd"})
        for data in logit_data:  # the teacher's top-k for the kept traces that cached-logit KD trains on
            name = logits_stage(data)
            in_pass = bool(gen.sampling.logprobs)
            lc = {"mode": "in_pass" if in_pass else "score", "top_k": gen.sampling.logprobs or 8,
                  **({"teacher": cfg.teacher.model, "tokenizer": getattr(cfg.teacher, "tokenizer", None)}
                     if isinstance(cfg.teacher, VLLMTeacher) else {}),
                  **cfg.logits, "filter_dir": str(self.dirs[datasets[data]]),
                  "output_dir": str(root / name.replace(":", "_")),
                  **({"logprobs": str(root / "generate" / "logprobs.jsonl")} if in_pass else {})}
            if "teacher" not in lc:
                raise CotdistillError(
                    "logits: the teacher is an HTTP endpoint; scoring the kept traces needs its "
                    "weights: set logits.teacher to its hub id or directory, or capture logprobs while "
                    "generating (generate.sampling.logprobs=8)"
                )
            self._add(name, root / name.replace(":", "_"), LogitsConfig.model_validate(lc),
                      [datasets[data]] + (["generate"] if in_pass else []))
        self.students: dict[str, StudentRun] = {}  # by model name "<student>@<seed>"
        for s in cfg.students:
            for seed in seeds_of(cfg, s):
                if s.init_from is not None:
                    start = f"train:{s.init_from}@{seed}"
                    student = str(Path(self.students[f"{s.init_from}@{seed}"].train.output_dir) / "final")
                else:
                    start = self.inits.get((_init_owner(s), seed))
                    student = str(self.dirs[start] / "model") if start else (s.student or cfg.student)
                data = datasets[s.data]
                method = s.train.get("method", "sft")
                live = {}
                if s.teacher_from is not None:  # an earlier student of the same seed teaches this one
                    live = {"teacher": str(Path(self.students[f"{s.teacher_from}@{seed}"].train.output_dir) / "final")}
                elif method in ("gkd", "distill", "kd") and isinstance(cfg.teacher, VLLMTeacher):
                    live = {"teacher": cfg.teacher.model}
                if s.ptq is not None:  # quantize the init_from student's model; nothing is trained
                    out = str(root / "students" / s.name / f"seed{seed}")
                    tc = TrainConfig.model_validate({"student": student, "dataset_dir": str(self.dirs[data]),
                                                     "output_dir": out, "seed": seed})
                    self._add(f"train:{s.name}@{seed}", Path(out), PTQStage(source=student, output_dir=out,
                                                                            bits=s.ptq.bits), [start])
                    self.students[f"{s.name}@{seed}"] = StudentRun(s.name, seed, s.data, tc, f"ptq int{s.ptq.bits}")
                    continue
                tc = TrainConfig.model_validate({
                    "student": student, "dataset_dir": str(self.dirs[data]),
                    "output_dir": str(root / "students" / s.name / f"seed{seed}"),
                    **({"logprobs": str(self.dirs[logits_stage(s.data)])} if method == "logit_kd" else {}),
                    **live, **s.train, "seed": seed})
                deps = (
                    [data] + ([start] if start else []) + ([logits_stage(s.data)] if tc.method == "logit_kd" else [])
                )
                deps += [f"train:{s.teacher_from}@{seed}"] if s.teacher_from is not None else []
                self._add(f"train:{s.name}@{seed}", Path(tc.output_dir), tc, deps)
                label = f"{tc.method} + qat int{tc.qat.bits}" if tc.qat else tc.method
                self.students[f"{s.name}@{seed}"] = StudentRun(s.name, seed, s.data, tc, label)
        self._add("eval", root / "eval", cfg.eval, [n for n in self.dirs if n.startswith("train:")] + ["generate"])
        self._add("report", root / "report", None, ["eval"])

    def _add_init(self, owner: str | None, spec, seed: int) -> None:
        """The stage that builds a starting model: fresh weights per seed (init is part of a seed's
        variance), or the teacher's own blocks (the same for every seed); none for a hub id / directory."""
        root = Path(self.cfg.output_dir) / "student_init" / (owner or "")
        teacher = self.cfg.teacher.model_dump()
        if isinstance(spec, StudentInit):
            name = f"student_init{':' + owner if owner else ''}@{seed}"
            if name not in self.dirs:
                self._add(name, root / f"seed{seed}", spec.model_copy(update={"seed": spec.seed + seed}), [],
                          teacher.get("tokenizer") or teacher["model"])
        elif isinstance(spec, StudentFromTeacher):
            name = f"student_init:{owner or 'from_teacher'}"
            if name not in self.dirs:
                self._add(name, root / "from_teacher", spec, [], teacher["model"])
        else:
            return
        self.inits[(owner, seed)] = name

    def _add(self, name, folder, config, deps, *extra):
        self.dirs[name], self.configs[name] = folder, config
        dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        if isinstance(dump, dict):
            # where a stage writes, and on how many machines, is not what it computes
            dump = {k: v for k, v in dump.items() if k not in ("output_dir", "progress", "distributed")
                    and not (k in UNSET_NOT_FINGERPRINTED and v is None)}
        self.fps[name] = _fp(name, dump, [self.fps[d] for d in deps], extra)

    @property
    def order(self) -> list[str]:
        return list(self.dirs)

    def done(self, name: str) -> dict | None:
        marker = self.dirs[name] / "stage.json"
        return json.loads(marker.read_text()) if marker.exists() else None


def _answers_only(plan: Plan) -> dict:
    """One example per problem: the prompt the teacher saw, answered with the gold answer alone."""
    import datasets

    from cotdistill.prompts import load_template
    from cotdistill.sources import load_problem_file
    from cotdistill.verify import final_gold

    gen, out = plan.dirs["generate"], plan.dirs["answers_only"]
    prompt = plan.configs["answers_only"]
    tmpl = load_template(prompt.template)
    fmt = {"boxed": "\\boxed{{{}}}", "hashes": "#### {}", "final_answer": "Final answer: {}",
           "answer_is": "The answer is {}.", "choice": "The answer is ({})."}[tmpl.spec.answer_format]
    rows = []
    for p in load_problem_file(gen / "problems.jsonl"):
        if p.answer is None:
            continue
        answer = fmt.format(final_gold(p.answer))
        if tmpl.spec.think:
            answer = "<think>\n</think>\n\n" + answer
        msgs = [m.model_dump() for m in tmpl.render(p, prompt.variables)] + [{"role": "assistant", "content": answer}]
        rows.append({"messages": msgs, "problem_id": p.id, "sample_index": 0, "gold": p.answer})
    if not rows:
        raise CotdistillError(f"{gen / 'problems.jsonl'}: no problem has a gold answer; the answers-only "
                              f"baseline needs them (drop the answers_only student)")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "sft.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(out / "sft"))
    return {"examples": len(rows), "format": fmt}


def _eval_config(plan: Plan) -> EvalConfig:
    cfg = plan.cfg
    models = [EvalModel(name="teacher", role="teacher", serve=cfg.teacher)] if cfg.eval.teacher else []
    engine = cfg.teacher.model_dump() if isinstance(cfg.teacher, VLLMTeacher) else {
        "backend": "vllm", "max_model_len": 4096, "enforce_eager": True}
    if cfg.eval.gpu_memory_utilization is not None:
        engine["gpu_memory_utilization"] = cfg.eval.gpu_memory_utilization
    for name, sr in plan.students.items():
        final = Path(sr.train.output_dir) / "final"
        if not (final / "config.json").exists():
            _log(f"eval: student '{name}' has no trained model at {final} (stage skipped?); left out")
            continue
        role = "baseline" if sr.data != "filtered" else "student"
        models.append(EvalModel(name=name, role=role, serve=VLLMTeacher.model_validate(
            {**engine, "model": str(final), "tokenizer": None, "revision": None, "chat_template": None})))
    return EvalConfig(models=models, benchmarks=cfg.eval.benchmarks, sampling=cfg.eval.sampling, ks=cfg.eval.ks,
                      ci=cfg.eval.ci, train_data=[str(plan.dirs["filter"])], ngram=cfg.eval.ngram,
                      contamination=cfg.eval.contamination,
                      output_dir=str(plan.dirs["eval"]))


def distillation_table(plan: Plan, results: dict, outcomes: dict | None = None) -> dict:
    """Accuracy over seeds with intervals, retention, comparisons and targets on the target benchmark."""
    from cotdistill.compare import distillation_table as table
    from cotdistill.compare import load_outcomes

    bench = plan.cfg.benchmark or plan.cfg.eval.benchmarks[0].name
    if outcomes is None:
        outcomes = load_outcomes(plan.dirs["eval"], list(results["models"]), bench)
    students = {n: (sr.student, sr.seed, sr.data, sr.method) for n, sr in plan.students.items()}
    return table(students, results, outcomes, plan.cfg.targets, bench)


def check_held_out(plan: Plan) -> None:
    """A benchmark read from the very source the teacher answers (same file or hub set and split) is the training
    set: an error before anything runs, unless eval.contamination is warn (then the eval stage records it)."""
    def key(src):
        d = src.model_dump(mode="json")
        return json.dumps({k: v for k, v in d.items() if k not in ("limit", "fields")}, sort_keys=True)

    train = key(plan.configs["generate"].source)
    for b in plan.cfg.eval.benchmarks:
        if key(b.source) == train and plan.cfg.eval.contamination != "warn":
            raise CotdistillError(
                f"eval.benchmarks '{b.name}': the benchmark is the generate stage's own source "
                f"({getattr(b.source, 'path', None) or b.source.model_dump(mode='json')}): the students "
                f"would be scored on their training problems; evaluate on a held-out split, or set "
                f"eval.contamination: warn"
            )


def _run_stage(plan: Plan, name: str) -> dict:
    from cotdistill import evaluate
    from cotdistill import filter as filter_stage
    from cotdistill import generate, report, train
    from cotdistill.tiny import build_student

    c = plan.configs[name]
    if name.startswith("student_init") and isinstance(c, StudentFromTeacher):
        from cotdistill.student_init import from_teacher

        path = from_teacher(plan.cfg.teacher.model, plan.dirs[name] / "model", c.layers, c.every)
        return {
            "model": str(path),
            "layers": json.loads((path / "cotdistill_from_teacher.json").read_text())["layers"],
        }
    if name.startswith("student_init"):
        tok = plan.cfg.teacher.tokenizer or plan.cfg.teacher.model
        path = build_student(tok, plan.dirs[name] / "model", c.hidden, c.heads, c.layers, c.intermediate, c.seed)
        return {"model": str(path)}
    if name == "generate":
        return generate.run(c)
    if name in ("filter", "unfiltered"):
        return filter_stage.run(c)
    if name == "logits" or name.startswith("logits:"):
        from cotdistill import logits

        return logits.run(c)
    if name == "answers_only":
        return _answers_only(plan)
    if name.startswith("train:") and isinstance(c, PTQStage):
        from cotdistill.quant import ptq

        info = ptq(c.source, Path(c.output_dir) / "final", c.bits)
        summary = {"method": f"ptq int{c.bits}", "final_model": str(Path(c.output_dir) / "final"), **info}
        write_atomic(Path(c.output_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
    if name.startswith("train:"):
        try:
            return train.run(c)
        finally:
            release_memory()  # the eval engines start in this process next
    if name == "eval":
        ecfg = _eval_config(plan)
        evaluate.run(ecfg)
        results_path = Path(ecfg.output_dir) / "results.json"
        results = json.loads(results_path.read_text())
        results["distillation"] = distillation_table(plan, results)
        write_atomic(results_path, json.dumps(results, indent=2) + "\n")
        return {"results": str(results_path), "distillation": results["distillation"]}
    if name == "report":
        return {"report": str(report.write_report(plan.cfg.output_dir))}
    raise AssertionError(name)


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


def run(cfg: RunConfig, from_stage: str | None = None, skip: list[str] | tuple = ()) -> dict:
    plan = Plan(cfg)
    names = plan.order
    for s in [from_stage, *skip]:
        if s is not None and not any(_selects(s, n) for n in names):
            raise CotdistillError(f"unknown stage '{s}'; this config's stages are: {_listing(names)} (or 'train')")
    skip = {n for n in names for s in skip if _selects(s, n)}
    from cotdistill.train import check_dependencies

    for name, c in plan.configs.items():  # before hours of generation, not at the trainer's init
        if isinstance(c, TrainConfig) and name not in skip:
            check_dependencies(c, f"stage {name}")
    check_held_out(plan)
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, root / "config.yaml")
    redo = set()
    if from_stage is not None:
        first = min(i for i, n in enumerate(names) if _selects(from_stage, n))
        redo = set(names[first:]) - skip
    timings, summaries = {}, {}
    groups = {f"train:{k}": "train[ptq]" if r.method.startswith("ptq") else f"train[{r.method}]"
              for k, r in plan.students.items()}
    clock = _Clock([n for n in names if n not in skip and (n in redo or plan.done(n) is None)], groups)
    for name in names:
        folder = plan.dirs[name]
        if name in skip:
            _log(f"{name}: skipped (--skip)")
            continue
        if name in redo and folder.exists():
            _log(f"{name}: re-entered, removing {folder}")
            shutil.rmtree(folder)
        done = plan.done(name)
        if done is not None:
            if done["fingerprint"] != plan.fps[name]:
                raise CotdistillError(
                    f"{folder}: stage '{name}' was run with a different config (or different inputs); "
                    f"re-run it and what follows with --from {name}, or set another output_dir")
            _log(f"{name}: done earlier ({done['seconds']:.1f} s), skipped")
            timings[name], summaries[name] = done["seconds"], done["summary"]
            continue
        started = folder / "stage.started.json"  # a killed stage resumes only into the same config
        if started.exists() and json.loads(started.read_text())["fingerprint"] != plan.fps[name]:
            raise CotdistillError(
                f"{folder}: stage '{name}' was started (and not finished) with a different config (or different "
                f"inputs); re-run it and what follows with --from {name}, or set another output_dir")
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(started, json.dumps({"stage": name, "fingerprint": plan.fps[name]}) + "\n")
        _log(f"{name}: running -> {folder}")
        t0 = time.perf_counter()
        summary = _run_stage(plan, name)
        seconds = round(time.perf_counter() - t0, 2)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(
            folder / "stage.json",
            json.dumps(
                {"stage": name, "fingerprint": plan.fps[name], "seconds": seconds, "summary": summary},
                indent=2,
                default=str,
            )
            + "\n",
        )
        started.unlink(missing_ok=True)
        _log(f"{name}: done in {seconds:.1f} s; {clock.done(name, seconds)}")
        timings[name], summaries[name] = seconds, summary
    dist = (summaries.get("eval") or {}).get("distillation")
    out = {"output_dir": str(root), "stage_seconds": timings, "total_seconds": round(sum(timings.values()), 2),
           "distillation": dist, "report": (summaries.get("report") or {}).get("report"), "machine": machine()}
    write_atomic(root / "run.json", json.dumps(out, indent=2, default=str) + "\n")
    if dist and cfg.targets.strict and dist["all_targets_met"] is False:
        missed = [k for k, v in dist["targets"].items() if not v["met"]]
        raise CotdistillError(
            f"{root / 'eval' / 'results.json'}: targets missed: {', '.join(missed)} (targets.strict is on)"
        )
    return out
