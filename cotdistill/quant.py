"""Weight-only integer quantization of a student: post-training (PTQ) and quantization-aware training
(QAT, with any distillation loss).

Scheme: every ``nn.Linear`` weight except the output head (tied to the embeddings in small Llamas) is
quantized symmetrically per output channel: ``scale = max|w_row| / qmax``, ``q = clamp(round(w / scale),
-qmax, qmax)`` with ``qmax = 2^(bits-1) - 1``; activations stay in floating point (W8A32 / W4A32).

- ``ptq(model_dir, out_dir, bits)``: quantize a trained student once. ``out_dir`` holds the dequantized
  weights (``q * scale``, what a weight-only kernel computes with, so vLLM and every evaluator serve it
  unchanged) and ``quantized/model.safetensors`` (int codes + fp32 scales: the bytes a deployment ships).
- QAT: ``prepare_qat(model, bits)`` puts a fake-quant parametrization on those weights (forward uses the
  quantized values, gradients pass straight through to the fp32 master weights); train with the KD loss
  as usual; ``finalize_qat(model)`` leaves the quantized values in the weights.
- ``Int8Linear`` serves the int8 codes with torch's weight-only int8 matmul (``_weight_int8pack_mm``) for
  timing on CPU, where vLLM has no int8 weight-only path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from cotdistill.errors import CotdistillError

SKIP = ("lm_head",)


def qmax(bits: int) -> int:
    if bits not in (4, 8):
        raise CotdistillError(f"quantization bits {bits}: use 8 or 4")
    return 2 ** (bits - 1) - 1


def quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric codes (int8 storage) and fp32 scales."""
    m = qmax(bits)
    scale = (w.detach().abs().amax(dim=1).float() / m).clamp(min=1e-12)
    q = torch.clamp(torch.round(w.detach().float() / scale[:, None]), -m, m).to(torch.int8)
    return q, scale


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    q, scale = quantize(w, bits)
    return (q.float() * scale[:, None]).to(w.dtype)


class FakeQuant(nn.Module):
    """Parametrization: the forward pass sees the quantized weight; the gradient reaches the fp32
    weight unchanged (straight-through estimator)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w):
        return w + (fake_quant(w, self.bits) - w).detach()


def linear_weights(model: nn.Module):
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and not any(name.endswith(s) for s in SKIP):
            yield name, mod


def prepare_qat(model: nn.Module, bits: int) -> int:
    from torch.nn.utils import parametrize

    n = 0
    for _, mod in linear_weights(model):
        parametrize.register_parametrization(mod, "weight", FakeQuant(bits))
        n += 1
    if not n:
        raise CotdistillError("qat: the model has no nn.Linear layers to quantize")
    return n


def finalize_qat(model: nn.Module) -> None:
    from torch.nn.utils import parametrize

    for _, mod in linear_weights(model):
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)


def quantized_state(model: nn.Module, bits: int) -> tuple[dict, int]:
    """The deployable state: int codes + scales for quantized weights, everything else as is; and its
    size in bytes with codes packed at ``bits`` per weight (4-bit: two per byte)."""
    state, size, seen = {}, 0, set()
    quantized = {f"{n}.weight" for n, _ in linear_weights(model)}
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:  # a tied tensor (embeddings = head): stored once
            continue
        seen.add(t.data_ptr())
        if name in quantized:
            q, s = quantize(t, bits)
            state[name + ".q"], state[name + ".scale"] = q.contiguous(), s.contiguous()
            size += (q.numel() * bits + 7) // 8 + s.numel() * 4
        else:
            state[name] = t.contiguous()
            size += t.numel() * t.element_size()
    return state, size


def save_quantized(model: nn.Module, out: Path, bits: int, source: str) -> dict:
    """Write the deployable int codes + scales (``quantized/model.safetensors``) and ``cotdistill_quant.json``
    next to a saved model whose linear weights already hold the quantized values."""
    from safetensors.torch import save_file

    state, size = quantized_state(model, bits)
    # a subfolder: loaders (vLLM, transformers) read every top-level *.safetensors as the model's weights
    (Path(out) / "quantized").mkdir(parents=True, exist_ok=True)
    save_file({k: v.clone() for k, v in state.items()}, str(Path(out) / "quantized" / "model.safetensors"))
    info = {"bits": bits, "scheme": "weight-only, symmetric per output channel", "source": source,
            "quantized_bytes": size, "quantized_layers": sum(1 for _ in linear_weights(model))}
    (Path(out) / "cotdistill_quant.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def ptq(model_dir: str | Path, out_dir: str | Path, bits: int = 8) -> dict:
    """Post-training quantization of a trained model directory into ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        for _, mod in linear_weights(model):
            mod.weight.copy_(fake_quant(mod.weight, bits))
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out))
    return save_quantized(model, out, bits, f"ptq of {model_dir}")


class Int8Linear(nn.Module):
    """A linear layer computing with int8 weight codes (torch's weight-only int8 matmul, CPU and CUDA)."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        q, s = quantize(lin.weight, 8)
        self.register_buffer("q", q)
        self.register_buffer("scale", s.to(lin.weight.dtype))
        self.bias = lin.bias

    def forward(self, x):
        shape = x.shape
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.q, self.scale)
        y = y.reshape(*shape[:-1], -1)
        return y + self.bias if self.bias is not None else y


def to_int8_serving(model: nn.Module) -> nn.Module:
    """Swap the quantizable linears for Int8Linear (in place); returns the model."""
    for name, mod in list(linear_weights(model)):
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], Int8Linear(mod))
    return model
