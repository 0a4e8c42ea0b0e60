"""The whole pipeline, for real and small (slow): `cotdistill run` of the embedded default through every kind of
stage (a fresh student per seed, vLLM generation by the shipped teacher, the filter, the answers-only set, TRL SFT
and GKD, vLLM eval, the distillation table, the report), then the same command again skips every finished stage.

This is scripts/e2e_small.py --smoke. The demo's conclusion itself (each distilled seed beats every answers-only
seed by 10 points) is a measurement: `python scripts/e2e_small.py` checks it on a larger cut, `make demo` on the
whole demo."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def _script():
    spec = importlib.util.spec_from_file_location("e2e_small", ROOT / "scripts/e2e_small.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_stage_runs_and_a_second_run_skips_them(tmp_path, capfd):
    e2e = _script()
    root = tmp_path / "run"
    first = e2e.run_small(root, smoke=True)
    assert set(first["stage_seconds"]) == {"student_init@0", "generate", "filter", "answers_only",
                                           "train:sft_filtered@0", "train:gkd@0", "train:answers_only@0", "eval",
                                           "report"}
    gen = json.loads((root / "generate" / "summary.json").read_text())
    assert gen["traces"] == 400 and gen["complete"]
    rep = json.loads((root / "filter" / "filter_report.json").read_text())
    assert 0 < rep["kept"] < rep["traces"]  # temperature 1.5: some traces were wrong or duplicates, some kept
    results = json.loads((root / "eval" / "results.json").read_text())
    assert set(results["models"]) == {"teacher", "sft_filtered@0", "gkd@0", "answers_only@0"}
    assert results["distillation"]["teacher_accuracy"] == first["teacher"] >= 0.9
    assert set(first["per_seed"]) == {"teacher", "sft_filtered", "gkd", "answers_only"}
    gkd = (root / "students" / "gkd" / "seed0" / "config.yaml").read_text()
    assert "students/sft_filtered/seed0/final" in gkd  # warm-started from sft_filtered of the same seed
    md = (root / "report" / "report.md").read_text()
    assert "### Distillation on `digit_chain`" in md and (root / "report" / "accuracy_eval.png").exists()
    capfd.readouterr()
    again = e2e.run_small(root, smoke=True)
    assert again["per_seed"] == first["per_seed"] and again["stage_seconds"] == first["stage_seconds"]
    assert capfd.readouterr().err.count("done earlier") == len(first["stage_seconds"])
