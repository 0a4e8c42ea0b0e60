"""What every teacher backend shares: the job/result types, seeds, tokenizer identity."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cotdistill.records import Message, TeacherInfo


@dataclass(frozen=True)
class Job:
    problem_id: str
    sample_index: int
    messages: list[Message]
    seed: int


@dataclass
class Result:
    completion: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # top-k logprob capture: token_ids[T], sampled_logprobs[T], top_ids[T,k], top_logprobs[T,k]
    logprobs: dict[str, np.ndarray] | None = field(default=None)


class Teacher(Protocol):
    info: TeacherInfo

    def generate(self, jobs: Iterable[Job], sampling: Any) -> Iterator[tuple[Job, Result]]:
        """Yield (job, result) as each sample finishes, in any order."""

    def close(self) -> None: ...


def derive_seed(run_seed: int, problem_id: str, sample_index: int) -> int:
    """Per-sample seed: each trace is reproducible alone, whatever the batching, shard or resume."""
    h = hashlib.sha256(f"{run_seed}\x00{problem_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


