"""train/losses.py against hand-computed references at several temperatures, and gradient
accumulation through the real CachedKDTrainer step."""

import math

import pytest
import torch

from cotdistill.train.losses import kd_loss, student_buckets, teacher_buckets, tempered_kl

TEMPS = [1.0, 2.0, 4.0]


def aligned(logits, k):
    """Teacher arrays as the cache holds them: position t carries the distribution that predicts token t."""
    lp = torch.log_softmax(logits, -1)
    top_lp, top_ids = lp.topk(k, -1)
    b = logits.size(0)
    tid = torch.cat([torch.full((b, 1, k), -1), top_ids[:, :-1]], 1)
    tlp = torch.cat([torch.zeros(b, 1, k), top_lp[:, :-1]], 1)
    return tid, tlp


@pytest.mark.parametrize("t", TEMPS)
def test_kl_is_zero_at_the_teacher(t):
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 50) * 3
    tid, tlp = aligned(logits, 8)
    labels = torch.tensor([[-100, 3, 4, 5, 6, 7], [-100, -100, 1, 2, 3, 4]])
    _, _, kl = kd_loss(logits, labels, tid, tlp, alpha=1.0, temperature=t)
    assert kl.abs() < 1e-6
    _, _, kl_other = kd_loss(torch.randn(2, 6, 50) * 3, labels, tid, tlp, alpha=1.0, temperature=t)
    assert kl_other > 0.01


@pytest.mark.parametrize("t", TEMPS)
def test_equals_full_vocabulary_kl_when_k_covers_the_vocabulary(t):
    torch.manual_seed(1)
    v = 20
    teacher, student = torch.randn(1, 5, v) * 2, torch.randn(1, 5, v) * 2
    tid, tlp = aligned(teacher, v)
    labels = torch.tensor([[-100, 1, 2, 3, 4]])
    loss, _, kl = kd_loss(student, labels, tid, tlp, alpha=1.0, temperature=t)
    q = torch.softmax(teacher[0, :-1] / t, -1)
    p = torch.softmax(student[0, :-1] / t, -1)
    ref = (q * (q.log() - p.log())).sum(-1).mean()
    assert torch.isclose(kl, ref, atol=1e-5), (kl, ref)
    assert torch.isclose(loss, t * t * ref, atol=1e-4)


@pytest.mark.parametrize("t", TEMPS)
def test_bucketed_kl_by_hand(t):
    """V = 3, k = 1. Teacher puts 0.7 on token 0 (tail 0.3); student probabilities [0.5, 0.3, 0.2],
    so its buckets are [0.5, 0.5]. Tempered bucket-wise: q_T ~ [0.7^(1/T), 0.3^(1/T)], p_T = [1/2, 1/2]."""
    a, b = 0.7 ** (1 / t), 0.3 ** (1 / t)
    q = [a / (a + b), b / (a + b)]
    ref = q[0] * math.log(q[0] / 0.5) + q[1] * math.log(q[1] / 0.5)
    log_q = teacher_buckets(torch.tensor([[math.log(0.7)]]), torch.tensor([[True]]))
    log_p = student_buckets(torch.tensor([[0.5, 0.3, 0.2]]).log(), torch.tensor([[0]]), torch.tensor([[True]]))
    assert torch.allclose(log_q.exp(), torch.tensor([[0.7, 0.3]]), atol=1e-6)
    assert torch.allclose(log_p.exp(), torch.tensor([[0.5, 0.5]]), atol=1e-6)
    assert math.isclose(tempered_kl(log_q, log_p, t).item(), ref, rel_tol=1e-5)
    # and through kd_loss: one trained position, alpha mixes T^2 * KL with CE
    student = [math.log(0.5), math.log(0.3), math.log(0.2)]
    logits = torch.tensor([[student, student]])  # position 0 predicts the one trained token (id 2)
    labels, tid, tlp = torch.tensor([[-100, 2]]), torch.tensor([[[-1], [0]]]), torch.tensor([[[0.0], [math.log(0.7)]]])
    for alpha in (0.0, 0.3, 1.0):
        loss, ce, _ = kd_loss(logits, labels, tid, tlp, alpha=alpha, temperature=t)
        want = alpha * t * t * ref + (1 - alpha) * -math.log(0.2)
        assert math.isclose(loss.item(), want, rel_tol=1e-5), (alpha, loss.item(), want)


def test_rounding_tail_is_not_a_bucket():
    """A top-k that covers the vocabulary sums to 1 within float rounding; at T = 4 a 1e-7 'tail'
    would otherwise carry about 2% of the tempered mass."""
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.2 - 1e-7]]))
    assert teacher_buckets(lp, torch.ones(1, 3, dtype=torch.bool))[0, -1] < -1e30
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.19]]))
    assert math.isclose(
        teacher_buckets(lp, torch.ones(1, 3, dtype=torch.bool))[0, -1].exp().item(), 0.01, rel_tol=1e-4
    )


def test_positions_without_a_teacher_entry_train_ce_only():
    torch.manual_seed(2)
    logits = torch.randn(1, 4, 30)
    tid, tlp = aligned(logits, 4)
    tid[0, 3], tlp[0, 3] = -1, 0.0  # an appended end-of-turn token: no cache entry
    labels = torch.tensor([[-100, 5, 6, 7]])
    loss, ce, kl = kd_loss(logits, labels, tid, tlp, alpha=1.0, temperature=2.0)
    assert kl.abs() < 1e-6 and loss.abs() < 1e-5  # KL at the teacher; CE has weight 0
    loss_ce, ce_only, _ = kd_loss(logits, labels, tid, tlp, alpha=0.0, temperature=2.0)
    assert torch.isclose(loss_ce, ce_only)


def _batch(seed, b, k=4, v=40):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 12, (b,), generator=g)
    n = int(lengths.max())
    ids = torch.randint(0, v, (b, n), generator=g)
    att = (torch.arange(n)[None] < lengths[:, None]).long()
    labels = ids.masked_fill(att == 0, -100)
    labels[:, :2] = -100  # a two-token prompt
    tl = torch.log_softmax(torch.randn(b, n, v, generator=g), -1)
    top_lp, top_ids = tl.topk(k, -1)
    top_ids = top_ids.masked_fill((labels == -100)[..., None], -1)
    return {"input_ids": ids, "attention_mask": att, "labels": labels, "top_ids": top_ids, "top_lp": top_lp}


def _rows(batch):
    return [{k: v[i:i + 1] for k, v in batch.items()} for i in range(batch["input_ids"].size(0))]


def _cat(rows):
    n = max(r["input_ids"].size(1) for r in rows)
    out = {}
    for key, fill in (("input_ids", 0), ("attention_mask", 0), ("labels", -100), ("top_ids", -1), ("top_lp", 0.0)):
        parts = []
        for r in rows:
            x = r[key]
            pad = n - x.size(1)
            if pad:
                shape = list(x.shape)
                shape[1] = pad
                x = torch.cat([x, torch.full(shape, fill, dtype=x.dtype)], 1)
            parts.append(x)
        out[key] = torch.cat(parts)
    return out


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_gradient_accumulation_matches_one_big_batch(tiny_student, tmp_path, t):
    """GA = 4 x batch 2 gives the same gradient as GA = 1 x batch 8, through CachedKDTrainer's own
    training_step and transformers' token count (micro-batches hold different numbers of tokens)."""
    from transformers import AutoModelForCausalLM, TrainingArguments

    from cotdistill.train.logit_kd import CachedKDTrainer

    v = AutoModelForCausalLM.from_pretrained(tiny_student).config.vocab_size
    rows = _rows(_batch(0, 8, v=v))

    def grads(ga, bs):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_student, dtype=torch.float32)
        model.train()
        args = TrainingArguments(
            output_dir=str(tmp_path / f"ga{ga}"),
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            use_cpu=True,
            report_to=[],
            remove_unused_columns=False,
        )
        tr = CachedKDTrainer(model=model, args=args, alpha=0.5, temperature=t)
        assert tr.model_accepts_loss_kwargs  # otherwise transformers would divide by GA itself
        micro = [_cat(rows[i:i + bs]) for i in range(0, 8, bs)]
        tr.current_gradient_accumulation_steps = ga
        num_items = tr._get_num_items_in_batch(micro, torch.device("cpu"))
        model.zero_grad()
        for mb in micro:
            tr.training_step(model, mb, num_items)
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    g1, g4 = grads(1, 8), grads(4, 2)
    counts = [int((r["labels"][:, 1:] != -100).sum()) for r in rows]
    assert len(set(counts)) > 1  # unequal token counts: a mean of means would differ
    assert torch.allclose(g1, g4, atol=1e-6, rtol=1e-4), (g1 - g4).abs().max()


def test_a_float16_cache_rounding_is_no_tail_but_a_real_tail_stays():
    """#40 item 9: log-probs stored in float16 (`cotdistill logits`) lose ~1e-4 of mass; read as a tail bucket and
    tempered at T = 2 it became ~1% of the mass. Within the cache's own rounding the leftover is no tail."""
    import numpy as np

    from cotdistill.train.losses import FP16_ROUNDING, teacher_buckets, tempered_kl

    g = torch.Generator().manual_seed(0)
    exact = torch.log_softmax(torch.randn(64, 8, generator=g, dtype=torch.float64) * 2, -1)  # top-8 of V = 8: no tail
    stored = torch.from_numpy(exact.numpy().astype(np.float16).astype(np.float32))
    valid = torch.ones_like(stored, dtype=torch.bool)
    neg = torch.finfo(torch.float32).min
    old, new = teacher_buckets(stored, valid), teacher_buckets(stored, valid, FP16_ROUNDING)
    assert (old[:, -1] > neg).any()  # the defect: rounding read as a tail
    assert (new[:, -1] == neg).all()
    student = torch.cat([exact.float(), torch.full((64, 1), neg)], -1)  # the teacher's own distribution, no tail
    assert tempered_kl(new, student, 2.0).max() < 1e-3 < tempered_kl(old, student, 2.0).max()
    real = torch.log_softmax(torch.randn(64, 8, generator=g, dtype=torch.float64) * 2, -1)[:, :4]  # top-4 of 8
    kept = teacher_buckets(torch.from_numpy(real.numpy().astype(np.float16).astype(np.float32)),
                           torch.ones(64, 4, dtype=torch.bool), FP16_ROUNDING)
    tail = 1 - real.exp().sum(-1)
    assert torch.allclose(kept[:, -1].double().exp(), tail, rtol=5e-3, atol=1e-4)
