"""Agreement with a careful human on realistic completions: cotdistill's verifier (plus the filter's format check
where a case has ``format_ok``, i.e. what the filter keeps) vs raw math-verify, per category.

    python scripts/verify_agreement.py [CASES.jsonl ...]

Default cases: data/verify_cases.jsonl (35 written by hand from real models' output) and
data/verify_agreement.jsonl (scripts/make_verify_cases.py: R1-distill, QwQ, OpenThoughts and GSM8K shapes around
issue #22's answer families, and the ways completions go wrong around a right answer). Each case says whether a
careful human keeps the completion as a correct trace (``correct``) and why (``note``). Raw math-verify:
``verify(parse(gold), parse(completion))`` with its default extraction. Prints a table, then every case where the
two verifiers disagree with the reason from the case's note (marked when cotdistill is the one that is wrong),
and, last, one JSON line {"categories": {name: {n, cotdistill, math_verify}}, "all": ..., "disagreements": n}.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from math_verify import parse, verify

from cotdistill.verify import check_format, verify_completion

DATA = Path(__file__).resolve().parent.parent / "data"


def cotdistill_keeps(c: dict) -> bool:
    v = verify_completion(c["completion"], c["gold"], choices=c.get("choices"))
    return v.correct is True and ("format_ok" not in c or check_format(c["completion"], c["think"]) is None)


def math_verify_keeps(c: dict) -> bool:
    gold = c["gold"] if "$" in c["gold"] or "\\boxed" in c["gold"] else f"${c['gold']}$"
    try:
        return bool(verify(parse(gold), parse(c["completion"])))
    except Exception:  # a parser crash is a miss for the comparison
        return False


def main(paths: list[str]) -> dict:
    cases = [json.loads(x) for p in paths for x in Path(p).read_text().splitlines() if x.strip()]
    for c in cases:  # data/peer_cases.jsonl (scripts/make_peer_cases.py): the peers' own cases, by setting
        c.setdefault("category", c.get("setting", "-"))
        c.setdefault("note", c.get("source"))
        c.setdefault("think", False)
    stats: dict[str, dict] = defaultdict(lambda: {"n": 0, "cotdistill": 0, "math_verify": 0})
    split = []
    for c in cases:
        s = stats[c["category"]]
        s["n"] += 1
        ours, theirs = cotdistill_keeps(c), math_verify_keeps(c)
        s["cotdistill"] += ours == c["correct"]
        s["math_verify"] += theirs == c["correct"]
        if ours != theirs or ours != c["correct"]:
            split.append((c, ours, theirs))
    print(f"{'category':<14} {'n':>3} {'cotdistill':>11} {'math-verify':>12}")
    for name, s in stats.items():
        print(f"{name:<14} {s['n']:>3} {s['cotdistill']:>5}/{s['n']:<5} {s['math_verify']:>6}/{s['n']:<5}")
    tot = {k: sum(s[k] for s in stats.values()) for k in ("n", "cotdistill", "math_verify")}
    print(f"{'all':<14} {tot['n']:>3} {tot['cotdistill']:>5}/{tot['n']:<5} {tot['math_verify']:>6}/{tot['n']:<5}")
    print(f"\n{len(split)} cases where the verifiers disagree (human label, cotdistill, math-verify: why):")
    for c, ours, theirs in split:
        label = "keep" if c["correct"] else "drop"
        wrong = "  <-- cotdistill is wrong" if ours != c["correct"] else ""
        tail = c["completion"].replace("\n", " ")[-70:]
        print(f"  [{c['category']}/{c.get('family', '-')}] {label}: ours {'keep' if ours else 'drop'}, math-verify "
              f"{'keep' if theirs else 'drop'}: {c['note'] or '-'} | ...{tail}{wrong}")
    out = {"categories": {k: {x: v[x] for x in ("n", "cotdistill", "math_verify")} for k, v in stats.items()},
           "all": tot, "disagreements": len(split),
           "cotdistill_false_accepts": sum(1 for c, o, _ in split if o and not c["correct"])}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:] or [str(DATA / "verify_cases.jsonl"), str(DATA / "verify_agreement.jsonl")])
