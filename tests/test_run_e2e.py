"""The embedded default, end to end and for real (slow): the shipped teacher (data/teacher, trained
by scripts/train_teacher.py) generates traces through vLLM, the filter verifies them, TRL trains
fresh students over two seeds, vLLM evaluates them on held-out problems, the report is written.

A smaller cut of data/configs/run_demo.yaml: the demo's traces, two students (SFT on the filtered
traces and the answers-only baseline), seeds 0 and 1, 200 held-out problems. It asserts the demo's main conclusion on
every seed, not on a mean: each distilled seed beats every answers-only seed by 10 points or more,
and the difference is significant."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from cotdistill.config import RunConfig
from cotdistill.loading import load_config
from cotdistill.run import run

pytestmark = pytest.mark.slow

# The demo's own training data (4,000 problems x 4 samples): with less (1,000 x 2 was tried) a student
# sees too few distinct traces in its 1,200 steps and seed 1 stays on the task's learning plateau
# (0.156), which says the cut no longer matches the demo, not that distillation fails. Cut: no GKD /
# unfiltered students, two seeds, 200 held-out problems.
SMALL = ["eval.benchmarks.0.source.limit=200", "seeds=[0,1]"]


def test_small_run_distilled_beats_answers_only_on_every_seed(tmp_path):
    cfg = load_config(RunConfig, ROOT / "data/configs/run_demo.yaml", [f"output_dir={tmp_path / 'run'}", *SMALL])
    out = run(cfg, skip=["unfiltered", "train:gkd", "train:sft_unfiltered"])
    root = tmp_path / "run"
    gen = json.loads((root / "generate" / "summary.json").read_text())
    assert gen["traces"] == 16000
    rep = json.loads((root / "filter" / "filter_report.json").read_text())
    assert 0 < rep["kept"] < rep["traces"]  # temperature > 1: some traces were wrong or duplicates, some kept

    d = out["distillation"]
    results = json.loads((root / "eval" / "results.json").read_text())
    assert results["distillation"] == d
    assert set(results["models"]) == {
        "teacher",
        "sft_filtered@0",
        "sft_filtered@1",
        "answers_only@0",
        "answers_only@1",
    }
    seeds = {n: [s["accuracy"] for s in m["per_seed"]] for n, m in d["models"].items()}
    print("per seed:", seeds, "targets:", d["targets"])
    assert d["teacher_accuracy"] >= 0.9
    assert len(seeds["sft_filtered"]) == 2 and len(seeds["answers_only"]) == 2
    assert min(seeds["sft_filtered"]) >= max(seeds["answers_only"]) + 0.10
    g = d["targets"]["gain_over_answers_only"]
    assert g["met"] and g["met_on_worst_seed"] and g["comparison"]["verdict"] == "better"
    md = (root / "report" / "report.md").read_text()
    assert "### Distillation on `digit_chain`" in md and "(s1)" in md
    assert set(out["stage_seconds"]) == {"student_init@0", "student_init@1", "generate", "filter", "answers_only",
                                         "train:sft_filtered@0", "train:sft_filtered@1", "train:answers_only@0",
                                         "train:answers_only@1", "eval", "report"}
