"""The whole pipeline's config (cotdistill/run.py): the teacher, the students and their starting models, the
stage blocks (embedded as fields of each stage's config), the eval, the size sweep and the targets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, ValidationError, model_validator

from cotdistill.config.common import SamplingConfig, StrictModel, TeacherConfig, VLLMTeacher
from cotdistill.config.eval import EvalBenchmark
from cotdistill.config.filter import FilterConfig
from cotdistill.config.generate import GenerateConfig
from cotdistill.config.mutual import MutualOptions
from cotdistill.config.synthesize import SynthesizeConfig
from cotdistill.config.train import METHOD_CONFIGS, QATConfig, TrainConfig
from cotdistill.loading import format_validation_error
from cotdistill.tiny import head_size_problem


class StudentInit(StrictModel):
    """A fresh, randomly initialised Llama that shares the teacher's tokenizer (the embedded run)."""

    hidden: int = Field(default=128, ge=32)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1, description="hidden / heads must be a head size vLLM supports (32, 64, ...)")
    intermediate: int | None = Field(default=None, ge=1, description="None: 2 * hidden")
    seed: int = 0
    init_std: float | None = Field(
        default=None, gt=0, le=1,
        description="std of the random weights; None: transformers' 0.02, sized for wide models. Narrow students "
                    "learn sooner from about 1/sqrt(hidden) (0.08 at hidden 128: docs in the demo's config)")

    @model_validator(mode="after")
    def _servable(self):
        problem = head_size_problem(self.hidden, self.heads)
        if problem:
            raise ValueError(problem)
        return self


class StudentFromTeacher(StrictModel):
    """A student made of the teacher's own blocks (DistilBERT): embeddings, head and every ``every``-th
    block, or the blocks listed (0-based). Its width is the teacher's."""

    from_teacher: Literal[True] = Field(description="set to true")
    layers: list[int] | None = Field(default=None, min_length=1, description="teacher blocks to keep, 0-based")
    every: int = Field(default=2, ge=1, description="keep blocks 0, every, 2*every, ... (when layers is not given)")


def _student_kind(v) -> str:
    if isinstance(v, str):
        return "=path"
    if isinstance(v, StudentFromTeacher) or (isinstance(v, dict) and "from_teacher" in v):
        return "=from_teacher"
    return "=fresh"


# a hub id / directory, a fresh model on the teacher's tokenizer, or the teacher's own blocks; the tag
# picks the branch, so an error names the fields of the one that was meant (tags starting with "=" are
# left out of error locations)
StudentSpec = Annotated[Annotated[str, Tag("=path")] | Annotated[StudentInit, Tag("=fresh")]
                        | Annotated[StudentFromTeacher, Tag("=from_teacher")], Discriminator(_student_kind)]


class SweepConfig(StrictModel):
    """Students of several sizes from one list: every listed student (or those named in ``students``) is
    repeated at every size, as ``<name>-<size label>`` (h<hidden>l<layers>, or teacher-<blocks>)."""

    sizes: list[StudentSpec] = Field(min_length=1, description="student architectures: fresh {hidden, layers, "
                                                               "heads}, {from_teacher: true, ...}, or a directory")
    students: list[str] | None = Field(default=None, min_length=1, description="the students repeated at every "
                                                                               "size (default: all of them)")
    train: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per size label, train fields that override the swept students' own "
                                          "(e.g. {h256l2: {learning_rate: 1.0e-3}}: wider models want a smaller "
                                          "step); "
                                          "per swept student at one size, the same under its name "
                                          "(e.g. {gkd-h256l2: {learning_rate: 2.5e-4}}), applied after the size's")

    @model_validator(mode="after")
    def _known_labels(self):
        labels = [size_label(s) for s in self.sizes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"sizes: two sizes share a label ({labels}); give each size once")
        unknown = [k for k in self.train if k not in labels and not any(k.endswith(f"-{b}") for b in labels)]
        if unknown:
            raise ValueError(f"train: {unknown} name no size of this sweep; use one of {labels} "
                             f"(or <student>-<size> for one swept student)")
        return self


def size_label(spec) -> str:
    if isinstance(spec, str):
        return "".join(c if c.isalnum() else "_" for c in Path(spec).name)
    if isinstance(spec, StudentFromTeacher):
        return "teacher-" + ("b" + "_".join(map(str, spec.layers)) if spec.layers else f"every{spec.every}")
    return f"h{spec.hidden}l{spec.layers}"


class RunStudent(StrictModel):
    name: str = Field(description="label in results, the stage name train:<name>@<seed> and the output folder")
    data: Literal["filtered", "unfiltered", "answers_only"] = Field(
        default="filtered", description="training set: verified traces, every trace, or gold answers only")
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainConfig fields; student, dataset and output paths are filled in by the run",
    )
    seeds: list[int] | None = Field(
        default=None,
        min_length=1,
        description="one trained student per seed (weights init + data order); default: the run's seeds",
    )
    init_from: str | None = Field(
        default=None,
        description="start from this (earlier) student's trained model of the "
        "same seed instead of the run's student, e.g. GKD after SFT",
    )
    student: StudentSpec | None = Field(
        default=None,
        description="this student's own starting model instead of the run's (another size, or from_teacher)",
    )
    teacher_from: str | None = Field(
        default=None,
        description="kd / gkd / distill: the live teacher is this (earlier) "
        "student's model of the same seed: born-again rounds, or "
        "an assistant in progressive distillation",
    )
    peers_from: str | None = Field(
        default=None,
        description="mutual: the other peers start from this (earlier) student's trained models of the run's "
        "next seeds in order (cyclic), so peers that learnt apart teach each other",
    )
    ptq: QATConfig | None = Field(default=None, description="no training: post-training quantization (weight-only) "
                                                            "of the init_from student's model of the same seed")
    filter: dict[str, Any] | None = Field(
        default=None, description="data filtered only: this student's own FilterConfig fields over the run's "
                                  "(a stage filter:<name>), e.g. length control (shortest_share, max_per_problem)")

    @model_validator(mode="after")
    def _distinct_seeds(self):
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"students '{self.name}': seeds must be distinct, got {self.seeds}")
        if self.ptq is not None and (self.init_from is None or self.train or self.student is not None):
            raise ValueError(f"students '{self.name}'.ptq: quantizes the trained model of the student named in "
                             f"init_from; set init_from and leave train and student out")
        return self


class PTQStage(StrictModel):
    """A run stage that quantizes a trained student (cotdistill/quant.py)."""

    source: str
    output_dir: str
    bits: Literal[4, 8]


class RunEval(StrictModel):
    benchmarks: list[EvalBenchmark] = Field(min_length=1)
    sampling: SamplingConfig = Field(
        default=SamplingConfig(n=1, temperature=0.0, max_tokens=1024), description="greedy"
    )
    ks: list[int] = Field(default_factory=lambda: [1])
    ci: Literal["bootstrap", "wilson"] = "wilson"
    teacher: bool = Field(default=True, description="evaluate the teacher too (retention needs it)")
    ngram: int = Field(
        default=8, ge=3, description="overlap check of benchmark questions against the filtered training set"
    )
    contamination: Literal["error", "warn"] | None = Field(
        default=None, description="benchmark questions found in the training data: None/error stops the run; warn "
                                  "goes on and records the opt-out in results.json")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="the students' eval engines (default: the teacher's); lower it when "
                                              "training ran in this process on the same GPU")


class RunTargets(StrictModel):
    """What the run checks and reports (it does not fail on a missed target unless strict)."""

    min_retention: float = Field(default=0.95, ge=0, description="best distilled student / teacher")
    min_gain_over_answers_only: float = Field(default=0.10, ge=0, description="accuracy points (0.10 = 10 points)")
    filtered_at_least_unfiltered: bool = True
    strict: bool = Field(default=False, description="exit non-zero when a target is missed")


class RunConfig(StrictModel):
    output_dir: str
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="student seeds: every student is trained once per seed unless it lists its own",
    )
    teacher: TeacherConfig  # generates the traces and is evaluated as the reference
    student: StudentSpec  # hub id / directory, a fresh model on the teacher's tokenizer, or from_teacher
    synthesize: dict[str, Any] | None = Field(
        default=None, description="SynthesizeConfig fields except output_dir (teacher: the run's unless given): "
                                  "the teacher writes the problems first, and generate answers the ones kept "
                                  "(generate.source is then left out)")
    generate: dict[str, Any]  # GenerateConfig fields except teacher and output_dir
    filter: dict[str, Any] = Field(default_factory=dict, description="FilterConfig fields except the directories")
    logits: dict[str, Any] = Field(
        default_factory=dict,
        description="LogitsConfig fields (logit_kd students' teacher "
        "top-k cache): mode score (default) | in_pass (when generate.sampling.logprobs is set)",
    )
    students: list[RunStudent] = Field(min_length=1)
    eval: RunEval
    benchmark: str | None = Field(
        default=None, description="which eval benchmark the targets are judged on (default: the first)"
    )
    targets: RunTargets = RunTargets()
    sweep: SweepConfig | None = Field(default=None, description="repeat students at several sizes (compression sweep)")

    @model_validator(mode="before")
    @classmethod
    def _expand_sweep(cls, data):
        """students x sweep.sizes -> one student per (student, size); references between swept students
        (init_from, teacher_from) follow to the same size."""
        if not isinstance(data, dict) or not data.get("sweep") or not isinstance(data.get("students"), list):
            return data
        sweep = SweepConfig.model_validate(data["sweep"])
        base = [s if isinstance(s, dict) else s.model_dump() for s in data["students"]]
        names = [s.get("name") for s in base]
        swept = sweep.students or names
        unknown = [n for n in swept if n not in names]
        if unknown:
            raise ValueError(f"sweep.students: {unknown} are not students of this run ({names})")
        out = [s for s in base if s.get("name") not in swept]
        labels = [size_label(spec) for spec in sweep.sizes]
        expanded = {f"{n}-{b}" for n in swept for b in labels}
        stray = [k for k in sweep.train if k not in labels and k not in expanded]
        if stray:
            raise ValueError(f"sweep.train: {stray} name no swept student at a size of this sweep; use a size "
                             f"({labels}) or <student>-<size> with a student of {swept}")
        for spec in sweep.sizes:
            label = size_label(spec)
            dump = spec if isinstance(spec, str) else spec.model_dump(exclude_defaults=False)
            for s in base:
                if s.get("name") not in swept:
                    continue
                new = {**s, "name": f"{s['name']}-{label}", "student": dump}
                if s.get("train"):  # trained students take the size's overrides, then their own at this size
                    new["train"] = {**s["train"], **sweep.train.get(label, {}), **sweep.train.get(new["name"], {})}
                for field in ("init_from", "teacher_from", "peers_from"):
                    if s.get(field) in swept:
                        new[field] = f"{s[field]}-{label}"
                if new.get("init_from"):  # starts from another student's trained model: no init of its own
                    new.pop("student")
                out.append(new)
        return {**data, "students": out}

    # one validator per rule, checked in this order
    @model_validator(mode="after")
    def _distinct_names_and_seeds(self):
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"student names must be unique, got {names}")
        if "teacher" in names:
            raise ValueError("'teacher' names the teacher in results; call the student something else")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        return self

    @model_validator(mode="after")
    def _references_to_earlier_students(self):
        names = [s.name for s in self.students]
        for i, s in enumerate(self.students):
            if s.init_from is not None and s.student is not None:
                raise ValueError(f"students[{i}]: give init_from or student, not both")
            if s.teacher_from is not None and s.train.get("method") not in ("kd", "gkd", "distill"):
                raise ValueError(f"students[{i}].teacher_from: only live-teacher methods (kd, gkd, distill) take a "
                                 f"student as teacher; set train.method")
            if s.peers_from is not None:
                if s.train.get("method") != "mutual":
                    raise ValueError(f"students[{i}].peers_from: only method mutual has peers; set train.method")
                peers = (s.train.get("mutual") or {}).get("peers", MutualOptions.model_fields["peers"].default)
                if len(s.seeds or self.seeds) < peers:
                    raise ValueError(f"students[{i}].peers_from: {peers} peers need as many seeds, the student has "
                                     f"{len(s.seeds or self.seeds)}; add seeds or lower mutual.peers")
            for field in ("init_from", "teacher_from", "peers_from"):
                other = getattr(s, field)
                if other is None:
                    continue
                if other not in names[:i]:
                    raise ValueError(f"students[{i}].{field}: '{other}' is not a student listed before '{s.name}' "
                                     f"(students: {names[:i]}); list the student it starts from first")
                src = self.students[names.index(other)]
                missing = set(s.seeds or self.seeds) - set(src.seeds or self.seeds)
                if missing:
                    raise ValueError(f"students[{i}].{field}: '{other}' is not trained with seed(s) "
                                     f"{sorted(missing)}; give both students the same seeds")
        return self

    @model_validator(mode="after")
    def _benchmark_is_evaluated(self):
        bench = [b.name for b in self.eval.benchmarks]
        if self.benchmark is not None and self.benchmark not in bench:
            raise ValueError(f"benchmark '{self.benchmark}' is not one of the eval benchmarks {bench}")
        return self

    @model_validator(mode="after")
    def _from_teacher_needs_its_weights(self):
        if isinstance(self.teacher, VLLMTeacher):
            return self
        specs = [("student", self.student)] + [(f"students[{i}].student", s.student)
                                               for i, s in enumerate(self.students)]
        for where, spec in specs:
            if isinstance(spec, StudentFromTeacher):
                raise ValueError(
                    f"{where}: from_teacher copies the teacher's blocks, but the run's teacher is a server; "
                    f"give the student as a directory built with `python -m cotdistill.student_init`"
                )
        return self

    @model_validator(mode="after")
    def _student_train_blocks(self):
        live = isinstance(self.teacher, VLLMTeacher)  # its model path can be the live teacher of gkd / distill
        for i, s in enumerate(self.students):
            if "seed" in s.train:
                raise ValueError(f"students[{i}].train.seed: a run sets seeds with 'seeds' (run-wide or per student), "
                                 f"not train.seed")
            if (s.train.get("method") in ("gkd", "distill", "kd") and not live and not s.teacher_from
                    and not (s.train.get("teacher") or s.train.get("teachers"))):
                raise ValueError(f"students[{i}].train.teacher: the run's teacher is a server; give method "
                                 f"'{s.train['method']}' the teacher's model (hub id or directory) to load")
        return self

    @model_validator(mode="after")
    def _embedded_stage_configs_validate(self):
        """The stage blocks are checked now, not an hour into the run (paths are filled in by the plan)."""
        gen = dict(self.generate)
        if self.synthesize is not None:
            if "source" in gen:
                raise ValueError("generate.source: the synthesize stage writes this run's problems; drop "
                                 "generate.source (or the synthesize block)")
            gen["source"] = {"kind": "hf", "path": "-"}
        parts = [
            ("generate", GenerateConfig, {**gen, "teacher": self.teacher.model_dump(), "output_dir": "-"}),
            ("filter", FilterConfig, {**self.filter, "generate_dir": "-", "output_dir": "-"}),
        ]
        if self.synthesize is not None:
            parts.insert(0, ("synthesize", SynthesizeConfig,
                             {"teacher": self.teacher.model_dump(), **self.synthesize, "output_dir": "-"}))
        for i, s in enumerate(self.students):
            if s.filter is not None:
                if s.data != "filtered":
                    raise ValueError(f"students[{i}].filter: only a student on data: filtered has filter settings")
                if s.train.get("method") == "logit_kd":
                    raise ValueError(f"students[{i}].filter: logit_kd reads the run's logits cache of the run's "
                                     f"filter; give it the run's filter settings")
                parts.append((f"students[{i}].filter", FilterConfig,
                              {**self.filter, **s.filter, "generate_dir": "-", "output_dir": "-"}))
        for i, s in enumerate(self.students):  # the paths a method reads are filled in by the plan
            method = METHOD_CONFIGS.get(s.train.get("method", "sft"), TrainConfig)
            filled = {k: "-" for k in ("student", "dataset_dir", "output_dir", "logprobs", "teacher")
                      if k in method.model_fields}
            parts.append((f"students[{i}].train", TrainConfig, {**filled, **s.train}))
        for where, cls, data in parts:
            try:
                cls.model_validate(data)
            except ValidationError as e:
                raise ValueError(format_validation_error(e, None, where)) from None
        return self
