"""compare.py: intervals over seeds and problems, paired and unpaired differences."""

import numpy as np

from cotdistill.compare import difference, interval


def _outcomes(accs, n=500, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([(rng.random(n) < a).astype(float) for a in accs])


def test_a_gain_that_holds_seed_by_seed_is_significant_only_when_paired():
    """Seeds spread the students by 30 points; the second student is 4 points better on every seed
    (it was warm-started from the first with the same seed)."""
    base = [0.45, 0.60, 0.75]
    rng = np.random.default_rng(1)
    a = np.stack([(rng.random(500) < x).astype(float) for x in base])
    b = a.copy()
    for row in b:  # flip 20 wrong answers to right: +4 points on each seed
        wrong = np.flatnonzero(row == 0)[:20]
        row[wrong] = 1
    paired = difference(b, a, paired=True)
    unpaired = difference(b, a, paired=False)
    assert paired["difference"] == 0.04 and paired["verdict"] == "better" and paired["ci95"][0] > 0
    assert unpaired["verdict"] == "no significant difference"


def test_interval_holds_seed_and_problem_variance():
    one_seed = interval(_outcomes([0.7]))
    spread = interval(_outcomes([0.6, 0.7, 0.8]))
    assert one_seed[0] < 0.7 < one_seed[1] and one_seed[1] - one_seed[0] < 0.1  # problems only: about +-4 points
    assert spread[1] - spread[0] > one_seed[1] - one_seed[0]  # seeds widen it


def test_no_difference_inside_the_noise():
    a, b = _outcomes([0.70, 0.72, 0.71], seed=2), _outcomes([0.71, 0.70, 0.72], seed=3)
    d = difference(a, b)
    assert d["verdict"] == "no significant difference" and d["ci95"][0] < 0 < d["ci95"][1]


def test_bonferroni_level_widens_the_interval():
    """A gain just past the 95% bound is not significant at the 1 - 0.05/12 level of 12 comparisons."""
    rng = np.random.default_rng(5)
    a = np.stack([(rng.random(500) < 0.6).astype(float) for _ in range(3)])
    b = a.copy()
    for row in b:
        row[np.flatnonzero(row == 0)[:6]] = 1  # +1.2 points on every seed
    d95 = difference(b, a, paired=True)
    strict = difference(b, a, paired=True, level=1 - 0.05 / 12)
    assert strict["level"] == 1 - 0.05 / 12 and "ci95" not in strict
    assert strict["ci"][0] < d95["ci95"][0] and strict["ci"][1] > d95["ci95"][1]
