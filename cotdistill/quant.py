"""Weight-only integer quantization of a student through torchao: post-training (PTQ) and quantization-aware
training (QAT, with any distillation loss).

Scheme (torchao's symmetric per-output-channel mapping): every ``nn.Linear`` weight except the output head
(tied to the embeddings in small Llamas) gets ``scale = max|w_row| / ((qmax - qmin) / 2)``, codes
``q = clamp(round(w / scale), qmin, qmax)``: int8 [-128, 127] (scale max / 127.5) through
``Int8WeightOnlyConfig``, int4 [-8, 7] (scale max / 7.5) through ``IntxWeightOnlyConfig(int4, PerAxis(0))``;
activations stay in floating point (W8A32 / W4A32). torchao 0.18's packed int4 layouts need CUDA
(tile_packed_to_4d) or the mslk kernels (plain), so int4 runs unpacked on CPU (int8 storage, dequantized in
the matmul); its shipped bytes count two codes per byte.

- ``ptq(model_dir, out_dir, bits)``: quantize a trained student once. ``out_dir`` holds the dequantized
  weights (``q * scale``, what a weight-only kernel computes with, so vLLM and every evaluator serve it
  unchanged) and ``quantized/model.safetensors`` (int codes + fp32 scales: the bytes a deployment ships).
- QAT: ``prepare_qat(model, bits)`` swaps those linears for torchao's ``FakeQuantizedLinear`` (the forward
  uses the quantized values, gradients pass straight through to the fp32 master weights, except where torchao
  clipped: a row's positive maximum lands on +127.5 / +7.5, rounds past the top code and gets no gradient while
  it stays the maximum; the state dict keeps its keys); train with the KD loss as usual;
  ``finalize_qat(model, bits)`` swaps them back to ``nn.Linear`` holding the quantized values of the trained
  master weights, and returns the codes that ship.
- ``to_serving(model, bits)``: the linears computing on torchao's quantized weights (int8: torch's weight-only
  int8 matmul), for decode timing on CPU, where vLLM has no weight-only integer path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from cotdistill.errors import CotdistillError

SKIP = ("lm_head",)


def _torchao():
    try:
        import torchao.quantization as tq
    except ImportError:
        raise CotdistillError("quantization needs torchao: pip install 'torchao>=0.18'") from None
    return tq


def check_bits(bits: int) -> None:
    if bits not in (4, 8):
        raise CotdistillError(f"quantization bits {bits}: use 8 or 4")


def weight_config(bits: int):
    """torchao's weight-only config for ``bits``, per output channel, symmetric."""
    check_bits(bits)
    tq = _torchao()
    if bits == 8:
        return tq.Int8WeightOnlyConfig()
    return tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=tq.PerAxis(0))


def fake_quant_config(bits: int):
    check_bits(bits)
    from torchao.quantization.qat import IntxFakeQuantizeConfig

    return IntxFakeQuantizeConfig(torch.int8 if bits == 8 else torch.int4, granularity="per_channel",
                                  is_symmetric=True)


def _quantized_here(mod: nn.Module, fqn: str) -> bool:
    return isinstance(mod, nn.Linear) and not any(fqn.endswith(s) for s in SKIP)


def quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchao's per-output-channel symmetric codes (int8 storage) and fp32 scales of one weight matrix."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w.detach().float())
    _torchao().quantize_(lin, weight_config(bits), filter_fn=lambda m, fqn: True)
    t = lin.weight
    if t.zero_point is not None and bool(t.zero_point.any()):
        raise CotdistillError(f"torchao int{bits}: expected a symmetric mapping (zero point 0)")
    return t.qdata.to(torch.int8), t.scale.reshape(-1).float()


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    q, scale = quantize(w, bits)
    return (q.float() * scale[:, None]).to(w.dtype)


def linear_weights(model: nn.Module):
    for name, mod in model.named_modules():
        if _quantized_here(mod, name):
            yield name, mod


def prepare_qat(model: nn.Module, bits: int) -> int:
    """Swap the quantizable linears for torchao's FakeQuantizedLinear; returns how many."""
    tq = _torchao()
    from torchao.quantization.qat import QATConfig

    n = sum(1 for _ in linear_weights(model))
    if not n:
        raise CotdistillError("qat: the model has no nn.Linear layers to quantize")
    tq.quantize_(model, QATConfig(weight_config=fake_quant_config(bits), step="prepare"), filter_fn=_quantized_here)
    return n


def finalize_qat(model: nn.Module, bits: int) -> dict:
    """Back to plain ``nn.Linear`` layers whose weights hold the quantized values of the trained fp32 master
    weights; returns the deployable codes (``quantize_in_place``)."""
    tq = _torchao()
    from torchao.quantization.qat import QATConfig
    from torchao.quantization.qat.linear import FakeQuantizedLinear

    if any(isinstance(m, FakeQuantizedLinear) for m in model.modules()):
        tq.quantize_(model, QATConfig(step="convert"), filter_fn=lambda m, fqn: isinstance(m, FakeQuantizedLinear))
    return quantize_in_place(model, bits)


def quantize_in_place(model: nn.Module, bits: int) -> dict:
    """Quantize every quantizable linear from its current (fp32) weights: the weights become ``q * scale`` (what a
    weight-only kernel computes with) and the returned deployable state holds the int codes + scales (everything
    else as is), with its size in bytes, codes packed at ``bits`` per weight (int4: two per byte). The codes are
    taken from the fp32 weights, never from the dequantized ones: torchao's mapping (scale max / 127.5) does not
    map ``q * scale`` back to ``q``."""
    state, size, seen = {}, 0, set()
    quantized = {f"{n}.weight": mod for n, mod in linear_weights(model)}
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:  # a tied tensor (embeddings = head): stored once
            continue
        seen.add(t.data_ptr())
        if name in quantized:
            q, sc = quantize(t, bits)
            with torch.no_grad():
                quantized[name].weight.copy_((q.float() * sc[:, None]).to(t.dtype))
            state[name + ".q"], state[name + ".scale"] = q.contiguous(), sc.contiguous()
            size += (q.numel() * bits + 7) // 8 + sc.numel() * 4
        else:
            state[name] = t.detach().clone().contiguous()
            size += t.numel() * t.element_size()
    return {"state": state, "bytes": size, "layers": len(quantized)}


def save_quantized(deploy: dict, out: Path, bits: int, source: str) -> dict:
    """Write the deployable int codes + scales (``quantized/model.safetensors``, from ``quantize_in_place``) and
    ``cotdistill_quant.json`` next to the saved model whose weights hold their dequantized values."""
    from safetensors.torch import save_file

    # a subfolder: loaders (vLLM, transformers) read every top-level *.safetensors as the model's weights
    (Path(out) / "quantized").mkdir(parents=True, exist_ok=True)
    save_file(deploy["state"], str(Path(out) / "quantized" / "model.safetensors"))
    info = {"bits": bits, "scheme": "weight-only, symmetric per output channel (torchao)", "source": source,
            "quantized_bytes": deploy["bytes"], "quantized_layers": deploy["layers"]}
    (Path(out) / "cotdistill_quant.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def ptq(model_dir: str | Path, out_dir: str | Path, bits: int = 8) -> dict:
    """Post-training quantization of a trained model directory into ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    deploy = quantize_in_place(model, bits)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out))
    return save_quantized(deploy, out, bits, f"ptq of {model_dir}")


def to_serving(model: nn.Module, bits: int = 8) -> nn.Module:
    """Quantize the linears in place with torchao (int8: its weight-only int8 matmul); returns the model."""
    _torchao().quantize_(model, weight_config(bits), filter_fn=_quantized_here)
    return model
