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

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[dict[str, np.ndarray]]:
        """The teacher's log-probabilities over tokens it did not write (a student's rollout): for each token
        sequence, at every position from ``starts[i]`` on, the logprob of the token there (``sampled_logprobs``,
        [T]) and the teacher's top-k (``top_ids``/``top_logprobs``, [T, k]); one prefill, nothing generated."""

    def close(self) -> None: ...


def derive_seed(run_seed: int, problem_id: str, sample_index: int) -> int:
    """Per-sample seed: each trace is reproducible alone, whatever the batching, shard or resume."""
    h = hashlib.sha256(f"{run_seed}\x00{problem_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF




def prompt_logprob_arrays(ids: list[int], start: int, prompt_logprobs, k: int, where: str) -> dict[str, np.ndarray]:
    """vLLM's prompt logprobs (one {token id: (logprob, rank)} per position, None first) -> dense arrays for the
    positions ``start..len(ids)-1``. Each position's own token is always among its entries (vLLM adds it)."""
    t = len(ids) - start
    top_ids = np.full((t, k), -1, dtype=np.int32)
    top_lp = np.full((t, k), -np.inf, dtype=np.float32)
    sampled = np.empty(t, dtype=np.float32)
    if prompt_logprobs is None or len(prompt_logprobs) != len(ids):
        raise ValueError(f"{where}: {0 if prompt_logprobs is None else len(prompt_logprobs)} prompt logprobs for "
                         f"{len(ids)} tokens")
    for i in range(t):
        entries = prompt_logprobs[start + i]
        own = ids[start + i]
        if not entries or own not in entries:
            raise ValueError(f"{where}: position {start + i} has no logprob for its own token {own}")
        sampled[i] = entries[own][0]
        for cand, (lp, rank) in entries.items():
            if rank is not None and 1 <= rank <= k:
                top_ids[i, rank - 1] = cand
                top_lp[i, rank - 1] = lp
    return {"token_ids": np.asarray(ids[start:], dtype=np.int32), "sampled_logprobs": sampled, "top_ids": top_ids,
            "top_logprobs": top_lp}
