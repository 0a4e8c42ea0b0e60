"""The project's arithmetic task: worked solutions are right, splits are disjoint, seeds reproduce."""

import re

from cotdistill.tasks import arithmetic_set
from cotdistill.verify import verify_completion


def test_solutions_are_correct_and_checkable():
    for p in arithmetic_set(200, seed=1, prefix="t"):
        for line in p["solution"].splitlines():
            lhs, rhs = line.split(" = ")
            assert eval(lhs) == int(rhs)
        assert p["solution"].splitlines()[-1].endswith(f"= {p['answer']}")
        assert eval(re.sub(r"Compute |\.$", "", p["question"])) == int(p["answer"])
        assert verify_completion(f"{p['solution']}\n\\boxed{{{p['answer']}}}", p["answer"]).correct


def test_splits_are_disjoint_and_seeded():
    train = arithmetic_set(300, seed=1, prefix="a")
    test = arithmetic_set(100, seed=2, prefix="b", exclude={p["question"] for p in train})
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    assert len({p["question"] for p in train}) == 300
    assert arithmetic_set(300, seed=1, prefix="a") == train
