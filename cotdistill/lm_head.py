"""The output head as a function of the final hidden states, so that losses and teacher scoring can
compute logits a chunk of tokens at a time: [chunk, V] instead of [B, L, V] (at V = 152k, one fp32 logits
tensor of 16k tokens is 10 GB, and a KD loss makes several of them).

    out, hidden = final_hidden(model, input_ids=ids, attention_mask=att)   # logits of the last token only
    head = head_fn(model)                                                  # head(hidden[..., :]) == logits

A leaf module: torch only; the trainers and the logits stage import it.
"""

from __future__ import annotations

import torch

from cotdistill.errors import CotdistillError


def _inner(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_fn(model):
    """z = head(h) for final hidden states h, with the model's final logit soft-capping (Gemma 2) applied."""
    inner = _inner(model)
    head = inner.get_output_embeddings()
    cap = getattr(inner.config.get_text_config(), "final_logit_softcapping", None)

    weight = getattr(head, "weight", None)

    def fn(h: torch.Tensor) -> torch.Tensor:
        if weight is not None and h.dtype != weight.dtype and not torch.is_autocast_enabled(h.device.type):
            h = h.to(weight.dtype)  # a bf16 teacher whose last hidden state comes out in fp32 (its final norm)
        z = head(h)
        return torch.tanh(z / cap) * cap if cap else z
    return fn


def final_hidden(model, **inputs):
    """Forward with the logits of the last position only; returns (output, final hidden states [B, L, d])."""
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    return out, out.hidden_states[-1]


def check_head(model, what: str) -> None:
    """Chunking computes logits as head(final hidden state); refuse a model whose forward does more (a logit
    scale, a second head) instead of training it on other logits than its own."""
    inner = _inner(model)
    param = next(inner.parameters())
    ids = torch.arange(1, 9, device=param.device).unsqueeze(0) % max(2, inner.config.get_text_config().vocab_size)
    was_training = inner.training
    inner.eval()
    try:
        with torch.no_grad():
            out = inner(input_ids=ids, output_hidden_states=True)
            z = head_fn(inner)(out.hidden_states[-1])
    finally:
        inner.train(was_training)
    if out.hidden_states is None or not torch.allclose(z.float(), out.logits.float(), rtol=1e-3, atol=1e-3):
        raise CotdistillError(f"{what}: this model's logits are not its output head applied to the last hidden state "
                              f"(a logit scale?), so they cannot be computed in chunks; set loss_chunk_tokens: 0")
