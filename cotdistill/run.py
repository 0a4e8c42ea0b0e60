"""The whole pipeline from one config: teacher traces -> filter -> the students' training sets ->
distillation -> evaluation -> report, ending in a table of how much of the teacher each student kept.

    cotdistill run data/configs/run_demo.yaml [--from STAGE] [--skip STAGE ...] [key.sub=value ...]

Stages, in order; each writes under ``output_dir`` and leaves ``stage.json`` there when it is done:

    student_init   a fresh student on the teacher's tokenizer (when ``student`` is a spec)  student_init/
    generate       teacher traces: n samples at temperature > 0, optional top-k logprobs   generate/
    filter         verified, deduplicated, decontaminated traces                            filter/
    unfiltered     every trace, nothing dropped (baseline; only if a student uses it)      unfiltered/
    answers_only   each problem's gold answer, no chain of thought (baseline, same)       answers_only/
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

from cotdistill.config import (EvalConfig, EvalModel, FilterConfig, GenerateConfig, RunConfig, StudentInit,
                               TrainConfig, VLLMTeacher, save_resolved)
from cotdistill.errors import CotdistillError
from cotdistill.store import write_atomic

UNFILTERED = {"require_correct": False, "require_stop": False, "format_check": False, "dedup_exact": False,
              "near_dup_threshold": None, "max_per_problem": None, "min_completion_tokens": 0,
              "max_completion_tokens": None}


def _log(msg: str) -> None:
    print(f"[cotdistill run] {msg}", file=sys.stderr, flush=True)


def _fp(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Plan:
    """Stage names, folders, configs and fingerprints, derived from the run config alone."""

    def __init__(self, cfg: RunConfig):
        self.cfg, root = cfg, Path(cfg.output_dir)
        self.dirs: dict[str, Path] = {}
        self.configs: dict[str, object] = {}
        self.fps: dict[str, str] = {}
        used = {s.data for s in cfg.students}
        teacher = cfg.teacher.model_dump()
        if isinstance(cfg.student, StudentInit):
            self._add("student_init", root / "student_init", cfg.student, [], teacher.get("tokenizer") or teacher["model"])
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
        self.students: dict[str, tuple[str, TrainConfig]] = {}
        for s in cfg.students:
            init = "student_init" if "student_init" in self.dirs else None
            student = str(self.dirs[init] / "model") if init else cfg.student
            data = datasets[s.data]
            tc = TrainConfig.model_validate({
                "student": student, "dataset_dir": str(self.dirs[data]), "output_dir": str(root / "students" / s.name),
                **({"logprobs": str(self.dirs["generate"] / "logprobs.jsonl")} if s.train.get("method") == "logit_kd" else {}),
                **s.train})
            deps = [data] + ([init] if init else []) + (["generate"] if tc.method == "logit_kd" else [])
            self._add(f"train:{s.name}", Path(tc.output_dir), tc, deps)
            self.students[s.name] = (s.data, tc)
        self._add("eval", root / "eval", cfg.eval, [n for n in self.dirs if n.startswith("train:")] + ["generate"])
        self._add("report", root / "report", None, ["eval"])

    def _add(self, name, folder, config, deps, *extra):
        self.dirs[name], self.configs[name] = folder, config
        dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        if isinstance(dump, dict):  # where a stage writes is not what it computes
            dump = {k: v for k, v in dump.items() if k not in ("output_dir", "progress")}
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

    from cotdistill.generate import load_problem_file
    from cotdistill.prompts import load_template
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
    models = [EvalModel(name="teacher", role="teacher", teacher=cfg.teacher)] if cfg.eval.teacher else []
    engine = cfg.teacher.model_dump() if isinstance(cfg.teacher, VLLMTeacher) else {
        "backend": "vllm", "max_model_len": 4096, "enforce_eager": True}
    for name, (data, tc) in plan.students.items():
        final = Path(tc.output_dir) / "final"
        if not (final / "config.json").exists():
            _log(f"eval: student '{name}' has no trained model at {final} (stage skipped?); left out")
            continue
        role = "baseline" if data != "filtered" else "student"
        models.append(EvalModel(name=name, role=role, teacher=VLLMTeacher.model_validate(
            {**engine, "model": str(final), "tokenizer": None, "revision": None, "chat_template": None})))
    return EvalConfig(models=models, benchmarks=cfg.eval.benchmarks, sampling=cfg.eval.sampling, ks=cfg.eval.ks,
                      ci=cfg.eval.ci, train_data=[str(plan.dirs["filter"])], ngram=cfg.eval.ngram,
                      output_dir=str(plan.dirs["eval"]))


def distillation_table(plan: Plan, results: dict) -> dict:
    """Accuracy, interval and retention per model on the target benchmark, and the targets checked."""
    cfg, models = plan.cfg, results["models"]
    bench = cfg.benchmark or cfg.eval.benchmarks[0].name
    acc = {n: m["scores"][bench]["pass@1"] for n, m in models.items()}
    teacher = acc["teacher"]["value"] if "teacher" in acc else None
    rows = {}
    for n, m in models.items():
        data, tc = plan.students.get(n, (None, None))
        rows[n] = {"role": m["role"], "data": data, "method": tc.method if tc else None,
                   "accuracy": acc[n]["value"], "ci95": acc[n]["ci95"],
                   "retention": round(acc[n]["value"] / teacher, 4) if teacher else None}
    distilled = {n: r for n, r in rows.items() if r["data"] == "filtered"}
    answers = [r["accuracy"] for r in rows.values() if r["data"] == "answers_only"]
    best = max(distilled, key=lambda n: distilled[n]["accuracy"]) if distilled else None
    t = cfg.targets
    targets = {}
    if best and teacher:
        targets["retention"] = {"best": best, "value": rows[best]["retention"], "target": t.min_retention,
                                "met": rows[best]["retention"] >= t.min_retention}
    if best and answers:
        gain = round(rows[best]["accuracy"] - max(answers), 4)
        targets["gain_over_answers_only"] = {"value": gain, "target": t.min_gain_over_answers_only,
                                             "met": gain >= t.min_gain_over_answers_only - 1e-9}
    unf = {r["method"]: r["accuracy"] for r in rows.values() if r["data"] == "unfiltered"}
    same = [(n, r) for n, r in distilled.items() if r["method"] in unf]
    if same and t.filtered_at_least_unfiltered:
        n, r = max(same, key=lambda x: x[1]["accuracy"])
        targets["filtered_vs_unfiltered"] = {"filtered": n, "value": round(r["accuracy"] - unf[r["method"]], 4),
                                             "met": r["accuracy"] >= unf[r["method"]]}
    return {"benchmark": bench, "teacher_accuracy": teacher, "models": rows, "best_distilled": best,
            "targets": targets, "all_targets_met": all(x["met"] for x in targets.values()) if targets else None}


def _run_stage(plan: Plan, name: str) -> dict:
    from cotdistill import evaluate, filter as filter_stage, generate, report, train
    from cotdistill.tiny import build_student

    c = plan.configs[name]
    if name == "student_init":
        tok = plan.cfg.teacher.tokenizer or plan.cfg.teacher.model
        path = build_student(tok, plan.dirs[name] / "model", c.hidden, c.heads, c.layers, c.intermediate, c.seed)
        return {"model": str(path)}
    if name == "generate":
        return generate.run(c)
    if name in ("filter", "unfiltered"):
        return filter_stage.run(c)
    if name == "answers_only":
        return _answers_only(plan)
    if name.startswith("train:"):
        return train.run(c)
    if name == "eval":
        ecfg = _eval_config(plan)
        summary = evaluate.run(ecfg)
        results_path = Path(ecfg.output_dir) / "results.json"
        results = json.loads(results_path.read_text())
        results["distillation"] = distillation_table(plan, results)
        write_atomic(results_path, json.dumps(results, indent=2) + "\n")
        return {"results": str(results_path), "distillation": results["distillation"]}
    if name == "report":
        return {"report": str(report.write_report(plan.cfg.output_dir))}
    raise AssertionError(name)


def _selects(given: str, stage: str) -> bool:
    """A stage named on the command line: its own name, or "train" for every train:<name>."""
    return given == stage or (given == "train" and stage.startswith("train:"))


def run(cfg: RunConfig, from_stage: str | None = None, skip: list[str] | tuple = ()) -> dict:
    plan = Plan(cfg)
    names = plan.order
    for s in [from_stage, *skip]:
        if s is not None and not any(_selects(s, n) for n in names):
            raise CotdistillError(f"unknown stage '{s}'; this config's stages are: {', '.join(names)} (or 'train')")
    skip = {n for n in names for s in skip if _selects(s, n)}
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, root / "config.yaml")
    redo = set()
    if from_stage is not None:
        first = min(i for i, n in enumerate(names) if _selects(from_stage, n))
        redo = set(names[first:]) - skip
    timings, summaries = {}, {}
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
        _log(f"{name}: running -> {folder}")
        t0 = time.perf_counter()
        summary = _run_stage(plan, name)
        seconds = round(time.perf_counter() - t0, 2)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "stage.json", json.dumps({"stage": name, "fingerprint": plan.fps[name],
                                                        "seconds": seconds, "summary": summary}, indent=2, default=str) + "\n")
        _log(f"{name}: done in {seconds:.1f} s")
        timings[name], summaries[name] = seconds, summary
    dist = (summaries.get("eval") or {}).get("distillation")
    out = {"output_dir": str(root), "stage_seconds": timings, "total_seconds": round(sum(timings.values()), 2),
           "distillation": dist, "report": (summaries.get("report") or {}).get("report")}
    write_atomic(root / "run.json", json.dumps(out, indent=2, default=str) + "\n")
    if dist and cfg.targets.strict and dist["all_targets_met"] is False:
        missed = [k for k, v in dist["targets"].items() if not v["met"]]
        raise CotdistillError(f"{root / 'eval' / 'results.json'}: targets missed: {', '.join(missed)} (targets.strict is on)")
    return out
