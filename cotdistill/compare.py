"""Students vs teacher over seeds and problems: the run's distillation table.

Each student is trained once per seed and every model answers the same held-out problems, so a
model's accuracy varies with the seed (training) and with which problems were drawn (the test
set). Intervals come from a two-level bootstrap: resample the seeds, then the problems (the same
problem draw for every seed and for both sides of a comparison, since they answered the same set).
Students trained with the same seeds share initial weights and data order seed by seed, so their
difference is paired by seed (the seeds are resampled together). A difference whose interval
contains 0 is "no significant difference", never a win.

    table = distillation_table(students, results, outcomes, targets, benchmark)

``students``: model name (``<student>@<seed>``) -> (student, seed, data, method); ``results``: the eval
stage's results.json; ``outcomes``: model name -> per-problem correctness (same problem order for all).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cotdistill.results import EvalResults

REPS = 2000


def load_outcomes(eval_dir: Path, models: list[str], benchmark: str) -> dict[str, np.ndarray]:
    """Per-problem pass@1 (mean over samples) from each model's verdicts, in one problem order."""
    out = {}
    for m in models:
        f = Path(eval_dir) / m / benchmark / "verdicts.jsonl"
        if not f.exists():
            continue
        per: dict[str, list[float]] = {}
        for line in f.read_text().splitlines():
            if line.strip():
                v = json.loads(line)
                per.setdefault(v["problem_id"], []).append(1.0 if v.get("correct") else 0.0)
        out[m] = {pid: float(np.mean(x)) for pid, x in per.items()}
    if not out:
        return {}
    ids = sorted(set.intersection(*(set(v) for v in out.values())))
    return {m: np.array([v[i] for i in ids]) for m, v in out.items()}


def _draws(n_problems: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_problems, (REPS, n_problems))


def _seed_picks(n_seeds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, n_seeds, (REPS, n_seeds))


def _boot_means(m: np.ndarray, problems: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """m [seeds, problems]: REPS bootstrap means (seeds resampled by ``picks``, problems by ``problems``)."""
    per_seed = np.stack([row[problems].mean(1) for row in m])  # [S, REPS]
    return per_seed[picks, np.arange(REPS)[:, None]].mean(1)


def interval(m: np.ndarray, seed: int = 0) -> list[float]:
    b = _boot_means(m, _draws(m.shape[1], seed), _seed_picks(m.shape[0], seed))
    return [round(float(np.quantile(b, 0.025)), 4), round(float(np.quantile(b, 0.975)), 4)]


def difference(a: np.ndarray, b: np.ndarray, paired: bool = False, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) - mean(b) with its ``level`` interval (the key stays ``ci95`` at 0.95, else ``ci``);
    both answered the same problems. ``paired``: row i of a and of b share a seed (same initial
    weights and data order), so seeds are resampled together and a gain that holds seed by seed is
    not drowned by the spread between seeds. Testing m methods against one baseline, pass
    level = 1 - 0.05 / m (Bonferroni) for verdicts that hold jointly."""
    draws = _draws(a.shape[1], seed)
    pa = _seed_picks(a.shape[0], seed)
    pb = pa if paired else _seed_picks(b.shape[0], seed + 7)
    d = _boot_means(a, draws, pa) - _boot_means(b, draws, pb)
    tail = (1 - level) / 2
    lo, hi = float(np.quantile(d, tail)), float(np.quantile(d, 1 - tail))
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "no significant difference"
    key = "ci95" if level == 0.95 else "ci"
    return {"difference": round(float(a.mean() - b.mean()), 4), key: [round(lo, 4), round(hi, 4)],
            "verdict": verdict, "paired_by_seed": paired, **({"level": level} if level != 0.95 else {})}


def ratio(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict:
    """mean(a) / mean(b) with a 95% interval, seeds resampled together (row i of a and b share a seed) and
    problems together (both answered the same problems): retention of one arm against another."""
    draws, picks = _draws(a.shape[1], seed), _seed_picks(a.shape[0], seed)
    r = _boot_means(a, draws, picks) / np.maximum(_boot_means(b, draws, picks), 1e-12)
    return {"mean": round(float(a.mean() / max(b.mean(), 1e-12)), 4),
            "ci95": [round(float(np.quantile(r, 0.025)), 4), round(float(np.quantile(r, 0.975)), 4)],
            "per_seed": [round(float(x.mean() / max(y.mean(), 1e-12)), 4) for x, y in zip(a, b)]}


def _groups(students: dict, results: EvalResults, outcomes: dict, benchmark: str) -> tuple[dict, dict, float | None]:
    """Models grouped by student over their seeds: accuracy (mean over seeds), range, interval, retention; and
    each group's [seeds, problems] outcome matrix where every seed has per-problem outcomes; the teacher's accuracy."""
    groups: dict[str, dict] = {}
    for n, m in results.models.items():
        name, seed, data, method = students.get(n, (n, None, None, None))
        g = groups.setdefault(name, {"role": m.role, "data": data, "method": method, "per_seed": []})
        score = m.scores[benchmark].pass1
        g["per_seed"].append({"seed": seed, "model": n, "accuracy": score.value, "ci95": score.ci95})
    for g in groups.values():
        g["per_seed"].sort(key=lambda x: (x["seed"] is None, x["seed"]))
    teacher = groups["teacher"]["per_seed"][0]["accuracy"] if "teacher" in groups else None
    matrices = {}
    for name, g in groups.items():
        accs = [s["accuracy"] for s in g["per_seed"]]
        g["accuracy"] = round(float(np.mean(accs)), 4)
        g["range"] = [min(accs), max(accs)]
        names = [x["model"] for x in g["per_seed"]]
        if all(n in outcomes for n in names):
            matrices[name] = np.stack([outcomes[n] for n in names])
        # one model (the teacher, a single seed): its own interval, the one the report's accuracy table shows
        # (the same method and numbers in both tables); several seeds: seeds, then problems, resampled
        g["ci95"] = (g["per_seed"][0]["ci95"] if len(accs) == 1 else
                     interval(matrices[name]) if name in matrices else None)
        g["retention"] = round(g["accuracy"] / teacher, 4) if teacher else None
        g["worst_seed_retention"] = round(min(accs) / teacher, 4) if teacher else None
    return groups, matrices, teacher


class _Pairs:
    """Every pair of students compared (paired by seed where they share seeds), and the worst-seed difference."""

    def __init__(self, groups: dict, matrices: dict):
        self.groups, self.matrices = groups, matrices
        self.seeds = {n: [x["seed"] for x in g["per_seed"]] for n, g in groups.items()}
        names = [n for n in groups if n != "teacher"]
        self.comparisons = [{"a": a, "b": b, **difference(matrices[a], matrices[b], self.paired(a, b))}
                            for i, a in enumerate(names) for b in names[i + 1:] if a in matrices and b in matrices]

    def paired(self, a: str, b: str) -> bool:
        return self.seeds[a] == self.seeds[b] and None not in self.seeds[a]

    def worst(self, a: str, b: str) -> float:
        """The difference on the worst seed: seed by seed when paired, else a's lowest against b's highest."""
        acc = lambda n: [x["accuracy"] for x in self.groups[n]["per_seed"]]
        if self.paired(a, b):
            return round(min(x - y for x, y in zip(acc(a), acc(b))), 4)
        return round(min(acc(a)) - max(acc(b)), 4)

    def seeds_worse(self, a: str, b: str) -> list | None:
        """The seeds on which a's model is significantly worse than b's of the same seed (that seed's problems
        resampled; Bonferroni over the seeds, so a 3-seed run tests each at 1 - 0.05 / 3), or None when the two are
        not paired by seed or lack per-problem outcomes."""
        if not self.paired(a, b) or a not in self.matrices or b not in self.matrices:
            return None
        ma, mb, seeds = self.matrices[a], self.matrices[b], self.seeds[a]
        level = 1 - 0.05 / len(seeds)
        return [s for i, s in enumerate(seeds)
                if difference(ma[i:i + 1], mb[i:i + 1], level=level)["verdict"] == "worse"]

    def get(self, a: str, b: str) -> dict | None:
        """a - b, from the comparison made in either order."""
        for c in self.comparisons:
            if (c["a"], c["b"]) == (a, b):
                return {**c}
            if (c["a"], c["b"]) == (b, a):
                return {"a": a, "b": b, "difference": -c["difference"], "ci95": [-c["ci95"][1], -c["ci95"][0]],
                        "verdict": {"better": "worse", "worse": "better"}.get(c["verdict"], c["verdict"]),
                        "paired_by_seed": c["paired_by_seed"]}
        return None


def _targets(groups: dict, pairs: _Pairs, best: str | None, teacher: float | None, t) -> dict:
    """Each target the run checks, on the mean and on the worst seed."""
    out = {}
    if best and teacher:
        r = groups[best]
        out["retention"] = {"best": best, "value": r["retention"], "target": t.min_retention,
                            "met": r["retention"] >= t.min_retention, "worst_seed": r["worst_seed_retention"],
                            "met_on_worst_seed": r["worst_seed_retention"] >= t.min_retention}
    answers = [n for n, g in groups.items() if g["data"] == "answers_only"]
    if best and answers:
        a = max(answers, key=lambda n: groups[n]["accuracy"])
        gain, worst = round(groups[best]["accuracy"] - groups[a]["accuracy"], 4), pairs.worst(best, a)
        out["gain_over_answers_only"] = {"best": best, "value": gain, "target": t.min_gain_over_answers_only,
                                         "met": gain >= t.min_gain_over_answers_only - 1e-9, "worst_seed": worst,
                                         "met_on_worst_seed": worst >= t.min_gain_over_answers_only - 1e-9,
                                         "comparison": pairs.get(best, a)}
    unf = {g["method"]: n for n, g in groups.items() if g["data"] == "unfiltered"}
    same = [n for n, g in groups.items() if g["data"] == "filtered" and g["method"] in unf]
    if same and t.filtered_at_least_unfiltered:
        f = max(same, key=lambda n: groups[n]["accuracy"])
        u = unf[groups[f]["method"]]
        worst, c = pairs.worst(f, u), pairs.get(f, u)
        # "filtering does not hurt": missed only when the unfiltered student is significantly better
        met = c["verdict"] != "worse" if c else groups[f]["accuracy"] >= groups[u]["accuracy"]
        # on the worst seed alike: missed when some seed's filtered student is significantly worse than its
        # unfiltered twin (seeds_worse); None (not judged) without seed pairs and per-problem outcomes
        worse = pairs.seeds_worse(f, u)
        out["filtered_vs_unfiltered"] = {"filtered": f, "unfiltered": u,
                                         "value": round(groups[f]["accuracy"] - groups[u]["accuracy"], 4),
                                         "met": met, "worst_seed": worst,
                                         "met_on_worst_seed": None if worse is None else not worse,
                                         **({"seeds_worse": worse} if worse is not None else {}),
                                         "comparison": c}
    return out


def distillation_table(
    students: dict, results: EvalResults | dict, outcomes: dict[str, np.ndarray], targets, benchmark: str
) -> dict:
    groups, matrices, teacher = _groups(students, EvalResults.of(results), outcomes, benchmark)
    pairs = _Pairs(groups, matrices)
    distilled = {n: g for n, g in groups.items() if g["data"] == "filtered"}
    best = max(distilled, key=lambda n: distilled[n]["accuracy"]) if distilled else None
    out = _targets(groups, pairs, best, teacher, targets)
    return {"benchmark": benchmark, "teacher_accuracy": teacher, "models": groups, "best_distilled": best,
            "comparisons": pairs.comparisons, "targets": out,
            # a target counts as met when it holds on the mean and on the worst seed
            "all_targets_met": all(x["met"] and x["met_on_worst_seed"] is not False for x in out.values())
            if out else None,
            "interval": "95%, bootstrap over seeds then problems" if matrices else "95%, per model"}
