"""Weight-only quantization through torchao (cotdistill/quant.py): codes and scales against hand-computed
values, the straight-through gradient of QAT's fake-quantized linears, PTQ of a tiny model, int8/int4 serving,
and QAT through the trainers."""

import json

import pytest
import torch
from test_train import cfg as train_cfg

from cotdistill import train
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError
from cotdistill.quant import fake_quant, finalize_qat, linear_weights, prepare_qat, ptq, quantize, to_serving


def test_codes_and_scales_by_hand():
    w = torch.tensor([[1.0, -0.55, 0.26], [0.0, 0.01, -0.04]])
    q, s = quantize(w, 8)
    # torchao's symmetric mapping: scale = max|w_row| / ((127 - -128) / 2) = max / 127.5, codes in [-128, 127]
    assert torch.allclose(s, torch.tensor([1.0 / 127.5, 0.04 / 127.5]))
    # 1.0 * 127.5 = 127.5 -> 128 -> clamped to 127; -0.55 * 127.5 = -70.125 -> -70; 0.26 * 127.5 = 33.15 -> 33
    assert q[0].tolist() == [127, -70, 33]
    assert q[1].tolist()[:2] == [0, 32] and q[1, 2] in (-128, -127)  # 31.875 -> 32; -127.5 rounds either way
    q4, s4 = quantize(w, 4)  # int4: max / 7.5, codes in [-8, 7]
    assert torch.allclose(s4[0], torch.tensor(1.0 / 7.5)) and q4[0].tolist() == [7, -4, 2]  # -4.125, 1.95
    for bits in (8, 4):
        fq = fake_quant(w, bits)
        assert (fq - w).abs().max() <= quantize(w, bits)[1].max() / 2 + 1e-7
    # torchao's mapping does not return q * scale to q (the row maximum 127 / 127.5 gets a new scale): the codes
    # that ship are taken from the fp32 weights, so they must not be recomputed from saved dequantized weights
    assert not torch.equal(quantize(fake_quant(w, 8), 8)[1], quantize(w, 8)[1])
    with pytest.raises(CotdistillError, match="bits 3: use 8 or 4"):
        quantize(w, 3)


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_linears_quantize_forward_and_pass_the_gradient_straight_through(bits):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 4, bias=False))
    w = m[0].weight.detach().clone()
    assert prepare_qat(m, bits) == 1 and type(m[0]).__name__ == "FakeQuantizedLinear"
    assert list(m.state_dict()) == ["0.weight"]  # checkpoints keep their keys
    x = torch.randn(3, 6)
    y = m(x)
    assert torch.allclose(y, x @ fake_quant(w, bits).T, atol=1e-6)  # the forward sees the quantized weight
    y.sum().backward()
    # straight through: the rounding is invisible to the gradient, except where torchao's fake quantizer clipped
    # (w / scale beyond the code range before clamping: each row's positive maximum, +127.5 -> 128 > 127, gets none)
    q, s = quantize(w, bits)
    hi = 127 if bits == 8 else 7
    clipped = torch.round(w / s[:, None]) > hi
    want = torch.where(clipped, torch.zeros(4, 6), x.sum(0).expand(4, 6))
    assert torch.allclose(m[0].weight.grad, want)
    finalize_qat(m, bits)
    assert type(m[0]) is torch.nn.Linear and torch.equal(m[0].weight, fake_quant(w, bits))


def test_ptq_and_int8_serving(tiny_student, tmp_path):
    from transformers import AutoModelForCausalLM

    info = ptq(tiny_student, tmp_path / "q8", 8)
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "q8")
    ref = AutoModelForCausalLM.from_pretrained(tiny_student)
    fp32_linear = sum(mod.weight.numel() * 4 for _, mod in linear_weights(ref))
    assert info["quantized_layers"] == sum(1 for _ in linear_weights(m)) > 0
    from safetensors.torch import load_file

    shipped = load_file(str(tmp_path / "q8/quantized/model.safetensors"))
    for (name, a), (_, b) in zip(linear_weights(m), linear_weights(ref)):
        q, s = quantize(b.weight, 8)  # from the fp32 weights
        assert torch.equal(shipped[f"{name}.weight.q"], q) and torch.equal(shipped[f"{name}.weight.scale"], s)
        assert torch.allclose(a.weight, q.float() * s[:, None])  # saved weights are the shipped codes dequantized
    total_fp32 = sum(p.numel() * 4 for p in ref.parameters())
    assert info["quantized_bytes"] < total_fp32 - 0.7 * fp32_linear  # linears at 1 byte + scales
    assert (tmp_path / "q8/quantized/model.safetensors").exists()
    assert json.loads((tmp_path / "q8/cotdistill_quant.json").read_text())["bits"] == 8
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():  # the int8 kernel on the fp32 weights computes what the ptq'd (dequantized) model does
        want = m(input_ids=ids).logits
        served = to_serving(AutoModelForCausalLM.from_pretrained(tiny_student), 8)
        got = served(input_ids=ids).logits
    kinds = {type(mod.weight).__name__ for _, mod in linear_weights(served)}
    assert kinds == {"Int8Tensor"} and type(served.lm_head.weight).__name__ in ("Parameter", "Tensor")
    assert torch.allclose(got, want, atol=1e-3)  # the int8 kernel computes with the codes the file holds
    ref4 = AutoModelForCausalLM.from_pretrained(tiny_student)
    with torch.no_grad():
        for _, mod in linear_weights(ref4):
            mod.weight.copy_(fake_quant(mod.weight, 4))
        want4 = ref4(input_ids=ids).logits
        got4 = to_serving(AutoModelForCausalLM.from_pretrained(tiny_student), 4)(input_ids=ids).logits
    assert torch.allclose(got4, want4, atol=1e-3)


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_trains_and_leaves_quantized_weights(bits, tiny_student, tmp_path):
    summary = train.run(train_cfg(tiny_student, tmp_path, max_steps=4, qat={"bits": bits}))
    assert summary["qat"]["bits"] == bits and summary["steps"] == 4
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    shipped = load_file(f"{summary['final_model']}/quantized/model.safetensors")
    lo, hi = (-128, 127) if bits == 8 else (-8, 7)
    for name, mod in linear_weights(m):  # the served weights are the shipped codes, dequantized
        q, s = shipped[f"{name}.weight.q"], shipped[f"{name}.weight.scale"]
        assert lo <= int(q.min()) and int(q.max()) <= hi
        assert torch.allclose(mod.weight, q.float() * s[:, None], atol=1e-7)
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


def test_bench_quant_speed_smoke(tiny_student):
    """scripts/bench_quant_speed.py on a tiny model: one JSON line with int8 and int4 speed ratios."""
    import subprocess
    import sys

    from conftest import ROOT

    p = subprocess.run([sys.executable, str(ROOT / "scripts/bench_quant_speed.py"), str(tiny_student), "--batch", "2",
                        "--max-tokens", "3", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for bits in (8, 4):
        assert out[f"int{bits}_speedup_batch1"] > 0 and out[f"int{bits}_tok_s_batch2"] > 0
    bad = subprocess.run([sys.executable, str(ROOT / "scripts/bench_quant_speed.py"), "/nonexistent"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "config.json missing" in bad.stderr
