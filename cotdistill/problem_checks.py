"""Pure checks of a problem a teacher wrote (no I/O): read the question (and an answer, when the writer gave
one) out of its output, say why it is malformed, and vote the teacher's answers into a label and a pass rate.

    parse_written("Problem: What is 2+3?\\nAnswer: 5")  -> ("What is 2+3?", "5")
    malformed("What is 2+3?", "stop", checks)         -> None (or "truncated", "too_short", "pattern", ...)
    consensus(["5", "5", None, "6"])                  -> Consensus(label="5", votes=2, voters=3, samples=4)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from cotdistill.config.synthesize import ProblemChecks
from cotdistill.tasks import CHECKERS
from cotdistill.verify import answer_key, extract_answer

_LABEL = re.compile(r"^\s*(?:[*_#]+\s*)?(?:new\s+|synthesi[sz]ed\s+)?(?:problem|question)\s*(?:\d+\s*)?[:：]\s*"
                    r"(?:[*_]+\s*)?", re.I)
# chat models announce what they write: "Here's a new problem with different numbers:", "The new problem is:"
_PREAMBLE = re.compile(r"^\s*(?:here(?:'s| is)|the|sure[,!]?\s+here(?:'s| is))\s+(?:a\s+|the\s+|one\s+)?(?:new\s+)?"
                       r"(?:problem|question)\b[^:\n]{0,60}:\s*", re.I)
_ANSWER_LINE = re.compile(r"^\s*(?:[*_#]+\s*)?(?:final\s+)?(?:answer|solution)\s*(?:[*_]+\s*)?[:：]", re.I | re.M)


def parse_written(text: str) -> tuple[str, str | None]:
    """(question, written answer or None) from a writer's output: a leading "Problem:"/"Question:" label and a
    chat model's preamble ("Here's a new problem with different numbers:") are dropped; an "Answer:" (or
    "Solution:") section ends the question and gives the answer."""
    text = text.strip()
    answer = None
    m = _ANSWER_LINE.search(text)
    if m:
        tail = text[m.start():]
        answer = extract_answer(tail) or (tail[m.end() - m.start():].strip().split("\n", 1)[0].strip() or None)
        text = text[:m.start()].strip()
    elif "\\boxed" in text:  # a writer that put the answer in a box after the question
        answer = extract_answer(text)
        text = text[:text.rfind("\\boxed")].rstrip(" $\\(").strip()
    return _LABEL.sub("", _PREAMBLE.sub("", text, count=1), count=1).strip(), answer


def malformed(question: str, finish_reason: str, checks: ProblemChecks) -> str | None:
    """Why a written question is not usable, or None: cut off, length, the pattern, the task's own checker."""
    if finish_reason != "stop":
        return "truncated"
    if len(question) < checks.min_chars:
        return "too_short"
    if len(question) > checks.max_chars:
        return "too_long"
    if checks.pattern is not None and not re.fullmatch(checks.pattern, question, re.S):
        return "pattern"
    if checks.task is not None and CHECKERS[checks.task](question) is None:
        return "task_invalid"
    return None


def true_answer(question: str, checks: ProblemChecks) -> str | None:
    """The task checker's answer (for reports only: selection never sees it)."""
    return CHECKERS[checks.task](question) if checks.task is not None else None


@dataclass(frozen=True)
class Consensus:
    label: str | None  # the most common extracted answer (first seen on ties), None without any
    votes: int  # samples whose answer is the label
    voters: int  # samples with an extracted answer
    samples: int  # all samples

    @property
    def agreement(self) -> float:
        """Share of the answering samples that agree with the label (0 without any)."""
        return self.votes / self.voters if self.voters else 0.0

    @property
    def pass_rate(self) -> float:
        """Share of all samples that reach the label (a cut-off or answer-less sample fails)."""
        return self.votes / self.samples if self.samples else 0.0


def consensus(answers: list[str | None], written: str | None = None) -> Consensus:
    """Vote the extracted answers of one problem's samples (None: the sample gave none). With a ``written``
    answer the label is the written one, and votes count the samples that reach it."""
    keys = [answer_key(a) if a else None for a in answers]
    voters = sum(k is not None for k in keys)
    if written is not None:
        wk = answer_key(written)
        return Consensus(written, sum(k == wk for k in keys), voters, len(answers))
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return Consensus(None, 0, 0, len(answers))
    best = max(counts.values())
    top = next(k for k in keys if k is not None and counts[k] == best)
    return Consensus(answers[keys.index(top)], best, voters, len(answers))
