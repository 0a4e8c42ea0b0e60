"""Weight-only quantization (cotdistill/quant.py): codes and scales against hand-computed values,
the straight-through gradient, PTQ of a tiny model, int8 serving kernel, and QAT through the trainers."""

import json

import pytest
import torch
from test_train import cfg as train_cfg

from cotdistill import train
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError
from cotdistill.quant import FakeQuant, Int8Linear, fake_quant, linear_weights, ptq, quantize, to_int8_serving


def test_codes_and_scales_by_hand():
    w = torch.tensor([[1.0, -0.55, 0.26], [0.0, 0.01, -0.04]])
    q, s = quantize(w, 8)
    assert torch.allclose(s, torch.tensor([1.0 / 127, 0.04 / 127]))
    # 1.0 * 127 = 127; -0.55 * 127 = -69.85 -> -70; 0.26 * 127 = 33.02 -> 33
    assert q[0].tolist() == [127, -70, 33] and q[1].tolist() == [0, 32, -127]  # 0.01 / (0.04 / 127) = 31.75 -> 32
    q4, s4 = quantize(w, 4)
    assert torch.allclose(s4[0], torch.tensor(1.0 / 7)) and q4[0].tolist() == [7, -4, 2]  # -3.85 -> -4, 1.82 -> 2
    for bits in (8, 4):
        fq = fake_quant(w, bits)
        assert (fq - w).abs().max() <= quantize(w, bits)[1].max() / 2 + 1e-7
        assert torch.equal(fake_quant(fq, bits), fq)  # quantized values are fixed points
    with pytest.raises(CotdistillError, match="bits 3: use 8 or 4"):
        quantize(w, 3)


def test_straight_through_gradient():
    w = torch.randn(4, 6, requires_grad=True)
    x = torch.randn(6)
    (FakeQuant(8)(w) @ x).sum().backward()
    assert torch.allclose(w.grad, x.expand(4, 6))  # the rounding is invisible to the gradient


def test_ptq_and_int8_serving(tiny_student, tmp_path):
    from transformers import AutoModelForCausalLM

    info = ptq(tiny_student, tmp_path / "q8", 8)
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "q8")
    ref = AutoModelForCausalLM.from_pretrained(tiny_student)
    fp32_linear = sum(mod.weight.numel() * 4 for _, mod in linear_weights(ref))
    assert info["quantized_layers"] == sum(1 for _ in linear_weights(m)) > 0
    for (_, a), (_, b) in zip(linear_weights(m), linear_weights(ref)):
        q, s = quantize(b.weight, 8)
        assert torch.allclose(a.weight, q.float() * s[:, None])  # saved weights are the dequantized codes
    total_fp32 = sum(p.numel() * 4 for p in ref.parameters())
    assert info["quantized_bytes"] < total_fp32 - 0.7 * fp32_linear  # linears at 1 byte + scales
    assert (tmp_path / "q8/quantized/model.safetensors").exists()
    assert json.loads((tmp_path / "q8/cotdistill_quant.json").read_text())["bits"] == 8
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        want = m(input_ids=ids).logits
        got = to_int8_serving(m)(input_ids=ids).logits
    assert any(isinstance(x, Int8Linear) for x in m.modules())
    assert torch.allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_trains_and_leaves_quantized_weights(bits, tiny_student, tmp_path):
    summary = train.run(train_cfg(tiny_student, tmp_path, max_steps=4, qat={"bits": bits}))
    assert summary["qat"]["bits"] == bits and summary["steps"] == 4
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    for _, mod in linear_weights(m):
        assert torch.allclose(fake_quant(mod.weight, bits), mod.weight, atol=1e-6)  # on the grid
    start = AutoModelForCausalLM.from_pretrained(tiny_student)
    moved = [
        (a.weight - b.weight).abs().max().item() for (_, a), (_, b) in zip(linear_weights(m), linear_weights(start))
    ]
    assert max(moved) > 0


def test_qat_refuses_lora_and_on_policy_methods(tiny_student, tmp_path):
    with pytest.raises(ValueError, match="qat: quantization-aware training runs with sft, logit_kd or kd"):
        TrainConfig.model_validate({"student": "x", "dataset_dir": "d", "output_dir": "o", "qat": {"bits": 8},
                                    "lora": {"r": 4}})
    with pytest.raises(ValueError, match="qat: quantization-aware training"):
        TrainConfig.model_validate({"method": "gkd", "teacher": "t", "student": "x", "dataset_dir": "d",
                                    "output_dir": "o", "qat": {"bits": 8}})
