"""Verification pool (hard per-item limit) and the `cotdistill verify` audit command."""

import json

import pytest
from conftest import read_jsonl, write_jsonl
from typer.testing import CliRunner

from cotdistill.cli import app
from cotdistill.verify_pool import VerifyPool


def test_pool_matches_in_process_and_keeps_indices():
    from cotdistill.verify import verify_completion

    items = [{"completion": f"\\boxed{{{i}}}", "gold": str(i if i % 3 else i + 1)} for i in range(20)]
    with VerifyPool(workers=2, timeout_s=30) as pool:
        got = {idx: v for idx, v, _ in pool.imap(items)}
    assert sorted(got) == list(range(20))
    for i, it in enumerate(items):
        assert got[i] == verify_completion(it["completion"], it["gold"])


def test_hard_time_limit_kills_and_replaces_worker(monkeypatch):
    import cotdistill.verify as v

    def slow(completion, gold, *a):  # stands for a verifier stuck in C code (signals can't stop it)
        import time
        if completion == "hang":
            time.sleep(60)
        return v.Verdict(extracted=completion, correct=True, reason="match")

    monkeypatch.setattr(v, "verify_completion", slow)  # inherited by forked workers
    items = [{"completion": "ok", "gold": "1"}, {"completion": "hang", "gold": "1"}, {"completion": "ok", "gold": "1"}]
    with VerifyPool(workers=1, timeout_s=1.0) as pool:
        got = {idx: (verdict, dt) for idx, verdict, dt in pool.imap(items)}
    assert got[1][0].reason == "timeout" and got[1][0].correct is None and 1.0 <= got[1][1] < 5
    assert got[0][0].correct and got[2][0].correct


def test_a_dead_worker_is_an_item_error_and_is_replaced(monkeypatch):
    """The OOM killer (here: the item kills its own worker) ends one item, not the run."""
    import cotdistill.verify as v

    def dies(completion, gold, *a):
        import os
        import signal
        if completion == "oom":
            os.kill(os.getpid(), signal.SIGKILL)
        return v.Verdict(extracted=completion, correct=True, reason="match")

    monkeypatch.setattr(v, "verify_completion", dies)
    items = [{"completion": c, "gold": "1"} for c in ("ok", "oom", "ok", "oom", "ok", "ok", "ok")]
    with VerifyPool(workers=1, timeout_s=30) as pool:
        got = {idx: verdict for idx, verdict, _ in pool.imap(items)}
    assert sorted(got) == list(range(7))
    assert [got[i].correct for i in range(7)] == [True, None, True, None, True, True, True]
    assert got[1].reason == "error" and "the verify worker died (exit code -9" in got[1].detail


def test_apps_tests_in_one_json_string_get_the_time_of_every_test():
    from cotdistill.sandbox import Limits
    from cotdistill.verify_pool import _code_budget

    tests = json.dumps({"inputs": ["1\n"] * 6, "outputs": ["1"] * 6})
    assert _code_budget({"tests": tests}) == 6 * (Limits().wall_s + 1.0)


def test_a_verifier_exception_keeps_its_message(monkeypatch):
    import cotdistill.verify as v

    def broken(completion, gold, *a):
        if completion == "bad":
            raise KeyError("rg_entry")
        return v.Verdict(extracted=completion, correct=True, reason="match")

    monkeypatch.setattr(v, "verify_completion", broken)
    with VerifyPool(workers=1, timeout_s=30) as pool:
        got = {
            idx: verdict
            for idx, verdict, _ in pool.imap([{"completion": "bad", "gold": "1"}, {"completion": "ok", "gold": "1"}])
        }
    assert got[0].reason == "error" and got[0].correct is None and got[0].detail == "KeyError: 'rg_entry'"
    assert got[1].correct and got[1].detail is None


def test_pathological_input_is_bounded():
    with VerifyPool(workers=1, timeout_s=8) as pool:
        (idx, verdict, dt), = list(pool.imap([{"completion": "\\boxed{10^{10^{10}}}", "gold": "10^{10^{10}}+1"}]))
    assert dt < 9 and verdict.correct in (None, False)


def test_audit_command_writes_fields_and_keeps_others(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": 1, "completion": "so \\boxed{4}", "gold": "4"},
        {"id": 2, "completion": "Final answer: 5", "gold": 4},
        {"id": 3, "completion": "I think 4", "gold": "4"},
        {"id": 4, "completion": "\\boxed{4}", "gold": None},
    ])
    r = CliRunner().invoke(app, ["verify", str(src), "--output", str(tmp_path / "out.jsonl"), "--workers", "1"])
    assert r.exit_code == 0, r.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [o["id"] for o in out] == [1, 2, 3, 4]
    assert [(o["extracted"], o["correct"]) for o in out] == [("4", True), ("5", False), (None, False), ("4", None)]
    summary = json.loads(r.stdout)
    assert (summary["correct"], summary["incorrect"], summary["cannot_tell"]) == (1, 2, 1)


@pytest.mark.parametrize("line,expect", [
    ({"completion": "x"}, "line 2: missing field 'gold'"),
    ({"gold": "1"}, "line 2: missing field 'completion'"),
    ({"completion": 3, "gold": "1"}, "line 2: field 'completion' must be a string"),
])
def test_audit_bad_lines_name_line_and_field(tmp_path, line, expect):
    src = write_jsonl(tmp_path / "in.jsonl", [{"completion": "a", "gold": "1"}, line])
    r = CliRunner().invoke(app, ["verify", str(src), "-o", str(tmp_path / "out.jsonl")])
    assert r.exit_code == 2 and expect in r.stderr and not (tmp_path / "out.jsonl").exists()
