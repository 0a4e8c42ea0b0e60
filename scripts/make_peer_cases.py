"""Collect the test cases of math-verify, lighteval, TRL and open-r1 (gold, completion, expected verdict) into
data/peer_cases.jsonl, so that scripts/verify_agreement.py can measure cotdistill's verifier against its peers on
their own cases.

    python scripts/make_peer_cases.py MATH_VERIFY_CHECKOUT LIGHTEVAL_CHECKOUT TRL_CHECKOUT OPEN_R1_CHECKOUT

Each argument is a git checkout (or a folder with the same tests/ layout). Only the cases are taken, as data: every
``@pytest.mark.parametrize("gold,pred,expected", [...])`` table (literal entries only) of the files below, plus the
literal completion/solution pairs of the TRL and open-r1 accuracy-reward tests, read with ``ast`` (nothing of
theirs is imported or run). Cases whose test asks for a setting a default verifier does not use are kept apart by
``setting`` (a precision other than 6, set-relation comparison, a non-English language, expression-only or
latex-only extraction); scripts/verify_agreement.py reports them per setting. Each line names its source file
and line. The four projects are Apache-2.0 (lighteval, TRL, open-r1) or MIT (math-verify); the cases are their
authors' work.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "peer_cases.jsonl"

MATH_VERIFY = ["tests/test_all.py", "tests/test_numina_cases.py", "tests/test_open_thoughts.py",
               "tests/test_boxed.py", "tests/test_strict.py", "tests/test_string_extraction.py",
               "tests/test_yujianll.py"]
LIGHTEVAL = ["tests/unit/metrics/test_extractive_match.py"]


def _kwargs_of_call(fn: ast.FunctionDef) -> dict:
    """The settings the test passes to its compare helper: match_types, precision, strict, ..."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("compare_strings", "verify", "parse"):
            out = {}
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    out[kw.arg] = ast.unparse(kw.value)
            if len(node.args) >= 3 and isinstance(node.args[2], ast.Name):
                out.setdefault("language", node.args[2].id)
            if len(node.args) >= 4 and isinstance(node.args[3], ast.Name):
                out.setdefault("match_types", node.args[3].id)
            return out
    return {}


def _setting(names: list[str], row: tuple, kwargs: dict, test: str) -> str:
    values = dict(zip(names, row))
    match = values.get("match_type", kwargs.get("match_types", ["latex", "expr"]))
    lang = str(values.get("language", "ENGLISH"))
    if "NativeLetters" in str(match) or "abc" in test:
        base = "letters"
    elif "latex" in match and "expr" in match:
        base = "default"
    elif "latex" in match:
        base = "latex_only"
    else:
        base = "expr_only"
    if not lang.endswith("ENGLISH"):
        return f"{base}:language"
    precision = values.get("precision", kwargs.get("precision", 6))
    if precision != 6:
        return f"{base}:precision={precision}"
    if values.get("allow_set_relation_comp") or kwargs.get("allow_set_relation_comp") is True:
        return f"{base}:set_relation"
    if kwargs.get("strict") is False or values.get("strict") is False:
        return f"{base}:not_strict"
    return base


def parametrized(path: Path, rel: str, project: str) -> list[dict]:
    tree = ast.parse(path.read_text())
    cases = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("parametrize")):
                continue
            names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
            if not {"gold", "pred", "expected"} <= set(names):
                continue
            kwargs = _kwargs_of_call(fn)
            for elt in dec.args[1].elts:
                try:
                    row = ast.literal_eval(elt)
                except ValueError:
                    continue  # computed entries are skipped: only literal cases are data
                if isinstance(row, dict) or not isinstance(row, tuple):
                    continue
                v = dict(zip(names, row))
                if not isinstance(v["gold"], str) or not isinstance(v["pred"], str):
                    continue
                cases.append({"source": f"{project}:{rel}:{elt.lineno}", "test": fn.name,
                              "setting": _setting(names, row, kwargs, fn.name), "gold": v["gold"],
                              "completion": v["pred"], "correct": bool(v["expected"])})
    return cases


def reward_pairs(path: Path, rel: str, project: str) -> list[dict]:
    """accuracy_reward tests: literal ``completion = [[{"content": ...}], ...]`` and ``solution = [...]`` lists
    followed by an assertion on the rewards (1.0 correct, 0.0 wrong)."""
    tree = ast.parse(path.read_text())
    cases = []
    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_accuracy_reward")):
            continue
        lits = {}
        for node in fn.body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                try:
                    lits[node.targets[0].id] = (ast.literal_eval(node.value), node.lineno)
                except ValueError:
                    pass
        comps = next((v for k, v in lits.items() if k.startswith("completion")), None)
        sols = next((v for k, v in lits.items() if k.startswith("solution")), None)
        if comps is None or sols is None:
            continue
        src = ast.unparse(fn)
        expected = 1.0 if "correct_answer" in fn.name else 0.0 if "wrong_answer" in fn.name else None
        if expected is None:
            continue
        for comp, sol in zip(comps[0], sols[0]):
            cases.append({"source": f"{project}:{rel}:{comps[1]}", "test": fn.name, "setting": "default",
                          "gold": sol, "completion": comp[0]["content"], "correct": expected == 1.0})
        assert "rewards" in src
    return cases


def main(argv: list[str]) -> None:
    mv, le, trl, r1 = (Path(a) for a in argv)
    cases = []
    for rel in MATH_VERIFY:
        cases += parametrized(mv / rel, rel, "math-verify")
    for rel in LIGHTEVAL:
        cases += parametrized(le / rel, rel, "lighteval")
    cases += reward_pairs(trl / "tests/test_rewards.py", "tests/test_rewards.py", "trl")
    cases += reward_pairs(r1 / "tests/test_rewards.py", "tests/test_rewards.py", "open-r1")
    seen: dict[tuple, dict] = {}
    kept = []
    for c in cases:  # lighteval's tables and math-verify's overlap: one line per (gold, completion, setting)
        key = (c["gold"], c["completion"], c["setting"])
        if key in seen:
            first = seen[key]
            if c["source"].split(":")[0] != first["source"].split(":")[0]:
                first.setdefault("also", []).append(c["source"])
        else:
            seen[key] = c
            kept.append(c)
    OUT.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in kept))
    by = {}
    for c in kept:
        by[c["setting"]] = by.get(c["setting"], 0) + 1
    print(json.dumps({"cases": len(kept), "from": len(cases), "settings": by}))


if __name__ == "__main__":
    main(sys.argv[1:])
