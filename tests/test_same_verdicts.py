"""scripts/same_verdicts.py: two runs' distillation tables side by side; exit 1 when a verdict or a target
(mean or worst seed) differs, 2 when a run has no table."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def _run(folder, verdict: str, worst_met: bool = True):
    folder.mkdir()
    c = {"a": "sft_filtered", "b": "sft_unfiltered", "difference": 0.03, "ci95": [0.01, 0.05], "verdict": verdict}
    models = {n: {"accuracy": a, "per_seed": [{"seed": s, "accuracy": a} for s in (0, 1, 2)]}
              for n, a in (("sft_filtered", 0.85), ("sft_unfiltered", 0.82))}
    t = {"retention": {"met": True, "met_on_worst_seed": worst_met}}
    dist = {"models": models, "comparisons": [c], "targets": t, "all_targets_met": worst_met}
    (folder / "run.json").write_text(json.dumps({"distillation": dist}))
    return folder


def _call(*args):
    p = subprocess.run([sys.executable, str(ROOT / "scripts/same_verdicts.py"), *map(str, args)],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_same_verdicts_exit_0_and_both_columns(tmp_path):
    code, out, _ = _call(_run(tmp_path / "a", "better"), _run(tmp_path / "b", "better"), "--names", "x", "y")
    last = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and last["same_verdicts"] and last["differ"] == [] and last["runs"] == ["x", "y"]
    assert "| sft_filtered | 0.850 (0.850, 0.850, 0.850) | 0.850 (0.850, 0.850, 0.850) |" in out
    assert "+3.0 [+1.0, +5.0] better" in out


def test_a_changed_verdict_or_worst_seed_target_exits_1_naming_it(tmp_path):
    code, out, _ = _call(_run(tmp_path / "a", "better"), _run(tmp_path / "b", "no significant difference"))
    assert code == 1 and json.loads(out.strip().splitlines()[-1])["differ"] == ["sft_filtered - sft_unfiltered"]
    code, out, _ = _call(_run(tmp_path / "c", "better"), _run(tmp_path / "d", "better", worst_met=False))
    assert code == 1 and json.loads(out.strip().splitlines()[-1])["differ"] == ["target retention (worst seed)"]


def test_a_run_without_a_table_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = _call(_run(tmp_path / "a", "better"), tmp_path / "empty")
    assert code == 2 and err.strip().count("\n") == 0 and "no finished run here" in err
