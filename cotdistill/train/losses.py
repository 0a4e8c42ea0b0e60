"""Distillation losses as pure tensor functions (no trainer, no I/O); each docstring holds its formula,
and tests/test_losses.py checks each against hand-computed values at several temperatures.

Sum-then-divide: every loss returns sums over trained positions divided by ``num_items`` (the number
of trained tokens in the whole optimizer step, as transformers passes ``num_items_in_batch``), so
gradient accumulation of 4 batches of 2 gives the gradient of one batch of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A cached top-k whose probabilities sum to within this of 1 covers the distribution: the remainder
# is float rounding, not a tail. (Tempering a 1e-7 rounding tail at T=4 would give it 1.8% mass.)
EMPTY_TAIL = 1e-6


def teacher_buckets(top_lp: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the k + 1 buckets at T = 1: the cached top-k tokens and one tail bucket
    holding 1 - sum(top-k). top_lp [..., k]; invalid entries (no cache) get zero mass."""
    neg = torch.finfo(torch.float32).min
    lp = top_lp.float().masked_fill(~valid, neg)
    covered = torch.exp(torch.logsumexp(lp.double(), -1))
    tail_mass = (1 - covered).clamp(min=0)
    tail = torch.where(tail_mass > EMPTY_TAIL, torch.log(tail_mass.clamp(min=EMPTY_TAIL)), torch.full_like(tail_mass, neg))
    return torch.cat([lp, tail.float().unsqueeze(-1)], -1)


def student_buckets(log_probs: torch.Tensor, top_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The student's log-probabilities (log_softmax at T = 1, [..., V]) gathered into the same k + 1
    buckets as the teacher's: its mass on the teacher's top-k ids, and the exact mass on every other
    token (a logsumexp over the rest of the vocabulary, not 1 - sum, so no cancellation)."""
    neg = torch.finfo(torch.float32).min
    ids = top_ids.clamp(min=0)
    top = log_probs.gather(-1, ids).masked_fill(~valid, neg)
    in_top = torch.zeros_like(log_probs, dtype=torch.int32).scatter_add_(-1, ids, valid.int()) > 0
    tail = torch.logsumexp(log_probs.masked_fill(in_top, neg), -1)
    return torch.cat([top, tail.unsqueeze(-1)], -1)


def tempered_kl(log_q: torch.Tensor, log_p: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(q_T || p_T) over the last dim, where x_T = softmax(log x / T): each bucket is tempered as
    one token, for teacher and student alike, so the KL is 0 where the student equals the teacher at
    every T. Buckets with zero teacher mass contribute 0."""
    lq = torch.log_softmax(log_q / temperature, -1)
    lp = torch.log_softmax(log_p / temperature, -1)
    q = lq.exp()
    return (q * (lq - lp)).masked_fill(q == 0, 0).sum(-1)


def kd_loss(logits, labels, top_ids, top_lp, alpha: float, temperature: float, num_items=None):
    """Hinton's soft-target loss on cached top-k teacher logprobs:

        loss = alpha * T^2 * sum_pos KL(q_T || p_T) / N + (1 - alpha) * sum_pos CE / N

    q, p: teacher and student on k + 1 buckets (top-k ids + tail), tempered bucket-wise at T; KL
    only where the cache has an entry (an appended end-of-turn token has none). N = ``num_items``
    (trained tokens of the whole optimizer step), default the trained tokens of this batch.
    With k = V this is the full-vocabulary KL(softmax(z_t/T) || softmax(z_s/T)).

    logits [B,L,V]; labels [B,L] (-100 = no loss); top_ids/top_lp [B,L,k] aligned with labels (id -1 =
    no teacher entry). Position t of the targets is predicted by logits at t-1.
    Returns (loss, ce per trained token, kl per KD position), the last two detached, for logging.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    tids, tlp = top_ids[:, 1:], top_lp[:, 1:]
    trained = labels != -100
    n = num_items if num_items is not None else trained.sum()
    n = torch.as_tensor(n, device=logits.device, dtype=torch.float32).clamp(min=1)
    ce_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                             reduction="sum")
    ce_mean = ce_sum.detach() / trained.sum().clamp(min=1)
    valid = tids >= 0
    pos = trained & valid[..., 0]
    if alpha == 0 or not pos.any():
        return (1 - alpha) * ce_sum / n, ce_mean, torch.zeros((), device=logits.device)
    log_q = teacher_buckets(tlp[pos], valid[pos])
    log_p = student_buckets(torch.log_softmax(logits[pos], -1), tids[pos], valid[pos])
    kl = tempered_kl(log_q, log_p, temperature)
    t2 = temperature * temperature
    loss = alpha * t2 * kl.sum() / n + (1 - alpha) * ce_sum / n
    return loss, ce_mean, kl.detach().mean()
