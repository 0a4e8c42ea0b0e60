"""Adaptive sampling for ``generate``: stop sampling a problem once k distinct correct traces exist.

``sampling.until_verified: k`` with ``sampling.n`` as the budget per problem. Generation goes in
rounds; after each round the pure verifier (in the pool) judges the round's traces, and a problem
gets more samples only while it has fewer than k distinct (whitespace-normalised text) finished,
verified-correct traces and budget left:

    round 0: samples 0 .. k-1;  round r + 1: the next k - have samples (have = distinct correct so far)

Sample i of a problem is the same trace as in a fixed-n run (its seed depends on the problem and
i only), so an adaptive run generates a prefix of the fixed-n run's samples per problem, and
which prefix depends only on those samples: a run killed at any point resumes into the same
result (``next_samples`` replays the rounds from what is on disk). Problems without a gold answer
(and not a task with its own scorer) cannot be verified and get all n samples in round 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from cotdistill.records import Problem


@dataclass(frozen=True)
class Seen:
    correct: bool  # finished ("stop") and verified correct
    text: str  # whitespace-normalised completion


def normalise(text: str) -> str:
    return " ".join(text.split())


def verifiable(p: Problem) -> bool:
    return p.answer is not None or bool(p.metadata.get("rg_task")) or bool(p.metadata.get("tests"))


def next_samples(k: int, n: int, seen: dict[int, Seen], can_verify: bool = True) -> tuple[list[int], int]:
    """The sample indices to generate next for one problem, and the round they belong to; ([], r)
    when the problem is done (k distinct correct, or the budget n spent). Pure: replays the rounds
    from the samples already seen, so holes of a killed round are filled before a new round."""
    if not can_verify:
        return [i for i in range(n) if i not in seen], 0
    start, need, rnd, have = 0, min(k, n), 0, set()
    while True:
        idx = list(range(start, min(start + need, n)))
        if not idx:
            return [], rnd
        missing = [i for i in idx if i not in seen]
        if missing:
            return missing, rnd
        have |= {seen[i].text for i in idx if seen[i].correct}
        if len(have) >= k:
            return [], rnd
        start, need, rnd = start + need, k - len(have), rnd + 1
