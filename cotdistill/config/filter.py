"""The filter stage's config (cotdistill/filter.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cotdistill.config.common import HFSource, StrictModel


class DecontamConfig(StrictModel):
    eval_sets: list[HFSource] = Field(default_factory=list, description="benchmarks that must not leak into training")
    ngram: int = Field(default=8, ge=3, description="word n-gram length; a shared n-gram is a hit")
    check_traces: bool = Field(
        default=True, description="also look for eval questions inside the teacher's completions"
    )


class FilterConfig(StrictModel):
    generate_dir: str  # a generation output directory (traces.jsonl, problems.jsonl, config.yaml)
    output_dir: str
    require_correct: bool = Field(default=True, description="drop incorrect and \"cannot tell\" traces")
    require_stop: bool = Field(default=True, description="drop truncated traces (finish reason other than \"stop\")")
    min_completion_tokens: int = Field(default=1, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    format_check: bool = Field(
        default=True, description="<think> balance when the template asks for it; one final answer section"
    )
    dedup_exact: bool = True
    near_dup_threshold: float | None = Field(default=0.9, gt=0, le=1, description="MinHash Jaccard within a problem")
    minhash_perm: int = Field(default=64, ge=16)
    decontam: DecontamConfig = DecontamConfig()
    max_per_problem: int | None = Field(default=None, ge=1)
    select: Literal["shortest", "diverse"] = "shortest"
    shortest_share: float | None = Field(
        default=None, ge=0, le=1,
        description="length mix: for this share of the problems (picked by a hash of the id) keep only the "
                    "shortest kept trace, for the rest all of them (up to max_per_problem); 1.0 = shortest only")
    vote_threshold: float = Field(default=0.6, gt=0, le=1, description="pseudo-label agreement for gold-less problems")
    verify_workers: int = Field(default=0, ge=0, description="0: one per core")
    verify_timeout_s: float = Field(default=10.0, gt=0)
    progress: bool = True

    @model_validator(mode="after")
    def _length_bounds(self):
        if self.max_completion_tokens is not None and self.max_completion_tokens < self.min_completion_tokens:
            raise ValueError("max_completion_tokens must be >= min_completion_tokens")
        return self
