"""The eval stage's config (cotdistill/evaluate.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cotdistill.config.common import SamplingConfig, SourceConfig, StrictModel, TeacherConfig


class EvalModel(StrictModel):
    name: str = Field(description="label in results and plots")
    role: Literal["teacher", "student", "baseline"] = "student"
    serve: TeacherConfig = Field(description="how to serve this model: an offline vLLM engine or an "
                                             "OpenAI-compatible server (the same blocks as a teacher)")


class EvalBenchmark(StrictModel):
    name: str
    source: SourceConfig
    template: str = Field(default="math_boxed_think", description="prompt template (prompts/)")


class EvalConfig(StrictModel):
    models: list[EvalModel] = Field(min_length=1)
    benchmarks: list[EvalBenchmark] = Field(min_length=1)
    sampling: SamplingConfig = Field(
        default=SamplingConfig(n=4, temperature=0.6, max_tokens=1024), description="temperature 0 = greedy"
    )
    ks: list[int] = Field(default_factory=lambda: [1, 4], description="pass@k and maj@k for each k <= n")
    ci: Literal["bootstrap", "wilson"] = "bootstrap"
    train_data: list[str] = Field(
        default_factory=list, description="filter outputs / jsonl files to check for overlap"
    )
    ngram: int = Field(default=8, ge=3)
    contamination: Literal["error", "warn"] | None = Field(
        default=None, description="benchmark questions sharing n-grams with train_data: None/error refuses to score; "
                                  "warn scores anyway and records the opt-out in results.json")
    verify_workers: int = Field(default=0, ge=0)
    verify_timeout_s: float = Field(default=10.0, gt=0)
    output_dir: str
    progress: bool = True

    @model_validator(mode="after")
    def _unique_names(self):
        for what, names in (
            ("models", [m.name for m in self.models]),
            ("benchmarks", [b.name for b in self.benchmarks]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique, got {names}")
        return self
