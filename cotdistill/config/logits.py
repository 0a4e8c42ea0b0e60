"""The logits stage's config (cotdistill/logits.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cotdistill.config.common import StrictModel


class LogitsConfig(StrictModel):
    """The teacher's top-k logprobs for the kept traces, cached columnar for cached-logit KD."""

    teacher: str = Field(description="score: hub id or local directory of the teacher (transformers loads it)")
    tokenizer: str | None = Field(default=None, description="default: the teacher's")
    filter_dir: str  # a `cotdistill filter` output (sft/)
    output_dir: str
    mode: Literal["score", "in_pass"] = Field(
        default="score",
        description="score: the teacher scores the kept traces "
        "after the filter; in_pass: keep the logprobs vLLM captured while generating",
    )
    logprobs: str | None = Field(default=None, description="in_pass: the generation stage's logprobs.jsonl")
    top_k: int = Field(default=8, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, description="score: sequences per forward pass")
    device: str = Field(default="auto", description="score: auto (cuda when there is one) | cpu | cuda[:N]")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bf16 on CUDA and on CPUs with AMX / AVX512-BF16, else fp32"
    )
    chunk_tokens: int | None = Field(default=None, ge=0, description="score: positions whose logits are made at "
                                     "once (bounded memory at large vocabularies); None: 512, 0: whole sequences")
    rows_per_group: int = Field(default=512, ge=1, description="parquet row group size (traces)")
    too_long: Literal["skip", "refuse"] | None = Field(
        default=None, description="score: a kept trace longer than the teacher's context (checked before it loads): "
                                  "skip it, listed in skipped.jsonl (None: skip), or refuse the run")
    progress: bool = True

    @model_validator(mode="after")
    def _in_pass_needs_file(self):
        if self.mode == "in_pass" and not self.logprobs:
            raise ValueError("mode in_pass reads the generation's logprobs.jsonl: set logprobs")
        return self
