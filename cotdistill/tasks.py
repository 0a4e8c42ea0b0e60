"""The project's own procedural reasoning task: multi-step integer arithmetic with worked solutions.

    arithmetic_problem(random.Random(0), "train-0")  -> {"id", "question", "answer", "solution", ...}

"Compute (a op b) * c op d." with two-digit a, b, d and a one-digit c. The worked solution does
one operation per line, so a model that writes its steps only ever does one small operation at a
time, while a model that must answer at once has to do all of them in its head.
"""

from __future__ import annotations

import random


def arithmetic_problem(rng: random.Random, pid: str) -> dict:
    a, b, d = rng.randint(10, 99), rng.randint(10, 99), rng.randint(10, 99)
    c = rng.randint(2, 9)
    op1, op2 = rng.choice("+-"), rng.choice("+-")
    s1 = a + b if op1 == "+" else a - b
    s2 = s1 * c
    s3 = s2 + d if op2 == "+" else s2 - d
    question = f"Compute ({a} {op1} {b}) * {c} {op2} {d}."
    solution = "\n".join([f"{a} {op1} {b} = {s1}", f"{s1} * {c} = {s2}", f"{s2} {op2} {d} = {s3}"])
    return {"id": pid, "question": question, "answer": str(s3), "solution": solution, "steps": 3}


def arithmetic_set(size: int, seed: int, prefix: str, exclude: set[str] | None = None) -> list[dict]:
    """``size`` distinct problems; questions in ``exclude`` (another split) are never produced."""
    rng, seen, rows = random.Random(seed), set(exclude or ()), []
    while len(rows) < size:
        p = arithmetic_problem(rng, f"{prefix}-{len(rows):05d}")
        if p["question"] not in seen:
            seen.add(p["question"])
            rows.append(p)
    return rows
