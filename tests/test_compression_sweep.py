"""scripts/compression_sweep.py --smoke: the sweep (2 sizes, 2 steps, 1 seed) runs end to end through a
real run and real vLLM serving, and prints its JSON line (the figures mean nothing at this size)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_compression_sweep_smoke(tmp_path):
    p = subprocess.run([sys.executable, "scripts/compression_sweep.py", "--smoke", f"output_dir={tmp_path / 'sweep'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    names = [r["name"] for r in out["sizes"]]
    assert sorted(names) == ["sft-h128l1", "sft-h64l1"]
    for r in out["sizes"]:
        assert r["compression"] > 1 and r["params"] > 0 and len(r["retention_per_seed"]) == 1
        assert r["decode_speedup"] > 0 and r["memory_ratio"] > 0
    assert out["sizes"][0]["compression"] < out["sizes"][1]["compression"]  # sorted by compression
    for png in ("retention_vs_compression.png", "speedup_vs_compression.png"):
        assert (tmp_path / "sweep/report" / png).stat().st_size > 0
    assert sorted(out["ptq"]) == ["logit_kd_ptq8-h128l1", "logit_kd_ptq8-h64l1", "ptq4-h128l1", "ptq4-h64l1",
                                  "ptq8-h128l1", "ptq8-h64l1"]
    assert sorted(out["qat"]) == ["logit_kd_qat8"]
    for name, r in {**out["ptq"], **out["qat"]}.items():
        assert len(r["retention_per_seed"]) == 1
        assert r["quantized_bytes"] < r["fp32_bytes"], name
    # each PTQ student against the model it quantized, from the eval's paired comparisons
    assert out["ptq"]["ptq4-h64l1"]["vs"]["than"] == "sft-h64l1"
    assert out["ptq"]["logit_kd_ptq8-h128l1"]["vs"]["than"] == "logit_kd-h128l1"
    # the KD arms at every size beside SFT's (the curves), each with its paired difference to SFT there
    assert list(out["curves"]) == ["sft", "logit_kd", "gkd"]
    for fam, rs in out["curves"].items():
        assert [r["size"] for r in rs] == ["h128l1", "h64l1"], fam
        for r in rs:
            assert len(r["retention_per_seed"]) == 1
            if fam != "sft":
                d = r["vs_sft"]
                assert d["than"] == f"sft-{r['size']}" and d["ci95"][0] <= d["difference"] <= d["ci95"][1]
                strict = d["bonferroni"]  # 4 comparisons here: level 1 - 0.05 / 4, an interval at least as wide
                assert strict["level"] == 0.9875 and strict["ci"][0] <= d["ci95"][0] <= d["ci95"][1] <= strict["ci"][1]
    assert out["ptq"]["ptq4-h64l1"]["quantized_bytes"] < out["ptq"]["ptq8-h64l1"]["quantized_bytes"]
    assert out["quant_speed"]["int8_speedup_batch1"] > 0
    report = (tmp_path / "sweep/report/report.md").read_text()
    assert "## Payoff" in report and "| sft-h64l1 |" in report and "| ptq4-h64l1 | ptq int4 | 4 |" in report
    assert "| logit_kd | h64l1 |" in report and "| gkd | h128l1 |" in report
    results = json.loads((tmp_path / "sweep/eval/results.json").read_text())
    assert {"teacher", "sft-h64l1", "ptq8-h64l1", "logit_kd_qat8", "logit_kd-h64l1", "gkd-h128l1",
            "quant_speed"} <= set(results["payoff"])
    assert json.loads((tmp_path / "sweep/payoff/payoff.json").read_text())["sizes"] == out["sizes"]
