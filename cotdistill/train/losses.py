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
# relative precision of log-probs stored as float16 (`cotdistill logits` caches): half a unit in the last place
FP16_ROUNDING = 2.0 ** -11


def teacher_buckets(top_lp: torch.Tensor, valid: torch.Tensor, rounding: float = 0.0) -> torch.Tensor:
    """Log-probabilities of the k + 1 buckets at T = 1: the cached top-k tokens and one tail bucket
    holding 1 - sum(top-k). top_lp [..., k]; invalid entries (no cache) get zero mass. ``rounding``: the relative
    precision the log-probs were stored at (``FP16_ROUNDING`` for a float16 cache): leftover mass within what that
    rounding can make (sum p_i |lp_i| rounding, ~1e-4 in float16) is no tail either; tempered at T = 2 it would
    become ~1% of the mass."""
    neg = torch.finfo(torch.float32).min
    lp = top_lp.float().masked_fill(~valid, neg)
    covered = torch.exp(torch.logsumexp(lp.double(), -1))
    tail_mass = (1 - covered).clamp(min=0)
    noise = (lp.double().exp() * lp.double().abs().clamp(max=1e4) * rounding).sum(-1) if rounding else 0.0
    empty = torch.clamp(torch.as_tensor(noise, dtype=torch.float64, device=lp.device) * 2, min=EMPTY_TAIL)
    tail = torch.where(
        tail_mass > empty, torch.log(tail_mass.clamp(min=EMPTY_TAIL)), torch.full_like(tail_mass, neg)
    )
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


def kd_loss(logits, labels, top_ids, top_lp, alpha: float, temperature: float, num_items=None,
            rounding: float = 0.0):
    """Hinton's soft-target loss on cached top-k teacher logprobs:

        loss = alpha * T^2 * sum_pos KL(q_T || p_T) / N + (1 - alpha) * sum_pos CE / N

    q, p: teacher and student on k + 1 buckets (top-k ids + tail), tempered bucket-wise at T; KL
    only where the cache has an entry (an appended end-of-turn token has none). N = ``num_items``
    (trained tokens of the whole optimizer step), default the trained tokens of this batch.
    With k = V this is the full-vocabulary KL(softmax(z_t/T) || softmax(z_s/T)).

    logits [B,L,V]; labels [B,L] (-100 = no loss); top_ids/top_lp [B,L,k] aligned with labels (id -1 =
    no teacher entry). Position t of the targets is predicted by logits at t-1. ``rounding``: see teacher_buckets.
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
    log_q = teacher_buckets(tlp[pos], valid[pos], rounding)
    log_p = student_buckets(torch.log_softmax(logits[pos], -1), tids[pos], valid[pos])
    kl = tempered_kl(log_q, log_p, temperature)
    t2 = temperature * temperature
    loss = alpha * t2 * kl.sum() / n + (1 - alpha) * ce_sum / n
    return loss, ce_mean, kl.detach().mean()


def token_chunks(fn, tensors: list[torch.Tensor], chunk: int) -> tuple[torch.Tensor, ...]:
    """``fn`` over row chunks of per-token tensors (all [N, ...]), each chunk under activation checkpointing:
    its [chunk, V] intermediates are freed after the forward and recomputed in the backward, so peak memory
    is O(chunk * V) instead of O(N * V). ``fn`` returns per-token vectors ([chunk] each); they come back
    concatenated ([N] each), equal to ``fn`` on the whole tensors up to float summation order."""
    from torch.utils.checkpoint import checkpoint

    n = tensors[0].size(0)
    parts = []
    for s in range(0, max(n, 1), chunk):
        piece = [t[s:s + chunk] for t in tensors]
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in piece)
        parts.append(checkpoint(fn, *piece, use_reentrant=False) if grad else fn(*piece))
    return tuple(torch.cat(col) for col in zip(*parts))


def kd_loss_chunked(hidden, head, labels, top_ids, top_lp, alpha: float, temperature: float, num_items=None,
                    chunk: int = 512, rounding: float = 0.0):
    """``kd_loss`` from the final hidden states [B,L,d] and the output head (``z = head(h)``) instead of the
    logits, ``chunk`` trained tokens at a time (``token_chunks``): the same value and gradient, never a
    [B, L, V] tensor. Only trained positions are projected (the prompt's logits are never made)."""
    labels, tids, tlp = labels[:, 1:], top_ids[:, 1:], top_lp[:, 1:]
    trained = labels != -100
    h, lab, tids, tlp = hidden[:, :-1][trained], labels[trained], tids[trained], tlp[trained]
    n = num_items if num_items is not None else trained.sum()
    n = torch.as_tensor(n, device=hidden.device, dtype=torch.float32).clamp(min=1)

    def per_token(h, lab, tids, tlp):
        z = head(h).float()
        ce = F.cross_entropy(z, lab, reduction="none")
        valid = tids >= 0
        log_q = teacher_buckets(tlp, valid, rounding)
        log_p = student_buckets(torch.log_softmax(z, -1), tids, valid)
        return ce, torch.where(valid[:, 0], tempered_kl(log_q, log_p, temperature), torch.zeros_like(ce))

    ce, kl = token_chunks(per_token, [h, lab, tids, tlp], chunk)
    pos = tids[:, 0] >= 0 if tids.numel() else torch.zeros(0, dtype=torch.bool, device=hidden.device)
    ce_mean = ce.sum().detach() / trained.sum().clamp(min=1)
    if alpha == 0 or not pos.any():
        return (1 - alpha) * ce.sum() / n, ce_mean, torch.zeros((), device=hidden.device)
    loss = alpha * temperature * temperature * kl.sum() / n + (1 - alpha) * ce.sum() / n
    return loss, ce_mean, kl[pos].detach().mean()


def soft_target_per_token(z_s: torch.Tensor, z_teachers: list[torch.Tensor], labels: torch.Tensor,
                          teacher_weights, temperature: float, kind: str, beta: float, smoothing: float = 0.0):
    """Per-token terms of the live-teacher KD loss for one set of positions ([N, V] logits each):
    (CE of the label, D(q'_T, p_T) as in ``soft_target_loss`` before T^2 and weights, with q' the smoothed
    targets, the teachers' mixture entropy at T = 1, the student's entropy H(p) at T = 1). ``teacher_weights``:
    [K] or [K, N] (per token). Chunked by ``token_chunks`` in train/kd.py; each is [N]."""
    z_s = z_s.float()
    ce = F.cross_entropy(z_s, labels, reduction="none")
    log_q = smooth_targets(ensemble_log_probs(z_teachers, teacher_weights, temperature), smoothing)
    d = divergence(log_q, torch.log_softmax(z_s / temperature, -1), kind, beta)
    with torch.no_grad():
        lq1 = ensemble_log_probs(z_teachers, teacher_weights, 1.0) if temperature != 1.0 else log_q.detach()
        ent = -(lq1.exp() * lq1).sum(-1)
    return ce, d, ent, student_entropy(torch.log_softmax(z_s, -1))


# ---------------------------------------------------------------- live-teacher terms (train/kd.py)
def ensemble_log_probs(teacher_logits: list[torch.Tensor], weights, temperature: float) -> torch.Tensor:
    """The teachers' soft targets at temperature T, log q_T = log sum_i w_i softmax(z_i / T) with the
    weights normalised to sum 1 (one teacher: log_softmax(z / T)). Averaging probabilities, not
    logits, keeps every teacher's distribution a proper mixture component. ``weights``: one per teacher
    (a list, [K]) or per teacher and example/token (a tensor [K, *lead], normalised over K, e.g.
    ``selective_weights``), broadcast over the logits' remaining dims."""
    lps = torch.stack([torch.log_softmax(z.float() / temperature, -1) for z in teacher_logits])
    w = torch.as_tensor(weights, dtype=torch.float32, device=teacher_logits[0].device)
    w = w / w.sum(0, keepdim=True)
    w = w.view(*w.shape, *([1] * (lps.dim() - w.dim())))
    return torch.logsumexp(lps + w.clamp(min=1e-30).log(), 0)


def selective_weights(scores: torch.Tensor, prior, tau: float = 1.0) -> torch.Tensor:
    """Per-input teacher weights (selective multi-teacher transfer): w_i(x) = softmax_i(log p_i + s_i(x) / tau),
    with s_i(x) a score of teacher i on input x ([K, *lead], e.g. its mean log-likelihood of the gold trace) and
    p the fixed prior weights ([K]); tau -> infinity gives back the prior, tau -> 0 the best-scoring teacher."""
    prior = torch.as_tensor(prior, dtype=torch.float32, device=scores.device)
    prior = (prior / prior.sum()).view(-1, *([1] * (scores.dim() - 1)))
    return torch.softmax(prior.log() + scores.float() / tau, 0)


def smooth_targets(log_q: torch.Tensor, eps: float) -> torch.Tensor:
    """Label smoothing of the teacher's soft targets, a remedy for an over-confident teacher:
    log q' = log((1 - eps) q + eps / V), V = the last dim."""
    if eps == 0:
        return log_q
    import math

    return torch.logaddexp(log_q + math.log1p(-eps), torch.full_like(log_q, math.log(eps / log_q.size(-1))))


def student_entropy(log_p: torch.Tensor) -> torch.Tensor:
    """H(p) per position over the last dim: the confidence penalty (Pereyra et al. 2017) subtracts beta * H from
    the loss, so the student is not pushed to be more certain than its targets."""
    return -(log_p.exp() * log_p).masked_fill(log_p == float("-inf"), 0).sum(-1)


def divergence(log_q: torch.Tensor, log_p: torch.Tensor, kind: str = "forward", beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence over the last dim between the teacher q and the student p (log-probs):

        forward  KL(q || p)   mean-seeking (Hinton)
        reverse  KL(p || q)   mode-seeking (MiniLLM)
        jsd      beta * KL(q || m) + (1 - beta) * KL(p || m),  m = beta q + (1 - beta) p   (GKD's form)
    """
    q, p = log_q.exp(), log_p.exp()
    if kind == "forward":
        return (q * (log_q - log_p)).masked_fill(q == 0, 0).sum(-1)
    if kind == "reverse":
        return (p * (log_p - log_q)).masked_fill(p == 0, 0).sum(-1)
    if kind == "jsd":
        import math

        log_m = torch.logsumexp(torch.stack([log_q + math.log(beta), log_p + math.log(1 - beta)]), 0)
        kq = (q * (log_q - log_m)).masked_fill(q == 0, 0).sum(-1)
        kp = (p * (log_p - log_m)).masked_fill(p == 0, 0).sum(-1)
        return beta * kq + (1 - beta) * kp
    raise ValueError(f"divergence: unknown kind '{kind}' (forward, reverse, jsd)")


def gkd_jsd_chunked(hidden, head, teacher_hidden, teacher_head, labels, beta: float, num_items=None,
                    chunk: int = 512):
    """TRL's ``GKDTrainer.generalized_jsd_loss`` (temperature 1, as its ``compute_loss`` calls it; beta 0 = forward
    KL(teacher || student), 1 = reverse KL, else the JSD of the beta-mixture) from the final hidden states of the
    student (with grad) and the teacher (without) and their output heads, ``chunk`` trained tokens at a time
    (``token_chunks``): the same value and gradient, never a [B, L, V] tensor of either model. The sum over trained
    tokens is divided by ``num_items`` (TRL's gradient-accumulation count), else by the trained tokens."""
    labels = labels[:, 1:]
    trained = labels != -100
    h, th = hidden[:, :-1][trained], teacher_hidden[:, :-1][trained]
    n = num_items if num_items is not None else trained.sum()
    n = torch.as_tensor(n, device=hidden.device, dtype=torch.float32).clamp(min=1)
    kind = "forward" if beta == 0 else "reverse" if beta == 1 else "jsd"

    def per_token(h, th):
        log_p = torch.log_softmax(head(h).float(), -1)
        with torch.no_grad():
            log_q = torch.log_softmax(teacher_head(th).float(), -1)
        return (divergence(log_q, log_p, kind, beta),)

    (d,) = token_chunks(per_token, [h, th], chunk)
    return d.sum() / n


def soft_target_loss(student_logits, teacher_log_q_T, mask, temperature: float, kind: str = "forward",
                     beta: float = 0.5, weights=None, num_items=None) -> torch.Tensor:
    """Hinton's soft-target term on the full vocabulary:

        T^2 * sum_{trained positions} w_b * D(q_T, softmax(z_s / T)) / N

    student_logits [B,L,V] and teacher_log_q_T [B,L,V] (already tempered, e.g. ensemble_log_probs)
    aligned with mask [B,L] (True where the next token is trained); w_b per-example weights (default 1);
    N = num_items (trained tokens of the optimizer step), default mask.sum(). The T^2 keeps the gradient's
    scale independent of T."""
    log_p = torch.log_softmax(student_logits.float() / temperature, -1)
    d = divergence(teacher_log_q_T[mask], log_p[mask], kind, beta)
    if weights is not None:
        d = d * weights.unsqueeze(1).expand_as(mask)[mask]
    n = num_items if num_items is not None else mask.sum()
    return temperature * temperature * d.sum() / torch.as_tensor(n, dtype=torch.float32).clamp(min=1)


def feature_loss(h_s: torch.Tensor, h_t: torch.Tensor, mask: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """FitNets hint loss for one mapped layer pair, h_s already projected to the teacher's width:

        mse     mean over masked positions of ||h_t - h_s||^2 / d
        cosine  mean over masked positions of 1 - cos(h_t, h_s)

    h_s, h_t [B,L,d]; mask [B,L]."""
    hs, ht = h_s[mask].float(), h_t[mask].float()
    if hs.numel() == 0:
        return h_s.sum() * 0
    if kind == "mse":
        return ((ht - hs) ** 2).mean(-1).mean()
    if kind == "cosine":
        return (1 - F.cosine_similarity(hs, ht, dim=-1)).mean()
    raise ValueError(f"feature loss: unknown kind '{kind}' (mse, cosine)")


def attention_loss(a_s: torch.Tensor, a_t: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's attention transfer for one mapped layer pair, on head-averaged maps (head counts may
    differ): mean over valid query rows of the mean squared difference over the row's valid keys.

        a_s [B,H_s,L,L], a_t [B,H_t,L,L] (softmax-ed attention); attention_mask [B,L] (1 = real token)."""
    ms, mt = a_s.float().mean(1), a_t.float().mean(1)
    valid = attention_mask.bool()
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)  # [B, query, key]
    sq = ((ms - mt) ** 2).masked_fill(~pair, 0).sum(-1) / pair.sum(-1).clamp(min=1)
    return sq[valid].mean() if valid.any() else sq.sum() * 0


def pooled(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over each example's masked (trained) positions: [B,L,d] -> [B,d]."""
    h = h.float()
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


def relation_loss(r_s: torch.Tensor, r_t: torch.Tensor) -> torch.Tensor:
    """RKD on the batch's pairwise cosine-similarity matrices of instance representations: mean over
    the B x B entries of (cos_s(i, j) - cos_t(i, j))^2. Widths may differ. r_s [B,d_s], r_t [B,d_t]."""
    def sim(r):
        r = F.normalize(r.float(), dim=-1)
        return r @ r.T
    return ((sim(r_s) - sim(r_t)) ** 2).mean()


def importance_weights(per_example: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-example weights normalised to mean 1 over the batch, from a per-example statistic x_b:

        student_loss     w_b ∝ x_b             (the student's mean CE: harder examples count more)
        teacher_entropy  w_b ∝ exp(-x_b)       (the teacher's mean entropy: confident teachers count more)
    """
    x = per_example.detach().float()
    w = x.clamp(min=0) if kind == "student_loss" else torch.exp(-(x - x.min()))
    if w.sum() <= 0:
        return torch.ones_like(x)
    return w * (len(w) / w.sum())


def temperature_at(step: int, t_max: float, decay: float, floor: float) -> float:
    """Annealed temperature T(t) = max(floor, T_max * exp(-decay * t))."""
    import math

    return max(floor, t_max * math.exp(-decay * step))


def layer_map(student_layers: int, teacher_layers: int, strategy) -> list[tuple[int, int]]:
    """Pairs (student layer, teacher layer), 1-based over transformer blocks (hidden_states index):

        uniform    l_s -> floor(l_s * L_t / L_s)     (the last layer maps to the last)
        bottom_up  l_s -> l_s                          (the teacher's first L_s layers)
        top_down   l_s -> L_t - L_s + l_s              (the teacher's last L_s layers)
        [[s, t], ...] an explicit list
    """
    if isinstance(strategy, str):
        if strategy == "uniform":
            return [(i, (i * teacher_layers) // student_layers) for i in range(1, student_layers + 1)]
        if strategy == "bottom_up":
            return [(i, min(i, teacher_layers)) for i in range(1, student_layers + 1)]
        if strategy == "top_down":
            return [(i, max(1, teacher_layers - student_layers + i)) for i in range(1, student_layers + 1)]
        raise ValueError(f"layer_map: unknown strategy '{strategy}' (uniform, bottom_up, top_down, or [[s, t], ...])")
    pairs = [(int(s), int(t)) for s, t in strategy]
    for s, t in pairs:
        if not 1 <= s <= student_layers or not 1 <= t <= teacher_layers:
            raise ValueError(
                f"layer_map: pair [{s}, {t}] points past the models (student has {student_layers} layers, "
                f"teacher {teacher_layers}; layers count from 1)"
            )
    return pairs


def sampled_reverse_kl_loss(student_lp: torch.Tensor, teacher_lp: torch.Tensor, num_items=None):
    """On-policy distillation's per-token reverse KL on the student's own samples y_t (Thinking Machines' on-policy
    distillation, MiniLLM's single-step form), the teacher's log-probability as the reward:

        r_t  = log p_s(y_t) - log p_t(y_t)            (detached)
        loss = sum_t r_t * log p_s(y_t) / N

    Its gradient is the score-function estimate of the gradient of E_{y ~ p_s}[log p_s(y_t) - log p_t(y_t)], each
    token credited with its own term only (discount 0). student_lp/teacher_lp [N]: the sampled tokens' logprobs.
    Returns (loss, mean r): mean r estimates the per-token reverse KL(p_s || p_t), 0 when they agree."""
    r = (student_lp - teacher_lp).detach()
    n = torch.as_tensor(num_items if num_items is not None else student_lp.numel(), dtype=torch.float32).clamp(min=1)
    return (r * student_lp).sum() / n, r.mean() if r.numel() else torch.zeros(())


def topk_divergence_loss(student_log_probs: torch.Tensor, top_ids: torch.Tensor, top_lp: torch.Tensor,
                         kind: str = "reverse", beta: float = 0.5, temperature: float = 1.0, num_items=None):
    """The divergence between teacher and student over the teacher's top-k tokens + 1 tail bucket at each rollout
    position, both tempered bucket-wise at T:

        loss = T^2 * sum_pos D(q_T, p_T) / N,   D = forward KL(q||p), reverse KL(p||q) or JSD(beta)

    student_log_probs [N, V] (log_softmax at T = 1); top_ids/top_lp [N, k] from the teacher's scoring (id -1:
    none). Differentiable in the student's logits directly (no sampling estimator). Returns (loss, mean D)."""
    valid = top_ids >= 0
    log_q = torch.log_softmax(teacher_buckets(top_lp, valid) / temperature, -1)
    log_p = torch.log_softmax(student_buckets(student_log_probs, top_ids, valid) / temperature, -1)
    d = divergence(log_q, log_p, kind, beta)
    n = torch.as_tensor(num_items if num_items is not None else d.numel(), dtype=torch.float32).clamp(min=1)
    return temperature * temperature * d.sum() / n, d.detach().mean() if d.numel() else torch.zeros(())
