"""Evaluation metrics (pure): pass@1 over n samples, unbiased pass@k, maj@k, confidence intervals.

    pass_at_k(n=8, c=3, k=4)          # 1 - C(n-c, k) / C(n, k)   (Chen et al., 2021)
    maj_at_k(answers, correct, k)     # majority vote over the first k samples; ties share credit
    wilson(0.6, 50) -> (lo, hi)       # 95% Wilson score interval
    bootstrap_ci(values, seed=0)      # 95% percentile bootstrap over problems
"""

from __future__ import annotations

import math
import random
from collections import Counter
from statistics import fmean


def pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def maj_at_k(answer_keys: list[str | None], correct: list[bool | None], k: int) -> float:
    """Score of the majority answer among the first k samples. Samples without an answer do not
    vote. A tie between m answers scores (number of correct tied answers) / m, the expected score
    of breaking the tie at random, rather than depending on sample order."""
    votes = Counter(a for a in answer_keys[:k] if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [a for a, c in votes.items() if c == top]
    right = {a for a, ok in zip(answer_keys[:k], correct[:k]) if a is not None and ok}
    return sum(a in right for a in tied) / len(tied)


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ci(
    values: list[float], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(fmean(values[rng.randrange(n)] for _ in range(n)) for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return (lo, hi)


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]


def diversity(texts: list[list[str]], answers: list[list[str | None]]) -> dict | None:
    """How varied a model's samples of the same problem are, so collapse shows beside accuracy; None with one
    sample per problem. Per problem, averaged over problems:

        distinct_n          unique word n-grams / all word n-grams over the problem's samples (n = 1, 2)
        pairwise_similarity mean Jaccard of the word 3-gram sets of every pair of samples (1: identical)
        all_agree_share     share of problems whose samples all give the same final answer (none missing)
    """
    rows = [(t, a) for t, a in zip(texts, answers) if len(t) > 1]
    if not rows:
        return None
    out = {}
    for n in (1, 2):
        vals = []
        for t, _ in rows:
            grams = [g for x in t for g in _ngrams(x.split(), n)]
            if grams:
                vals.append(len(set(grams)) / len(grams))
        out[f"distinct_{n}"] = round(fmean(vals), 4) if vals else None
    sims = []
    for t, _ in rows:
        sets = [set(_ngrams(x.split(), 3)) or {tuple(x.split())} for x in t]
        pairs = [(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets))]
        sims.append(fmean(len(sets[i] & sets[j]) / max(1, len(sets[i] | sets[j])) for i, j in pairs))
    out["pairwise_similarity"] = round(fmean(sims), 4)
    out["all_agree_share"] = round(fmean(float(None not in a and len(set(a)) == 1) for _, a in rows), 4)
    return out


def summarize(per_problem: list[dict], ks: list[int], ci: str = "bootstrap", seed: int = 0) -> dict:
    """per_problem: [{"correct": [bool|None]*n, "answers": [key|None]*n, "tokens": [int]*n,
    "truncated": [bool]*n, "texts": [str]*n (optional: diversity)}]. Returns every metric with a 95% interval."""
    n = min(len(p["correct"]) for p in per_problem)
    out: dict = {"problems": len(per_problem), "samples_per_problem": n}

    def with_ci(name: str, vals: list[float], binary: bool = False):
        mean = fmean(vals)
        lo, hi = wilson(mean, len(vals)) if (ci == "wilson" or binary) else bootstrap_ci(vals, seed=seed)
        out[name] = {"value": round(mean, 6), "ci95": [round(lo, 6), round(hi, 6)]}

    with_ci("pass@1", [sum(bool(c) for c in p["correct"][:n]) / n for p in per_problem], binary=n == 1)
    for k in ks:
        if 1 < k <= n:
            with_ci(f"pass@{k}", [pass_at_k(n, sum(bool(c) for c in p["correct"][:n]), k) for p in per_problem])
        if 1 < k <= n:
            with_ci(f"maj@{k}", [maj_at_k(p["answers"], p["correct"], k) for p in per_problem])
    samples = [
        (t, tr, c) for p in per_problem for t, tr, c in zip(p["tokens"][:n], p["truncated"][:n], p["correct"][:n])
    ]
    # over the samples written (problems skipped as longer than the context have none)
    out["mean_completion_tokens"] = round(fmean(s[0] for s in samples), 2) if samples else 0.0
    out["truncation_rate"] = round(fmean(float(s[1]) for s in samples), 6) if samples else 0.0
    out["cannot_tell_rate"] = round(fmean(float(s[2] is None) for s in samples), 6) if samples else 0.0
    if all("texts" in p for p in per_problem):
        out["diversity"] = diversity([p["texts"][:n] for p in per_problem], [p["answers"][:n] for p in per_problem])
    return out
