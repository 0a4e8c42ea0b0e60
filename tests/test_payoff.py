"""Deployment payoff (cotdistill/payoff.py): sizes from the safetensors files, and real vLLM serving
measurements of two tiny models in their own processes, with ratios against the first."""

import pytest

from cotdistill.errors import CotdistillError
from cotdistill.payoff import measure, size_on_disk


def test_size_on_disk_counts_every_parameter_once(tiny_model, tiny_student, tmp_path):
    from transformers import AutoModelForCausalLM

    for d in (tiny_model, tiny_student):
        m = AutoModelForCausalLM.from_pretrained(d)
        s = size_on_disk(d)
        assert s["params"] == m.num_parameters()  # tied embeddings: saved once, counted once
        assert s["bytes_on_disk"] >= 4 * s["params"]  # fp32 tensors plus the safetensors header
    with pytest.raises(CotdistillError, match="no \\*.safetensors files"):
        size_on_disk(tmp_path)


@pytest.mark.slow
def test_measure_serves_each_model_and_reports_ratios_to_the_first(tiny_model, tiny_student):
    msgs = [[{"role": "user", "content": f"Compute {i} + {i}."}] for i in range(4)]
    rows = measure([str(tiny_model), str(tiny_student)], msgs, batch=4, max_tokens=8, repeats=2, progress=False)
    teacher, student = rows
    assert len(teacher["runs"]) == len(student["runs"]) == 2
    for r in rows:
        assert r["ttft_ms"] > 0 and r["decode_tok_s_batch1"] > 0 and r["decode_tok_s_batch4"] > 0
        assert r["serving_peak_mib"] > 0
        assert r["served_dtype"] in ("float32", "bfloat16", "float16")
    # weights + KV cache, by hand from each model's config (batch 4 x max_model_len 256 cached tokens)
    import json

    for r, d in zip(rows, (tiny_model, tiny_student)):
        c = json.loads((d / "config.json").read_text())
        kv = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * (c["hidden_size"] // c["num_attention_heads"])
        assert r["kv_bytes_per_token"] == kv * r["dtype_bytes"]
        assert r["model_mib_batch4"] == pytest.approx(
            (r["params"] + kv * 4 * 256) * r["dtype_bytes"] / 2**20, abs=1e-3
        )
    assert student["model_memory_ratio"] == pytest.approx(teacher["model_mib_batch4"] / student["model_mib_batch4"],
                                                          rel=1e-2)
    assert teacher["compression"] == teacher["speedup_batch4"] == 1.0
    assert student["compression"] == pytest.approx(teacher["params"] / student["params"], rel=1e-3)
    assert student["compression"] > 1
    assert student["speedup_batch4"] == pytest.approx(student["decode_tok_s_batch4"] / teacher["decode_tok_s_batch4"],
                                                      rel=1e-2)
