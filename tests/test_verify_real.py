"""Verification and the filter's format check on realistic completions of real models (data/verify_cases.jsonl):
R1-Distill (pre-filled <think>, "**Final Answer**" endings), QwQ, OpenThoughts, GSM8K, bare answers, gold
fields with several boxes; negatives included (cut-off traces whose last number matches, hedges, near
numbers). ``correct`` is what a careful human would keep as a correct training trace."""

import json

import pytest
from conftest import ROOT

from cotdistill.verify import check_format, verify_completion

CASES = [json.loads(line) for line in (ROOT / "data" / "verify_cases.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=[f"{c['category']}-{i}" for i, c in enumerate(CASES)])
def test_real_output(case):
    v = verify_completion(case["completion"], case["gold"])
    problem = check_format(case["completion"], case["think"])
    if "format_ok" in case:
        assert (problem is None) == case["format_ok"], problem
    keep = v.correct is True and ("format_ok" not in case or problem is None)
    assert keep == case["correct"], (v, problem, case["note"])


def test_every_category_has_negatives_and_positives():
    cats = {}
    for c in CASES:
        cats.setdefault(c["category"], set()).add(c["correct"])
    assert set(cats) >= {"r1_distill", "qwq", "openthoughts", "gsm8k", "bare", "gold_boxes"}
    assert all(v == {True, False} for v in cats.values()), cats
