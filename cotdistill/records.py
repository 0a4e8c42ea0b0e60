"""Typed records that flow between pipeline stages, defined in one place.

    Problem --render--> messages --teacher--> Trace (+ TokenLogprobs side record)

Every record is a pydantic model serialised as one JSON line. Traces and their logprob side
records share the key ``(problem_id, sample_index)`` so any stage can join, resume or dedupe.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1


def trace_key(problem_id: str, sample_index: int) -> str:
    return f"{problem_id}#{sample_index}"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(value):
    """Lone UTF-16 surrogates (a JSON "\\ud800" escape in a user's file or a teacher's output) replaced by U+FFFD,
    in every string of a record: UTF-8 cannot encode them, so a later write (JSONL, Arrow) would fail mid-stage."""
    if isinstance(value, str):
        if value.isascii() or not _SURROGATE.search(value):
            return value
        # a pair held as two code points is rejoined into its character; a lone one becomes U+FFFD
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {k: _no_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_surrogates(v) for v in value]
    return value


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data):
        return _no_surrogates(data) if isinstance(data, dict) else data


class Problem(_Record):
    """One question, from a dataset row or a reasoning-gym entry."""

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str | None = None  # gold answer; None when the source has none
    source: str  # e.g. "hf:data/arithmetic_test.jsonl[train]" or "reasoning_gym:chain_sum"
    metadata: dict[str, Any] = Field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """What a later stage may select this problem by (e.g. on_policy's teacher routing): its source and its
        scalar metadata (a dataset's extra columns: domain, level, tag; reasoning-gym's rg_task), as text."""
        scalar = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.metadata.items()
                  if isinstance(v, str | int | float | bool)}
        return {"source": self.source, **scalar}


class Message(_Record):
    role: Literal["system", "user", "assistant"]
    content: str


class TeacherInfo(_Record):
    backend: Literal["vllm", "openai"]
    model: str  # hub id, local path, or served model name
    revision: str | None = None
    tokenizer: str | None = None  # tokenizer id/path; None when unknown (remote endpoint)
    tokenizer_hash: str | None = None  # sha256 over the vocabulary, see teachers.tokenizer_hash
    engine_version: str | None = None  # vllm version, or the server's reported version
    dtype: str | None = None  # the engine's dtype (env.engine_dtype: fp32 on CPUs without fast bf16); None: not known


class TemplateInfo(_Record):
    name: str
    hash: str  # content hash of the template file


class SamplingInfo(_Record):
    n: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    stop: list[str]
    logprobs: int | None
    until_verified: int | None = None  # adaptive sampling: n is the budget, k distinct correct traces the goal


class Trace(_Record):
    """One teacher sample for one problem."""

    schema_version: int = SCHEMA_VERSION
    problem_id: str
    sample_index: int = Field(ge=0)
    messages: list[Message]  # the rendered prompt messages (system?, user)
    completion: str
    finish_reason: str  # "stop" | "length" | "abort" | ...
    prompt_tokens: int
    completion_tokens: int
    teacher: TeacherInfo
    template: TemplateInfo
    sampling: SamplingInfo
    seed: int  # per-sample seed, derived from the run seed, problem id and sample index
    round: int | None = None  # adaptive sampling: the round that requested this sample (0 = first)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def key(self) -> str:
        return trace_key(self.problem_id, self.sample_index)


class Verdict(_Record):
    """What verification concluded about one completion. ``correct is None`` means cannot tell."""

    extracted: str | None  # the final answer as marked in the completion, cleaned
    correct: bool | None
    reason: Literal["match", "mismatch", "no_answer", "gold_unparseable", "scorer", "timeout", "error"]
    detail: str | None = None  # for "error": the verifier's exception, so a bug is not silently "cannot tell"


def _pack(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


class TokenLogprobs(_Record):
    """Top-k teacher logprobs of every generated token, stored compactly (base64 arrays).

    ``token_ids[t]`` is the sampled token at step t with logprob ``sampled_logprobs[t]``;
    ``top_ids[t, :]``/``top_logprobs[t, :]`` are the teacher's k most likely tokens at that step
    (id -1 / logprob -inf pad rows with fewer than k entries).
    """

    problem_id: str
    sample_index: int = Field(ge=0)
    tokenizer_hash: str
    top_k: int = Field(ge=1)
    num_tokens: int = Field(ge=0)
    token_ids: str  # int32[T]
    sampled_logprobs: str  # float32[T]
    top_ids: str  # int32[T, k]
    top_logprobs: str  # float32[T, k]

    @property
    def key(self) -> str:
        return trace_key(self.problem_id, self.sample_index)

    @classmethod
    def from_arrays(
        cls,
        problem_id: str,
        sample_index: int,
        tokenizer_hash: str,
        token_ids: np.ndarray,
        sampled_logprobs: np.ndarray,
        top_ids: np.ndarray,
        top_logprobs: np.ndarray,
    ) -> TokenLogprobs:
        t, k = top_ids.shape
        if len(token_ids) != t or len(sampled_logprobs) != t or top_logprobs.shape != (t, k):
            raise ValueError(f"logprob arrays of {problem_id}#{sample_index} disagree in shape")
        return cls(
            problem_id=problem_id,
            sample_index=sample_index,
            tokenizer_hash=tokenizer_hash,
            top_k=k,
            num_tokens=t,
            token_ids=_pack(token_ids.astype(np.int32)),
            sampled_logprobs=_pack(sampled_logprobs.astype(np.float32)),
            top_ids=_pack(top_ids.astype(np.int32)),
            top_logprobs=_pack(top_logprobs.astype(np.float32)),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        t, k = self.num_tokens, self.top_k

        def unpack(s: str, dtype, shape):
            return np.frombuffer(base64.b64decode(s), dtype=dtype).reshape(shape)

        return {
            "token_ids": unpack(self.token_ids, np.int32, (t,)),
            "sampled_logprobs": unpack(self.sampled_logprobs, np.float32, (t,)),
            "top_ids": unpack(self.top_ids, np.int32, (t, k)),
            "top_logprobs": unpack(self.top_logprobs, np.float32, (t, k)),
        }
