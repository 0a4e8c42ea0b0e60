"""The synthesize stage's config (cotdistill/synthesize.py): the teacher writes problems, the problem filters
keep the good ones."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cotdistill.config.common import (
    OpenAITeacher,
    PromptConfig,
    SamplingConfig,
    SourceConfig,
    StrictModel,
    TeacherConfig,
)
from cotdistill.config.filter import DecontamConfig


class EvolveRound(StrictModel):
    """One evolution round (Evol-Instruct): every problem kept so far in the previous round is rewritten through
    ``template`` (e.g. "harder", "more steps", "another domain"), ``n`` times."""

    template: str = Field(description="prompt template of the rewrite; {{ question }} is the problem to evolve")
    n: int = Field(default=1, ge=1, description="rewrites per problem")


class ProblemChecks(StrictModel):
    """Cheap checks of a written problem, before any teacher answers it."""

    task: Literal["digit_chain"] | None = Field(
        default=None, description="the task's own checker: digit_chain parses the embedded task's question and "
                                  "knows its true answer (recorded as metadata.true_answer, never used to select)")
    pattern: str | None = Field(default=None, description="a regular expression the whole question must match")
    min_chars: int = Field(default=8, ge=1)
    max_chars: int = Field(default=2000, ge=1)
    dedup_exact: bool = Field(default=True, description="drop repeats among the written problems and of the seeds")
    near_dup_threshold: float | None = Field(
        default=0.9, gt=0, le=1, description="MinHash Jaccard (word 3-grams) against every earlier problem and the "
                                             "seeds; null: exact only (short templated questions)")
    minhash_perm: int = Field(default=64, ge=16)


class Consistency(StrictModel):
    """CoT-Self-Instruct's check: the teacher answers each problem ``n`` times; a problem is kept when at least
    ``threshold`` of the answers agree (and agree with the written answer when the writer gave one). The
    majority answer becomes the problem's gold answer; the share of samples that reach it is its pass rate."""

    n: int = Field(default=4, ge=1)
    threshold: float = Field(default=0.75, gt=0, le=1)
    template: str = Field(description="the prompt template the teacher answers through (the generate stage's)")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=1.0, max_tokens=512))
    enabled: bool = Field(default=True, description="false: no agreement check (answers still give the label and "
                                                    "the pass rate)")


class Difficulty(StrictModel):
    """Keep problems whose pass rate (share of the consistency samples that reach the label) is in
    [min_pass, max_pass]: 1.0 problems teach little, 0 ones may be wrong (OpenThoughts, OpenMathReasoning)."""

    min_pass: float = Field(default=0.0, ge=0, le=1)
    max_pass: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _band(self):
        if self.min_pass > self.max_pass:
            raise ValueError(f"min_pass {self.min_pass} > max_pass {self.max_pass}")
        return self


class SynthesizeConfig(StrictModel):
    teacher: TeacherConfig
    output_dir: str
    mode: Literal["few_shot", "topics", "magpie"] = Field(
        default="few_shot", description="few_shot: rotate `shots` seed problems per request; topics: one topic per "
                                        "request; magpie: nothing but the chat template's opening of a user turn")
    seeds: SourceConfig | None = Field(default=None, description="few_shot: the example problems")
    topics: list[str] = Field(default_factory=list, description="topics: one is the {{ question }} of a request")
    shots: int = Field(default=3, ge=1, description="few_shot: seed problems per request")
    requests: int = Field(default=100, ge=1, description="writing requests in the first round")
    prompt: PromptConfig | None = Field(
        default=None, description="template of a writing request; default per mode: write_problem (few_shot), "
                                  "write_problem_topic (topics), magpie (a copy with a system turn steers it)")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=1, temperature=1.0, max_tokens=256))
    evolve: list[EvolveRound] = Field(default_factory=list, description="rounds after the first, in order")
    checks: ProblemChecks = ProblemChecks()
    decontam: DecontamConfig = Field(default_factory=DecontamConfig,
                                     description="benchmarks no written problem may overlap (dropped, and listed)")
    consistency: Consistency | None = Field(default=None, description="teacher answers: label, agreement, pass rate")
    difficulty: Difficulty | None = Field(default=None, description="a pass-rate band (needs consistency)")
    max_problems: int | None = Field(default=None, ge=1, description="keep at most this many (in writing order)")
    seed: int = 0
    progress: bool = True

    @model_validator(mode="after")
    def _mode_inputs(self):
        if self.mode == "few_shot" and self.seeds is None:
            raise ValueError("mode few_shot needs seeds: a source of example problems (seeds.path)")
        if self.mode == "topics" and not self.topics:
            raise ValueError("mode topics needs a list of topics")
        if self.mode == "magpie" and isinstance(self.teacher, OpenAITeacher) and self.teacher.api == "chat":
            raise ValueError("mode magpie renders the chat template's opening of a user turn itself: set "
                             "teacher.api: completions (and teacher.tokenizer)")
        if self.difficulty is not None and self.consistency is None:
            raise ValueError("difficulty needs consistency: the pass rate comes from the teacher's answers")
        return self

    def mode_template(self) -> str:
        if self.prompt is not None:
            return self.prompt.template
        return {"few_shot": "write_problem", "topics": "write_problem_topic", "magpie": "magpie"}[self.mode]

    def variables(self) -> dict:
        return self.prompt.variables if self.prompt is not None else {}
