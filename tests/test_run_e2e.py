"""The embedded default, end to end and for real (slow): the shipped teacher (data/teacher, trained
by scripts/train_teacher.py) generates traces through vLLM at temperature 1, the filter verifies
them, TRL trains fresh students, vLLM evaluates them on held-out problems, the report is written.

A smaller cut of data/configs/run_demo.yaml with fixed seeds: fewer problems, two students (SFT on
the filtered traces and the answers-only baseline). It asserts what the run is for: the student
distilled from chain-of-thought traces clearly beats the same student trained on answers alone."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from cotdistill.config import RunConfig, load_config
from cotdistill.run import run

pytestmark = pytest.mark.slow

SMALL = ["generate.source.limit=1000", "generate.sampling.n=2", "eval.benchmarks.0.source.limit=200"]


def test_small_run_distilled_beats_answers_only(tmp_path):
    cfg = load_config(RunConfig, ROOT / "data/configs/run_demo.yaml", [f"output_dir={tmp_path / 'run'}", *SMALL])
    out = run(cfg, skip=["unfiltered", "train:logit_kd", "train:sft_unfiltered"])
    root = tmp_path / "run"
    gen = json.loads((root / "generate" / "summary.json").read_text())
    assert gen["traces"] == 2000
    rep = json.loads((root / "filter" / "filter_report.json").read_text())
    assert 0 < rep["kept"] < rep["traces"]  # temperature 1: some traces were wrong or duplicates, some kept

    d = out["distillation"]
    results = json.loads((root / "eval" / "results.json").read_text())
    assert results["distillation"] == d and set(results["models"]) == {"teacher", "sft_filtered", "answers_only"}
    acc = {n: m["accuracy"] for n, m in d["models"].items()}
    print("accuracy:", acc, "targets:", d["targets"])
    assert acc["teacher"] >= 0.9
    assert acc["sft_filtered"] >= acc["answers_only"] + 0.10
    assert d["targets"]["gain_over_answers_only"]["met"]
    md = (root / "report" / "report.md").read_text()
    assert "### Distillation on `digit_chain`" in md and "answers_only" in md
    assert set(out["stage_seconds"]) == {"student_init", "generate", "filter", "answers_only", "train:sft_filtered",
                                         "train:answers_only", "eval", "report"}
