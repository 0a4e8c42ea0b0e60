"""scripts/compare_methods.py --smoke (slow): the seed gate trains and scores the base student of two seeds,
then every distillation method of data/configs/run_methods.yaml trains for 2 steps from that base through
`cotdistill run` (per-student inits, teacher_from, peers_from, an ensemble of the two shipped teachers,
cached and live logits), vLLM evaluates every student, and the script prints its table and, last, the
JSON line with every method."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

METHODS = {"sft", "logit_kd", "kd", "gkd", "feature", "attention", "relation", "multi_teacher", "teacher_init",
           "temperature_schedule", "importance_weighting", "self_distillation", "progressive",
           "mutual", "selective", "label_smoothing"}


def test_every_method_runs_two_steps_and_is_reported(tmp_path):
    out = tmp_path / "methods"
    p = subprocess.run([sys.executable, str(ROOT / "scripts/compare_methods.py"), "--smoke", f"output_dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    helpers = {"assistant", "base"}
    assert set(last["methods"]) == METHODS | helpers and all(last["methods"][h]["helper"] for h in helpers)
    assert [g["seed"] for g in last["gate"]["tried"]] == [0, 1] and last["gate"]["kept"] == [0, 1]
    assert (out / "gate/seed1/results.json").exists() and "warm start" in last["regime"]
    means = [r["mean"] for n, r in last["methods"].items() if n not in helpers]
    assert means == sorted(means, reverse=True)  # ranked
    for name, r in last["methods"].items():
        assert r["steps"] == 2 and len(r["per_seed"]) == 2 and 0 <= r["mean"] <= 1, name
        assert r["s_per_step"] > 0 and r["peak_rss_growth_mib"] >= 0, name
        assert set(r["diversity"]) >= {"pairwise_similarity", "all_agree_share"}, name
        if name not in ("sft", *helpers):
            lo, hi = r["vs_sft"]
            assert lo <= r["vs_sft_detail"]["difference"] <= hi, name
            assert set(r["vs_sft_detail"]) == {"difference", "ci95", "verdict", "bonferroni"}, name
    assert 0 < last["teacher"] <= 1
    assert "temperature_schedule" in p.stdout.split("\n", 2)[0] or "method" in p.stdout
    # each student's wiring, read back from what it trained
    cfg = lambda n: (out / "students" / n / "seed0" / "config.yaml").read_text()
    assert "data/teacher_b" in cfg("multi_teacher") and "students/base/seed0/final" in cfg("self_distillation")
    assert "gold_likelihood" in cfg("selective") and "label_smoothing: 0.1" in cfg("label_smoothing")
    assert "students/assistant/seed0/final" in cfg("progressive") and "students/base/seed0/final" in cfg("kd")
    assert "students/base/seed1/final" in cfg("mutual")  # the peer: the next seed's base
    assert json.loads((out / "student_init/teacher_init/from_teacher/model/cotdistill_from_teacher.json").read_text())[
        "layers"
    ] == [0]
    log = [json.loads(x) for x in (out / "students/attention/seed0/trainer_log.jsonl").read_text().splitlines()]
    assert any("kd/attention" in h for h in log)
