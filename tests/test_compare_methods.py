"""scripts/compare_methods.py --smoke (slow): every distillation method of data/configs/run_methods.yaml
trains for 2 steps through `cotdistill run` (per-student inits, teacher_from, an ensemble of the two
shipped teachers, cached and live logits), vLLM evaluates every student, and the script prints its
table and, last, the JSON line with every method."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

METHODS = {"sft", "logit_kd", "kd", "gkd", "feature", "attention", "relation", "multi_teacher", "teacher_init",
           "temperature_schedule", "importance_weighting", "self_distillation", "progressive"}


def test_every_method_runs_two_steps_and_is_reported(tmp_path):
    out = tmp_path / "methods"
    p = subprocess.run([sys.executable, str(ROOT / "scripts/compare_methods.py"), "--smoke", f"output_dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(last["methods"]) == METHODS | {"assistant"} and last["methods"]["assistant"]["helper"]
    for name, r in last["methods"].items():
        assert r["steps"] == 2 and len(r["per_seed"]) == 1 and 0 <= r["mean"] <= 1, name
        assert r["s_per_step"] > 0 and r["peak_rss_growth_mib"] >= 0, name
        if name not in ("sft", "assistant"):
            assert set(r["vs_sft"]) == {"difference", "ci95", "verdict", "bonferroni"}, name
    assert 0 < last["teacher"] <= 1
    assert "temperature_schedule" in p.stdout.split("\n", 2)[0] or "method" in p.stdout
    # each student's wiring, read back from what it trained
    cfg = lambda n: (out / "students" / n / "seed0" / "config.yaml").read_text()
    assert "data/teacher_b" in cfg("multi_teacher") and "students/sft/seed0/final" in cfg("self_distillation")
    assert "students/assistant/seed0/final" in cfg("progressive")
    assert json.loads((out / "student_init/teacher_init/from_teacher/model/cotdistill_from_teacher.json").read_text())[
        "layers"
    ] == [0]
    log = [json.loads(x) for x in (out / "students/attention/seed0/trainer_log.jsonl").read_text().splitlines()]
    assert any("kd/attention" in h for h in log)
