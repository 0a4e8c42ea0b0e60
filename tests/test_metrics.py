"""Metrics against hand-computed values."""

import math

import pytest

from cotdistill.metrics import bootstrap_ci, maj_at_k, pass_at_k, summarize, wilson


@pytest.mark.parametrize("n,c,k,expected", [
    (4, 0, 1, 0.0), (4, 4, 2, 1.0), (4, 1, 1, 0.25), (4, 2, 2, 1 - 1 / 6),  # C(2,2)/C(4,2) = 1/6
    (5, 3, 3, 1.0),  # n - c < k: every draw of 3 holds a correct one
    (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3)
    (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),  # 1 - 21/252
])
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


@pytest.mark.parametrize("answers,correct,k,expected", [
    (["7", "7", "8", "9"], [True, True, False, False], 4, 1.0),
    (["8", "8", "7", "9"], [False, False, True, False], 4, 0.0),
    (["7", "8", "7", "8"], [True, False, True, False], 4, 0.5),  # tie of two: half credit
    (["7", "8", "9", None], [True, False, False, None], 4, 1 / 3),  # three-way tie, one right
    (["7", "8", "8", "8"], [True, False, False, False], 1, 1.0),  # only the first sample votes
    ([None, None], [None, None], 2, 0.0),
])
def test_maj_at_k(answers, correct, k, expected):
    assert maj_at_k(answers, correct, k) == pytest.approx(expected)


def test_wilson_matches_hand_computation():
    # p = 0.5, n = 10, z = 1.96: centre 0.5, half = 1.96 * sqrt(0.025 + 0.009604) / 1.38416 = 0.26340
    lo, hi = wilson(0.5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0.0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    vals = [1.0] * 30 + [0.0] * 70
    a, b = bootstrap_ci(vals, seed=1), bootstrap_ci(vals, seed=1)
    assert a == b and a[0] < 0.3 < a[1] and a[1] - a[0] < 0.25
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)


def test_summarize():
    probs = [
        {"correct": [True, False, True, None], "answers": ["1", "2", "1", None], "tokens": [10, 20, 30, 40],
         "truncated": [False, False, False, True]},
        {"correct": [False, False, False, False], "answers": ["3", "3", "4", "5"], "tokens": [5, 5, 5, 5],
         "truncated": [False] * 4},
    ]
    s = summarize(probs, ks=[2, 4])
    assert s["pass@1"]["value"] == pytest.approx((0.5 + 0) / 2)
    assert s["pass@2"]["value"] == pytest.approx((pass_at_k(4, 2, 2) + 0) / 2)
    assert s["maj@4"]["value"] == pytest.approx(0.5)
    assert s["truncation_rate"] == pytest.approx(1 / 8) and s["cannot_tell_rate"] == pytest.approx(1 / 8)
    assert s["mean_completion_tokens"] == pytest.approx(120 / 8)
    lo, hi = s["pass@1"]["ci95"]
    assert lo <= s["pass@1"]["value"] <= hi
    greedy = summarize([{"correct": [True], "answers": ["1"], "tokens": [3], "truncated": [False]}] * 3, ks=[1])
    assert greedy["pass@1"]["ci95"] == [round(x, 6) for x in wilson(1.0, 3)]


def test_diversity_by_hand():
    from cotdistill.metrics import diversity

    same = ["a b c d", "a b c d"]
    other = ["a b c d", "e f g h"]
    d = diversity([same, other], [["1", "1"], ["1", "2"]])
    # distinct-1: same 4/8, other 8/8 -> 0.75; distinct-2: same 3/6, other 6/6 -> 0.75
    assert d["distinct_1"] == 0.75 and d["distinct_2"] == 0.75
    # 3-gram sets: same {abc, bcd} twice -> 1.0; other disjoint -> 0.0
    assert d["pairwise_similarity"] == 0.5
    assert d["all_agree_share"] == 0.5  # only the first problem's answers agree
    three = diversity([["x y z w", "x y z q", "x y z w"]], [["5", None, "5"]])
    # pairs: (0,1) {xyz,yzw} vs {xyz,yzq} = 1/3, (0,2) 1, (1,2) 1/3 -> 5/9
    assert three["pairwise_similarity"] == round(5 / 9, 4) and three["all_agree_share"] == 0.0  # a missing answer
    assert diversity([["only one"]], [["1"]]) is None


def test_summarize_reports_diversity_when_texts_given():
    from cotdistill.metrics import summarize

    rows = [{"correct": [True, True], "answers": ["num:1", "num:1"], "tokens": [3, 3], "truncated": [False, False],
             "texts": ["1 + 0 = 1", "1 + 0 = 1"]}]
    assert summarize(rows, [1])["diversity"]["all_agree_share"] == 1.0
    assert "diversity" not in summarize([{k: v for k, v in rows[0].items() if k != "texts"}], [1])
