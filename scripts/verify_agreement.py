"""Agreement with a careful human on realistic completions of real models: cotdistill's verifier (plus
the filter's format check, i.e. what the filter keeps) vs raw math-verify, per category.

    python scripts/verify_agreement.py [data/verify_cases.jsonl]

Each case says whether a careful human would keep the completion as a correct training trace
(``correct``). Raw math-verify: ``verify(parse(gold), parse(completion))`` with its default
extraction. Prints a table and, last, one JSON line {"categories": {name: {n, cotdistill, math_verify}}}.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from math_verify import parse, verify

from cotdistill.verify import check_format, verify_completion


def cotdistill_keeps(c: dict) -> bool:
    v = verify_completion(c["completion"], c["gold"])
    return v.correct is True and ("format_ok" not in c or check_format(c["completion"], c["think"]) is None)


def math_verify_keeps(c: dict) -> bool:
    gold = c["gold"] if "$" in c["gold"] or "\\boxed" in c["gold"] else f"${c['gold']}$"
    try:
        return bool(verify(parse(gold), parse(c["completion"])))
    except Exception:  # a parser crash is a miss for the comparison
        return False


def main(path: str) -> dict:
    cases = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    stats: dict[str, dict] = defaultdict(lambda: {"n": 0, "cotdistill": 0, "math_verify": 0})
    misses = []
    for c in cases:
        s = stats[c["category"]]
        s["n"] += 1
        ours, theirs = cotdistill_keeps(c), math_verify_keeps(c)
        s["cotdistill"] += ours == c["correct"]
        s["math_verify"] += theirs == c["correct"]
        if ours != c["correct"]:
            misses.append((c["category"], c["note"] or c["completion"][:60]))
    print(f"{'category':<14} {'n':>3} {'cotdistill':>11} {'math-verify':>12}")
    for name, s in stats.items():
        print(f"{name:<14} {s['n']:>3} {s['cotdistill']:>5}/{s['n']:<5} {s['math_verify']:>6}/{s['n']:<5}")
    tot = {k: sum(s[k] for s in stats.values()) for k in ("n", "cotdistill", "math_verify")}
    print(f"{'all':<14} {tot['n']:>3} {tot['cotdistill']:>5}/{tot['n']:<5} {tot['math_verify']:>6}/{tot['n']:<5}")
    for m in misses:
        print("cotdistill disagrees with the human on:", m)
    out = {"categories": {k: {x: v[x] for x in ("n", "cotdistill", "math_verify")} for k, v in stats.items()},
           "all": tot}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(
        sys.argv[1]
        if len(sys.argv) > 1
        else str(Path(__file__).resolve().parent.parent / "data" / "verify_cases.jsonl")
    )
