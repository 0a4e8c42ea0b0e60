"""The plan of a ``cotdistill run``: every stage as a record (name, kind, folder, config, dependencies,
fingerprint), derived from the run config alone, before anything runs. ``run.py`` executes it.

A stage's fingerprint hashes its own config (less where it writes and with how many machines) and the
fingerprints of the stages it reads, so a changed config is caught at the first stage it changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cotdistill.config import (
    FilterConfig,
    GenerateConfig,
    LogitsConfig,
    PTQStage,
    RunConfig,
    StudentFromTeacher,
    StudentInit,
    SynthesizeConfig,
    TrainConfig,
    VLLMTeacher,
)
from cotdistill.config.mutual import MutualOptions
from cotdistill.errors import CotdistillError

# the unfiltered baseline's filter settings: every trace, nothing dropped
UNFILTERED = {"require_correct": False, "require_stop": False, "format_check": False, "dedup_exact": False,
              "near_dup_threshold": None, "max_per_problem": None, "min_completion_tokens": 0,
              "max_completion_tokens": None, "shortest_share": None}
# options added after runs existed: unset, they leave a stage's fingerprint as it was (no refused resume)
UNSET_NOT_FINGERPRINTED = {"qat", "loss_chunk_tokens", "chunk_tokens", "contamination", "chat_template",
                           "use_liger_kernel", "shortest_share", "init_std",
                           "too_long"}
# where a stage writes, and on how many machines, is not what it computes
NOT_FINGERPRINTED = ("output_dir", "progress", "distributed")
# a student's training set -> the stage that makes it
DATA_STAGES = {"filtered": "filter", "unfiltered": "unfiltered", "answers_only": "answers_only"}


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Stage:
    name: str  # as on the command line: generate, train:<student>@<seed>, ...
    kind: str  # which runner executes it (run.RUNNERS)
    folder: Path
    config: Any
    deps: list[str]
    fingerprint: str


class StudentRun(NamedTuple):
    student: str  # the run config's student name
    seed: int
    data: str  # filtered | unfiltered | answers_only
    train: TrainConfig
    method: str  # what the results table calls it: the train method, "+ qat intN", or "ptq intN"


def seeds_of(cfg: RunConfig, s) -> list[int]:
    return list(s.seeds or cfg.seeds)


def data_stage(s) -> str:
    """The stage that makes a student's training set."""
    return f"filter:{s.name}" if s.filter is not None else DATA_STAGES[s.data]


def logits_stage(data: str) -> str:
    return "logits" if data == "filtered" else f"logits:{data}"


def _init_owner(s) -> str | None:
    """Whose starting model a student uses: its own (``student:`` given) or, None, the run's."""
    return s.name if s.student is not None else None


class Plan:
    """Stage names, folders, configs and fingerprints, in run order. Every student is one stage per seed,
    ``train:<name>@<seed>``, trained into students/<name>/seed<seed>."""

    def __init__(self, cfg: RunConfig):
        self.cfg, self.root = cfg, Path(cfg.output_dir)
        self.stages: dict[str, Stage] = {}
        self.inits: dict[tuple[str | None, int], str] = {}  # (student or None for the run's, seed) -> init stage
        self.students: dict[str, StudentRun] = {}  # by model name "<student>@<seed>"
        for s in cfg.students:
            if s.init_from is None:
                for seed in seeds_of(cfg, s):
                    self._add_init(_init_owner(s), s.student or cfg.student, seed)
        gen = self._add_data_stages()
        for data in sorted({s.data for s in cfg.students if s.train.get("method") == "logit_kd"}):
            self._add_logits(data, gen)
        for s in cfg.students:
            for seed in seeds_of(cfg, s):
                self._add_student(s, seed)
        self._add("eval", "eval", self.root / "eval", cfg.eval,
                  [n for n in self.stages if n.startswith("train:")] + ["generate"])
        self._add("report", "report", self.root / "report", None, ["eval"])

    @property
    def order(self) -> list[str]:
        return list(self.stages)

    @property
    def dirs(self) -> dict[str, Path]:
        return {n: s.folder for n, s in self.stages.items()}

    @property
    def configs(self) -> dict[str, Any]:
        return {n: s.config for n, s in self.stages.items()}

    @property
    def fps(self) -> dict[str, str]:
        return {n: s.fingerprint for n, s in self.stages.items()}

    def done(self, name: str) -> dict | None:
        marker = self.stages[name].folder / "stage.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def _add(self, name: str, kind: str, folder: Path, config, deps: list[str], *extra) -> None:
        if hasattr(config, "fingerprint_dump"):
            dump = config.fingerprint_dump()
        else:
            dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        if isinstance(dump, dict):
            dump = {k: v for k, v in dump.items()
                    if k not in NOT_FINGERPRINTED and not (k in UNSET_NOT_FINGERPRINTED and v is None)}
        fp = fingerprint(name, dump, [self.stages[d].fingerprint for d in deps], extra)
        self.stages[name] = Stage(name, kind, Path(folder), config, list(deps), fp)

    def _add_init(self, owner: str | None, spec, seed: int) -> None:
        """The stage that builds a starting model: fresh weights per seed (init is part of a seed's
        variance), or the teacher's own blocks (the same for every seed); none for a hub id / directory."""
        root = self.root / "student_init" / (owner or "")
        teacher = self.cfg.teacher.model_dump()
        if isinstance(spec, StudentInit):
            name = f"student_init{':' + owner if owner else ''}@{seed}"
            if name not in self.stages:
                spec = spec.model_copy(update={"seed": spec.seed + seed})
                tokenizer = teacher.get("tokenizer") or teacher["model"]
                self._add(name, "student_init", root / f"seed{seed}", spec, [], tokenizer)
        elif isinstance(spec, StudentFromTeacher):
            name = f"student_init:{owner or 'from_teacher'}"
            if name not in self.stages:
                self._add(name, "student_from_teacher", root / "from_teacher", spec, [], teacher["model"])
        else:
            return
        self.inits[(owner, seed)] = name

    def _add_data_stages(self) -> GenerateConfig:
        """synthesize (when set), generate, filter, and the baselines' training sets that some student uses."""
        cfg, root = self.cfg, self.root
        used = {s.data for s in cfg.students}
        source, gen_deps = {}, []
        if cfg.synthesize is not None:
            synth = SynthesizeConfig.model_validate({"teacher": cfg.teacher.model_dump(), **cfg.synthesize,
                                                     "output_dir": str(root / "synthesize")})
            self._add("synthesize", "synthesize", root / "synthesize", synth, [])
            source, gen_deps = {"source": {"kind": "hf", "path": str(root / "synthesize" / "problems.jsonl"),
                                           "fields": {"id": "id"}}}, ["synthesize"]
        gen = GenerateConfig.model_validate({**cfg.generate, **source, "teacher": cfg.teacher.model_dump(),
                                             "output_dir": str(root / "generate")})
        self._add("generate", "generate", root / "generate", gen, gen_deps)
        self._add("filter", "filter", root / "filter", FilterConfig.model_validate(
            {**cfg.filter, "generate_dir": gen.output_dir, "output_dir": str(root / "filter")}), ["generate"])
        if "unfiltered" in used:
            self._add("unfiltered", "filter", root / "unfiltered", FilterConfig.model_validate(
                {**cfg.filter, **UNFILTERED, "generate_dir": gen.output_dir, "output_dir": str(root / "unfiltered")}),
                ["generate"])
        for s in cfg.students:  # a student's own filter settings (length control, ...): a filter stage of its own
            if s.filter is not None:
                self._add(f"filter:{s.name}", "filter", root / f"filter_{s.name}", FilterConfig.model_validate(
                    {**cfg.filter, **s.filter, "generate_dir": gen.output_dir,
                     "output_dir": str(root / f"filter_{s.name}")}), ["generate"])
        if "answers_only" in used:
            self._add("answers_only", "answers_only", root / "answers_only", gen.prompt, ["generate"])
        return gen

    def _add_logits(self, data: str, gen: GenerateConfig) -> None:
        """The teacher's top-k for the kept traces that cached-logit KD trains on."""
        cfg, name = self.cfg, logits_stage(data)
        folder = self.root / name.replace(":", "_")
        in_pass = bool(gen.sampling.logprobs)
        teacher = ({"teacher": cfg.teacher.model, "tokenizer": getattr(cfg.teacher, "tokenizer", None)}
                   if isinstance(cfg.teacher, VLLMTeacher) else {})
        fields = {"mode": "in_pass" if in_pass else "score", "top_k": gen.sampling.logprobs or 8, **teacher,
                  **cfg.logits, "filter_dir": str(self.stages[DATA_STAGES[data]].folder), "output_dir": str(folder),
                  **({"logprobs": str(self.root / "generate" / "logprobs.jsonl")} if in_pass else {})}
        if "teacher" not in fields:
            raise CotdistillError(
                "logits: the teacher is an HTTP endpoint; scoring the kept traces needs its "
                "weights: set logits.teacher to its hub id or directory, or capture logprobs while "
                "generating (generate.sampling.logprobs=8)"
            )
        self._add(name, "logits", folder, LogitsConfig.model_validate(fields),
                  [DATA_STAGES[data]] + (["generate"] if in_pass else []))

    def _starting_model(self, s, seed: int) -> tuple[str | None, str]:
        """(the stage that makes the student's starting model or None, the model's path or hub id)."""
        if s.init_from is not None:
            return f"train:{s.init_from}@{seed}", str(
                Path(self.students[f"{s.init_from}@{seed}"].train.output_dir) / "final")
        start = self.inits.get((_init_owner(s), seed))
        return start, (str(self.stages[start].folder / "model") if start else (s.student or self.cfg.student))

    def _add_student(self, s, seed: int) -> None:
        cfg, name, key = self.cfg, f"train:{s.name}@{seed}", f"{s.name}@{seed}"
        start, student = self._starting_model(s, seed)
        data, method = data_stage(s), s.train.get("method", "sft")
        out = str(self.root / "students" / s.name / f"seed{seed}")
        if s.ptq is not None:  # quantize the init_from student's model; nothing is trained
            train_cfg = TrainConfig.model_validate({"student": student, "dataset_dir": str(self.stages[data].folder),
                                             "output_dir": out, "seed": seed})
            self._add(name, "ptq", Path(out), PTQStage(source=student, output_dir=out, bits=s.ptq.bits), [start])
            self.students[key] = StudentRun(s.name, seed, s.data, train_cfg, f"ptq int{s.ptq.bits}")
            return
        live = {}
        if s.teacher_from is not None:  # an earlier student of the same seed teaches this one
            live = {"teacher": str(Path(self.students[f"{s.teacher_from}@{seed}"].train.output_dir) / "final")}
        elif method in ("gkd", "distill", "kd") and isinstance(cfg.teacher, VLLMTeacher):
            live = {"teacher": cfg.teacher.model}
        elif method == "on_policy" and not s.train.get("teachers"):  # the run's teacher as it is: engine or server
            live = {"teacher": cfg.teacher.model_dump(mode="json")}
        logprobs = {"logprobs": str(self.stages[logits_stage(s.data)].folder)} if method == "logit_kd" else {}
        train, peer_stages = dict(s.train), []
        if s.peers_from is not None:  # peer k: the peers_from student of the k-th next seed of this student's seeds
            seeds = seeds_of(cfg, s)
            peers = (train.get("mutual") or {}).get("peers", MutualOptions.model_fields["peers"].default)
            others = [seeds[(seeds.index(seed) + k) % len(seeds)] for k in range(1, peers)]
            peer_stages = [f"train:{s.peers_from}@{o}" for o in others]
            train["mutual"] = {**(train.get("mutual") or {}), "peer_models": [
                str(Path(self.students[f"{s.peers_from}@{o}"].train.output_dir) / "final") for o in others]}
        train_cfg = TrainConfig.model_validate({"student": student, "dataset_dir": str(self.stages[data].folder),
                                         "output_dir": out, **logprobs, **live, **train, "seed": seed})
        deps = [data] + ([start] if start else []) + ([logits_stage(s.data)] if train_cfg.method == "logit_kd" else [])
        deps += [f"train:{s.teacher_from}@{seed}"] if s.teacher_from is not None else []
        deps += peer_stages
        self._add(name, "train", Path(train_cfg.output_dir), train_cfg, deps)
        label = f"{train_cfg.method} + qat int{train_cfg.qat.bits}" if train_cfg.qat else train_cfg.method
        self.students[key] = StudentRun(s.name, seed, s.data, train_cfg, label)
