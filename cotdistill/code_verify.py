"""Code answers: the completion's final program, run against the problem's tests in the sandbox.

    verify_code(completion, [{"input": "2 3\\n", "output": "5"}, {"assert": "assert add(2, 3) == 5"}])

The program is the last fenced block tagged ``python`` (``py``, ``python3``) after the reasoning; an
untagged block counts only when no block is tagged python, and a block in another language never runs.
Tests, in ``problem.metadata["tests"]``:
- ``{"input": ..., "output": ...}``: the program reads ``input`` on stdin; its output must equal
  ``output`` token by token (whitespace and line breaks are not compared, as most judges do);
- ``{"assert": ...}``: Python statements run after the program (assert-style, as MBPP/HumanEval), through a
  harness (``cotdistill.code_harness``) the program can neither end early nor fool with its own ``__eq__``: each
  assert's value is checked as plain data inside and compared outside, mostly against an expected value the
  sandbox never sees;
- APPS/TACO's ``{"inputs": [...], "outputs": [...]}`` is read as stdin/stdout tests.
The verdict names the first failing test and why (wrong output, error, timeout, memory, output limit).
"""

from __future__ import annotations

import json
import re

from cotdistill.answer_values import answer_body
from cotdistill.code_harness import judge, prepare
from cotdistill.records import Verdict
from cotdistill.sandbox import Limits, SandboxUnavailable, run_python, unavailable

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)```", re.S)
PYTHON_TAGS = {"python", "py", "python3", "py3"}


def extract_program(completion: str) -> str | None:
    """The final Python program of a completion, or None when it has none."""
    blocks = _FENCE.findall(answer_body(completion))
    tagged = [code for tag, code in blocks if tag.lower() in PYTHON_TAGS]
    untagged = [code for tag, code in blocks if not tag]
    code = (tagged or untagged or [None])[-1]
    return code if code and code.strip() else None


def normalise_tests(tests) -> list[dict]:
    """Tests in one shape: a list of {"input", "output"} or {"assert"} dicts; ValueError says what is wrong.
    A JSON string (APPS stores ``input_output`` as one) is decoded first."""
    if isinstance(tests, str) and tests.strip()[:1] in ("{", "["):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as e:
            raise ValueError(f"tests look like JSON but do not parse ({e.msg} at character {e.pos})") from None
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        ins, outs = tests["inputs"], tests["outputs"]
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise ValueError("'inputs' and 'outputs' must be lists of the same length")
        tests = [{"input": i, "output": o} for i, o in zip(ins, outs)]
    if isinstance(tests, str):
        tests = [{"assert": tests}]
    if not isinstance(tests, list) or not tests:
        raise ValueError("tests must be a non-empty list of {'input', 'output'} or {'assert'} objects")
    out = []
    for i, t in enumerate(tests):
        if isinstance(t, dict) and isinstance(t.get("assert"), str):
            out.append({"assert": t["assert"]})
        elif isinstance(t, dict) and "input" in t and "output" in t:
            out.append({"input": _text(t["input"]), "output": _text(t["output"])})
        else:
            raise ValueError(f"test {i}: needs 'input' and 'output', or 'assert'; got {str(t)[:60]!r}")
    return out


def _text(x) -> str:
    return "\n".join(map(str, x)) if isinstance(x, list) else str(x)


def _short(s: str, n: int = 60) -> str:
    s = s.strip()
    return repr(s if len(s) <= n else s[:n] + "...")


def _why(r, test: dict) -> str | None:
    """Why one run failed its test; None when it passed."""
    if r.status == "timeout":
        return "timed out"
    if r.status == "memory":
        return "ran out of memory"
    if r.status == "output_limit":
        return "printed more than the output limit"
    if r.status != "ok":
        last = (r.stderr.strip().splitlines() or ["(no error output)"])[-1]
        return f"exited with code {r.returncode}: {last[:120]}"
    if "output" in test and r.stdout.split() != test["output"].split():
        return f"expected {_short(test['output'])}, got {_short(r.stdout)}"
    return None


def verify_code(completion: str, tests, limits: Limits | None = None) -> Verdict:
    """Run the completion's program against every test, stopping at the first failure."""
    program = extract_program(completion)
    if program is None:
        return Verdict(extracted=None, correct=False, reason="no_answer", detail="no ```python block")
    try:
        tests = normalise_tests(tests)
    except ValueError as e:
        return Verdict(extracted=program, correct=None, reason="gold_unparseable", detail=str(e))
    off = unavailable()
    if off:
        return Verdict(extracted=program, correct=None, reason="error", detail=f"code verification is off: {off}")
    for i, t in enumerate(tests):
        kind = "assert" if "assert" in t else "stdin/stdout"
        try:
            if "assert" in t:
                try:
                    harness = prepare(t["assert"])
                except SyntaxError as e:
                    return Verdict(extracted=program, correct=None, reason="gold_unparseable",
                                   detail=f"test {i + 1}: not Python ({e.msg}, line {e.lineno})")
                r = run_python(program, "", limits or Limits(), files=harness.files, mode="tests")
                why = _why(r, {}) or judge(harness, r.records, limits or Limits())
            else:
                r = run_python(program, t["input"], limits or Limits())
                why = _why(r, t)
        except SandboxUnavailable as e:
            return Verdict(extracted=program, correct=None, reason="error", detail=f"code verification is off: {e}")
        if why:
            return Verdict(extracted=program, correct=False, reason="mismatch",
                           detail=f"test {i + 1} of {len(tests)} ({kind}): {why}")
    return Verdict(extracted=program, correct=True, reason="match", detail=f"{len(tests)} tests passed")
