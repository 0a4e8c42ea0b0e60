"""The project's own procedural reasoning task: multi-step integer arithmetic with worked solutions.

    arithmetic_problem(random.Random(0), "train-0")  -> {"id", "question", "answer", "solution", ...}

"Compute (a op b) * c op d." with two-digit a, b, d and a one-digit c. The worked solution does
one operation per line, so a model that writes its steps only ever does one small operation at a
time, while a model that must answer at once has to do all of them in its head.
"""

from __future__ import annotations

import random
import re


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


def arithmetic_set(size: int, seed: int, prefix: str, exclude: set[str] | None = None, task: str = "arithmetic",
                   **task_args) -> list[dict]:
    """``size`` distinct problems of ``task`` (see TASKS); questions in ``exclude`` (another split)
    are never produced."""
    make = TASKS[task]
    rng, seen, rows = random.Random(seed), set(exclude or ()), []
    while len(rows) < size:
        p = make(rng, f"{prefix}-{len(rows):05d}", **task_args)
        if p["question"] not in seen:
            seen.add(p["question"])
            rows.append(p)
    return rows


CHAIN_OPS = {"+": lambda x, y: (x + y) % 10, "-": lambda x, y: (x - y) % 10, "*": lambda x, y: (x * y) % 10}


def chain_problem(rng: random.Random, pid: str, steps: int = 5) -> dict:
    """"Last digit of 7+5*3-8+9, left to right." -> one line per operation ("7+5=2").

    Every intermediate is kept mod 10, so each written step is a lookup in a 10x10 table; the
    answer at once needs ``steps`` lookups composed in a single forward pass, which small models
    fail at (the default embedded run measures both)."""
    x = rng.randint(0, 9)
    expr, lines = [str(x)], []
    for _ in range(steps):
        op, y = rng.choice("+-*"), rng.randint(0, 9)
        r = CHAIN_OPS[op](x, y)
        expr += [op, str(y)]
        lines.append(f"{x}{op}{y}={r}")
        x = r
    question = f"Last digit of {''.join(expr)}, left to right."
    return {"id": pid, "question": question, "answer": str(x), "solution": "\n".join(lines), "steps": steps}


CHAIN_QUESTION = re.compile(r"Last digit of ([0-9](?:[-+*][0-9])+), left to right\.")


def chain_answer(question: str) -> str | None:
    """The task's own checker for a written question: its true answer when ``question`` is a well-formed
    digit-chain problem, None otherwise (problem synthesis validates what a teacher wrote with it)."""
    m = CHAIN_QUESTION.fullmatch(question.strip())
    if m is None:
        return None
    expr = m.group(1)
    x = int(expr[0])
    for i in range(1, len(expr), 2):
        x = CHAIN_OPS[expr[i]](x, int(expr[i + 1]))
    return str(x)


def choice_problem(rng: random.Random, pid: str) -> dict:
    """The arithmetic problem as four-option multiple choice, in MMLU's shape (``choices`` list, 0-based
    ``answer`` index). The distractors are the slips a solver makes: the other operation in the first
    step, forgetting the last step, and an off-by-ten carry."""
    p = arithmetic_problem(rng, pid)
    right = int(p["answer"])
    a, op1, b, _, c, op2, d = p["question"][len("Compute ("):-1].replace(")", "").split()
    swapped = ((int(a) - int(b)) if op1 == "+" else (int(a) + int(b))) * int(c)
    swapped = swapped + int(d) if op2 == "+" else swapped - int(d)
    opts = [right]
    for wrong in (swapped, right - int(d) if op2 == "+" else right + int(d), right + 10, right - 10, right + 1):
        if wrong not in opts and len(opts) < 4:
            opts.append(wrong)
    rng.shuffle(opts)
    return {"id": pid, "question": p["question"], "choices": [str(o) for o in opts], "answer": opts.index(right),
            "solution": p["solution"]}


TASKS = {"arithmetic": arithmetic_problem, "chain": chain_problem, "choice": choice_problem}
CHECKERS = {"digit_chain": chain_answer}  # task name -> question -> true answer or None (malformed)
