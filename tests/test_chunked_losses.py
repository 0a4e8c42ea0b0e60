"""Chunked logit losses (memory O(chunk x V)) equal the unchunked ones, value and gradient, and the
trainers' chunked paths give the same loss as their full-logits paths on the same batch."""

import pytest
import torch

from cotdistill.train.losses import kd_loss, kd_loss_chunked, token_chunks


def _case(seed=0, b=3, length=11, d=16, v=97, k=5):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, length, d, generator=g, dtype=torch.float64).float().requires_grad_()
    head = torch.nn.Linear(d, v, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, d, generator=g))
    labels = torch.randint(0, v, (b, length), generator=g)
    labels[:, :3] = -100  # the prompt
    labels[1, 8:] = -100  # padding
    t_lp, t_ids = torch.log_softmax(torch.randn(b, length, v, generator=g) * 2, -1).topk(k, -1)
    t_ids[0, 5] = -1  # an appended end-of-turn token: no teacher entry
    return hidden, head, labels, t_ids, t_lp


@pytest.mark.parametrize("alpha,temperature,chunk", [(0.5, 1.0, 4), (1.0, 2.0, 1), (0.0, 1.0, 7), (0.7, 4.0, 1000)])
def test_kd_loss_chunked_equals_unchunked(alpha, temperature, chunk):
    hidden, head, labels, t_ids, t_lp = _case()
    full, ce_full, kl_full = kd_loss(head(hidden), labels, t_ids, t_lp, alpha, temperature, num_items=40)
    g_full = torch.autograd.grad(full, [hidden, head.weight])
    part, ce_part, kl_part = kd_loss_chunked(hidden, head, labels, t_ids, t_lp, alpha, temperature, 40, chunk)
    g_part = torch.autograd.grad(part, [hidden, head.weight])
    assert float(part) == pytest.approx(float(full), rel=1e-5)
    assert float(ce_part) == pytest.approx(float(ce_full), rel=1e-5)
    assert float(kl_part) == pytest.approx(float(kl_full), rel=1e-5, abs=1e-7)
    for a, b in zip(g_full, g_part):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_token_chunks_frees_each_chunk_and_concatenates():
    x = torch.randn(10, 4, requires_grad=True)
    seen = []

    def fn(t):
        seen.append(t.size(0))
        return (t.pow(2).sum(-1),)

    (out,) = token_chunks(fn, [x], 4)
    assert torch.allclose(out, x.pow(2).sum(-1)) and seen == [4, 4, 2]
    out.sum().backward()  # recomputed per chunk in the backward
    assert torch.allclose(x.grad, 2 * x) and sorted(seen[3:]) == [2, 4, 4]


KD_VARIANTS = {
    "forward": {},
    "reverse_T2": {"kd": {"divergence": "reverse", "temperature": 2.0}},
    "jsd_importance": {"kd": {"divergence": "jsd", "importance": "teacher_entropy", "alpha": 0.7}},
    "student_loss_ensemble": {"kd": {"importance": "student_loss"}, "teachers": "two"},
    "selective_smoothed_penalised": {"kd": {"selection": "gold_likelihood", "selection_tau": 0.5,
                                            "label_smoothing": 0.1, "confidence_penalty": 0.05, "temperature": 2.0},
                                     "teachers": "two"},
}


@pytest.mark.parametrize("name", list(KD_VARIANTS))
def test_live_kd_chunked_loss_equals_full_logits(tiny_student, tiny_model, tmp_path, name):
    from test_train import cfg

    from cotdistill.train import kd

    kw = dict(KD_VARIANTS[name])
    if kw.pop("teachers", None):
        kw["teachers"] = [{"model": str(tiny_model), "weight": 2.0}, {"model": str(tiny_student), "weight": 1.0}]
    else:
        kw["teacher"] = str(tiny_model)
    losses = []
    for chunk in (0, 5):
        trainer, _, _ = kd.build(cfg(tiny_student, tmp_path / f"c{chunk}", method="kd", loss_chunk_tokens=chunk, **kw))
        batch = next(iter(trainer.get_train_dataloader()))
        losses.append(float(trainer.compute_loss(trainer.model, batch, num_items_in_batch=None)))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_selection_smoothing_and_penalty_change_the_loss(tiny_student, tiny_model, tmp_path):
    """Each new term moves the loss away from plain two-teacher KD, and selection logs per-example weights that
    leave the fixed 2:1 prior."""
    from test_train import cfg

    from cotdistill.train import kd

    teachers = [{"model": str(tiny_model), "weight": 2.0}, {"model": str(tiny_student), "weight": 1.0}]
    losses, logged = {}, {}
    for name, extra in {"plain": {}, "selective": {"selection": "gold_likelihood", "selection_tau": 0.1},
                        "smoothed": {"label_smoothing": 0.3}, "penalised": {"confidence_penalty": 0.5}}.items():
        trainer, _, _ = kd.build(cfg(tiny_student, tmp_path / name, method="kd", teachers=teachers, kd=extra))
        batch = next(iter(trainer.get_train_dataloader()))
        losses[name] = float(trainer.compute_loss(trainer.model, batch))
        logged[name] = dict(trainer._logged)
    assert all(abs(losses[n] - losses["plain"]) > 1e-4 for n in ("selective", "smoothed", "penalised")), losses
    assert logged["selective"]["teacher_weight_max"][0] != pytest.approx(2 / 3, abs=1e-3)
    assert logged["penalised"]["student_entropy"][0] > 0


def test_logit_kd_trainer_chunked_equals_full_logits(tiny_student, tiny_model, tmp_path):
    from test_bf16_training import teacher_cache
    from test_train import cfg

    from cotdistill.train import logit_kd

    cache = teacher_cache(tiny_model, tmp_path)
    losses = []
    for chunk in (0, 3):
        trainer, _, _ = logit_kd.build(
            cfg(
                tiny_student,
                tmp_path / f"c{chunk}",
                method="logit_kd",
                logprobs=str(cache),
                loss_chunk_tokens=chunk,
                kd={"temperature": 2.0},
            )
        )
        batch = next(iter(trainer.get_train_dataloader()))
        losses.append(float(trainer.compute_loss(trainer.model, batch)))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_teacher_scoring_in_chunks_equals_whole_sequences(tiny_model, tmp_path):
    from test_train import dataset_dir

    from cotdistill import logit_cache, logits
    from cotdistill.config import LogitsConfig

    data = dataset_dir(tmp_path)
    rows = []
    for chunk in (0, 3):
        out = tmp_path / f"cache{chunk}"
        logits.run(LogitsConfig(teacher=str(tiny_model), filter_dir=str(data), output_dir=str(out), top_k=4,
                                device="cpu", dtype="float32", chunk_tokens=chunk, progress=False))
        rows.append(list(logit_cache.iter_cache(out / logit_cache.CACHE)))
    assert len(rows[0]) == len(rows[1]) == 8
    for a, b in zip(*rows):
        assert (a[0], a[1]) == (b[0], b[1]) and (a[2] == b[2]).all() and (a[3] == b[3]).all()
        assert abs(a[4] - b[4]).max() < 1e-5


@pytest.mark.parametrize("beta,num_items,chunk", [(0.5, None, 4), (0.0, 40, 1), (1.0, None, 7), (0.3, 40, 1000)])
def test_gkd_jsd_chunked_equals_trls_loss(beta, num_items, chunk):
    """#40 item 3: the chunked JSD is TRL's generalized_jsd_loss (as GKDTrainer.compute_loss calls it), value and
    gradient, for forward KL, reverse KL and the mixture."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    from cotdistill.train.losses import gkd_jsd_chunked

    hidden, head, labels, _, _ = _case()
    t_hidden, t_head, _, _, _ = _case(seed=1)
    t_hidden = t_hidden.detach()
    full = GKDTrainer.generalized_jsd_loss(head(hidden)[:, :-1], t_head(t_hidden)[:, :-1], labels=labels[:, 1:],
                                           beta=beta, num_items_in_batch=num_items)
    g_full = torch.autograd.grad(full, [hidden, head.weight])
    part = gkd_jsd_chunked(hidden, head, t_hidden, t_head, labels, beta, num_items, chunk)
    g_part = torch.autograd.grad(part, [hidden, head.weight])
    assert float(part) == pytest.approx(float(full), rel=1e-5)
    for a, b in zip(g_full, g_part):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_gkd_jsd_chunked_never_makes_more_than_a_chunk_of_logits_at_a_real_vocabulary():
    """At V = 151,936 every call of either head (forward and the recomputation in the backward) gets at most
    ``chunk`` rows; TRL's loss would make [B, L, V] logits of both models and ~12 such fp32 tensors."""
    from cotdistill.train.losses import gkd_jsd_chunked

    v, d, chunk = 151_936, 8, 16
    hidden, head, labels, _, _ = _case(b=2, length=40, d=d, v=v, k=1)
    t_hidden, t_head, _, _, _ = _case(seed=1, b=2, length=40, d=d, v=v, k=1)
    rows = []
    for h in (head, t_head):
        h.register_forward_hook(lambda m, args, out: rows.append(args[0].reshape(-1, d).shape[0]))
    loss = gkd_jsd_chunked(hidden, head, t_hidden.detach(), t_head, labels, 0.5, None, chunk)
    loss.backward()
    trained = int((labels[:, 1:] != -100).sum())
    assert rows and max(rows) <= chunk < trained
    assert sum(rows) >= 2 * trained  # student and teacher rows, each trained token once at least


def test_gkd_trainer_chunked_equals_trls_full_logits(tiny_student, tiny_model, tmp_path):
    """The trainer's chunked loss (the default) and TRL's own (loss_chunk_tokens: 0) on the same off-policy batch."""
    from test_train import cfg

    from cotdistill.train import gkd

    losses = []
    for chunk in (0, 3):
        trainer, _, _ = gkd.build(cfg(tiny_student, tmp_path / f"c{chunk}", method="gkd", teacher=str(tiny_model),
                                      loss_chunk_tokens=chunk, gkd={"lmbda": 0.0, "beta": 0.4}))
        assert trainer.chunk == chunk
        batch = next(iter(trainer.get_train_dataloader()))
        losses.append(float(trainer.compute_loss(trainer.model, batch, num_items_in_batch=None)))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4) and losses[0] > 0
