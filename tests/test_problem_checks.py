"""The pure checks of written problems (cotdistill/problem_checks.py), on writers' real output shapes: the
embedded writer's bare question, chat models' "Problem:/Answer:" layouts, markdown bold labels, boxed answers."""

from __future__ import annotations

import pytest

from cotdistill.config import ProblemChecks
from cotdistill.dedup import TextDedup
from cotdistill.problem_checks import consensus, malformed, parse_written, true_answer
from cotdistill.tasks import chain_answer


@pytest.mark.parametrize("text, question, answer", [
    ("Last digit of 7+5*3-8+9, left to right.", "Last digit of 7+5*3-8+9, left to right.", None),
    ("Problem: Tom has 3 apples and buys 4 more. How many does he have?\nAnswer: 7",
     "Tom has 3 apples and buys 4 more. How many does he have?", "7"),
    ("**New Problem:** A shop sells pens at $2 each. What do 6 pens cost?\n\n**Answer:** 12",
     "A shop sells pens at $2 each. What do 6 pens cost?", "12"),
    ("Question 1: What is 12 * 12?\n\nFinal answer: $\\boxed{144}$", "What is 12 * 12?", "144"),
    ("What is the sum of the first 10 positive integers? \\boxed{55}",
     "What is the sum of the first 10 positive integers?", "55"),
    ("  Sarah reads 20 pages a day.\nHow many pages in a week?  ",
     "Sarah reads 20 pages a day.\nHow many pages in a week?", None),
    # SmolLM2-135M-Instruct's few-shot outputs (tests/test_smollm2.py, 2026-12-03)
    ("Here's a new problem with different numbers: \nThere are 12 friends who have 10 fish each. How many fish?",
     "There are 12 friends who have 10 fish each. How many fish?", None),
    ("The new problem is: How many students have to choose at least 3 books?",
     "How many students have to choose at least 3 books?", None),
    ("Sure! Here is a new problem for you:\n**Problem:** What is 7 * 8?", "What is 7 * 8?", None),
    # the solution's last sentence states its value (issue #44: the last value of a complete last sentence)
    ("Problem: Solve for x: 2x + 3 = 11.\nSolution: 2x = 8, so x = 4.", "Solve for x: 2x + 3 = 11.", "4"),
])
def test_parse_written(text, question, answer):
    assert parse_written(text) == (question, answer)


def test_malformed_in_funnel_order():
    c = ProblemChecks(task="digit_chain", min_chars=10, max_chars=60)
    good = "Last digit of 7+5*3-8+9, left to right."
    assert malformed(good, "stop", c) is None
    assert malformed(good, "length", c) == "truncated"
    assert malformed("Last", "stop", c) == "too_short"
    assert malformed("Last digit of " + "1+2" * 30 + ", left to right.", "stop", c) == "too_long"
    assert malformed("Last digit of 7+5*, left to right.", "stop", c) == "task_invalid"
    assert malformed("Last digit of 17+5, left to right.", "stop", c) == "task_invalid"
    assert malformed("What is 2 + 2 here?", "stop", ProblemChecks(pattern=r"Last digit of .*")) == "pattern"
    assert true_answer(good, c) == chain_answer(good) == "7"


def test_chain_answer_steps():
    # 7+5=12->2, 2*3=6, 6-8=-2->8, 8+9=17->7
    assert chain_answer("Last digit of 7+5*3-8+9, left to right.") == "7"
    assert chain_answer("Last digit of 0*9, left to right.") == "0"
    assert chain_answer("Last digit of 3, left to right.") is None


def test_consensus_votes_and_rates():
    v = consensus(["5", "5.0", None, "6"])
    assert (v.label, v.votes, v.voters, v.samples) == ("5", 2, 3, 4)
    assert v.agreement == pytest.approx(2 / 3) and v.pass_rate == 0.5
    tie = consensus(["6", "5", "5", "6"])
    assert tie.label == "6" and tie.votes == 2  # first seen wins a tie: the order is the sample order
    assert consensus([None, None]).label is None and consensus([None, None]).agreement == 0.0
    w = consensus(["6", "5", "5"], written="5")
    assert (w.label, w.votes, w.voters) == ("5", 2, 3)


def test_text_dedup_exact_and_near():
    d = TextDedup(exact=True, near_threshold=0.5, perm=64)
    d.add("a", "A farmer has 12 cows and buys 5 more cows at the market on Monday. How many cows now?")
    assert d.check("A farmer has 12 cows  and buys 5 more cows at the market on Monday. How many cows now?") \
        == "duplicate_exact"
    assert d.check("A farmer has 12 cows and buys 6 more cows at the market on Monday. How many cows now?") \
        == "near_duplicate"
    assert d.check("Compute the area of a circle of radius 3.") is None
    assert TextDedup(exact=False).check("anything") is None
