"""The live-teacher terms of train/losses.py (soft targets, ensembles, features, attention, relations,
importance weights, schedules, layer maps) against hand-computed values at several temperatures:
each is zero (or minimal) at the teacher and equals a value worked out with plain math."""

import math

import pytest
import torch

from cotdistill.train.losses import (
    attention_loss,
    divergence,
    ensemble_log_probs,
    feature_loss,
    importance_weights,
    layer_map,
    pooled,
    relation_loss,
    soft_target_loss,
    temperature_at,
)

TEMPS = [1.0, 2.0, 4.0]


def softmax(xs, t=1.0):
    e = [math.exp(x / t) for x in xs]
    return [x / sum(e) for x in e]


def kl(q, p):
    return sum(a * math.log(a / b) for a, b in zip(q, p) if a > 0)


@pytest.mark.parametrize("t", TEMPS)
def test_soft_target_loss_by_hand(t):
    zt, zs = [2.0, 0.5, -1.0], [0.0, 1.0, 0.3]
    q, p = softmax(zt, t), softmax(zs, t)
    teacher = torch.tensor([[zt, zt]])
    student = torch.tensor([[zs, zt]])  # position 1 equals the teacher: contributes 0
    mask = torch.tensor([[True, True]])
    log_q = ensemble_log_probs([teacher], [1.0], t)
    got = soft_target_loss(student, log_q, mask, t)
    assert got.item() == pytest.approx(t * t * kl(q, p) / 2, rel=1e-5)
    # reverse KL and JSD(beta) by hand, on the same position
    rev = soft_target_loss(student[:, :1], log_q[:, :1], mask[:, :1], t, kind="reverse")
    assert rev.item() == pytest.approx(t * t * kl(p, q), rel=1e-5)
    beta = 0.3
    m = [beta * a + (1 - beta) * b for a, b in zip(q, p)]
    jsd = soft_target_loss(student[:, :1], log_q[:, :1], mask[:, :1], t, kind="jsd", beta=beta)
    assert jsd.item() == pytest.approx(t * t * (beta * kl(q, m) + (1 - beta) * kl(p, m)), rel=1e-5)
    # num_items divides the sum (gradient accumulation); weights scale each example
    assert soft_target_loss(student, log_q, mask, t, num_items=4).item() == pytest.approx(
        t * t * kl(q, p) / 4, rel=1e-5
    )
    w = torch.tensor([3.0])
    assert soft_target_loss(student, log_q, mask, t, weights=w).item() == pytest.approx(
        3 * t * t * kl(q, p) / 2, rel=1e-5
    )


@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_divergences_are_zero_at_the_teacher_and_positive_elsewhere(t, kind):
    torch.manual_seed(0)
    z = torch.randn(2, 5, 40) * 3
    mask = torch.ones(2, 5, dtype=torch.bool)
    log_q = ensemble_log_probs([z], [1.0], t)
    assert soft_target_loss(z, log_q, mask, t, kind=kind).abs() < 1e-5
    assert soft_target_loss(torch.randn(2, 5, 40) * 3, log_q, mask, t, kind=kind) > 1e-3


@pytest.mark.parametrize("t", TEMPS)
def test_ensemble_averages_probabilities(t):
    a, b = [1.0, 0.0, -2.0], [-1.0, 2.0, 0.0]
    got = ensemble_log_probs([torch.tensor([a]), torch.tensor([b])], [3.0, 1.0], t).exp()[0].tolist()
    want = [0.75 * x + 0.25 * y for x, y in zip(softmax(a, t), softmax(b, t))]
    assert got == pytest.approx(want, rel=1e-5)
    # the student equal to the mixture has zero loss, equal to one teacher has some
    mix_logits = torch.tensor([[want]]).log() * t
    mask = torch.tensor([[True]])
    lq = ensemble_log_probs([torch.tensor([[a]]), torch.tensor([[b]])], [3.0, 1.0], t)
    assert soft_target_loss(mix_logits, lq, mask, t).abs() < 1e-5
    assert soft_target_loss(torch.tensor([[a]]), lq, mask, t) > 1e-3


def test_feature_loss_by_hand():
    ht = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [9.0, 9.0]]])
    hs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])  # the third position is not trained: ignored
    assert feature_loss(hs, ht, mask).item() == pytest.approx(((0 + 4) / 2 + 0) / 2)
    cos0 = 1 / math.sqrt(5)  # cos([1,0], [1,2]) = 1 / (1 * sqrt(5))
    assert feature_loss(hs, ht, mask, "cosine").item() == pytest.approx(((1 - cos0) + 0) / 2, rel=1e-6)
    assert feature_loss(ht, ht, mask).item() == 0
    assert feature_loss(ht * 2, ht, mask, "cosine").abs().item() < 1e-6  # cosine ignores scale


def test_attention_loss_by_hand():
    # one example, 2 real tokens + 1 pad; teacher has 2 heads, student 1 (head-averaged maps compared)
    t_heads = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.6]],
                             [[1.0, 0.0, 0.0], [0.1, 0.9, 0.0], [0.3, 0.3, 0.4]]]])
    s_heads = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]]])
    att = torch.tensor([[1, 1, 0]])
    # teacher mean row 2 = [0.3, 0.7]; student [0.5, 0.5]; row 1 equal; pad row/column ignored
    assert attention_loss(s_heads, t_heads, att).item() == pytest.approx((0 + (0.04 + 0.04) / 2) / 2, rel=1e-5)
    assert attention_loss(t_heads, t_heads, att).item() == 0


def test_relation_loss_by_hand_and_scale_free():
    rt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: cos 0 off the diagonal
    rs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # cos 1/sqrt(2); another width
    c = 1 / math.sqrt(2)
    assert relation_loss(rs, rt).item() == pytest.approx(2 * c * c / 4, rel=1e-5)
    assert relation_loss(3 * rt, rt).item() == pytest.approx(0, abs=1e-7)
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert pooled(h, torch.tensor([[True, True, False]])).tolist() == [[2.0, 3.0]]


def test_importance_weights():
    assert importance_weights(torch.tensor([1.0, 3.0]), "student_loss").tolist() == [0.5, 1.5]
    w = importance_weights(torch.tensor([0.0, math.log(3)]), "teacher_entropy")
    assert w.tolist() == pytest.approx([1.5, 0.5])
    assert importance_weights(torch.zeros(3), "student_loss").tolist() == [1.0, 1.0, 1.0]


def test_temperature_schedule():
    assert temperature_at(0, 4.0, 0.01, 1.0) == 4.0
    assert temperature_at(100, 4.0, 0.01, 1.0) == pytest.approx(4 * math.exp(-1))
    assert temperature_at(10_000, 4.0, 0.01, 1.0) == 1.0


@pytest.mark.parametrize("strategy,want", [
    ("uniform", [(1, 2), (2, 4), (3, 6)]),
    ("bottom_up", [(1, 1), (2, 2), (3, 3)]),
    ("top_down", [(1, 4), (2, 5), (3, 6)]),
    ([[1, 3], [3, 6]], [(1, 3), (3, 6)]),
])
def test_layer_maps(strategy, want):
    assert layer_map(3, 6, strategy) == want


def test_layer_map_past_the_teacher_is_refused():
    with pytest.raises(ValueError, match=r"pair \[2, 7\] points past .* teacher 6"):
        layer_map(3, 6, [[2, 7]])


def test_divergence_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind"):
        divergence(torch.zeros(1, 3), torch.zeros(1, 3), "bogus")


def test_smooth_targets_by_hand():
    from cotdistill.train.losses import smooth_targets

    q = torch.tensor([0.7, 0.2, 0.1])
    got = smooth_targets(q.log(), 0.3).exp()
    assert torch.allclose(got, torch.tensor([0.59, 0.24, 0.17]), atol=1e-6)  # 0.7 q + 0.3 / 3
    assert smooth_targets(q.log(), 0.0) is not None and torch.allclose(smooth_targets(q.log(), 0.0), q.log())


def test_selective_weights_by_hand():
    import math

    from cotdistill.train.losses import selective_weights

    s = torch.tensor([[-1.0, -2.0], [-3.0, -2.0]])  # [K=2 teachers, B=2 examples]
    w = selective_weights(s, [1.0, 1.0], tau=1.0)
    e = 1 / (1 + math.exp(-2))
    assert torch.allclose(w[:, 0], torch.tensor([e, 1 - e])) and torch.allclose(w[:, 1], torch.tensor([0.5, 0.5]))
    assert torch.allclose(selective_weights(s, [3.0, 1.0], tau=1e6)[:, 0], torch.tensor([0.75, 0.25]), atol=1e-5)
    assert torch.allclose(selective_weights(s, [1.0, 1.0], tau=1e-3)[:, 0], torch.tensor([1.0, 0.0]))


def test_ensemble_with_per_example_weights_picks_each_examples_teacher():
    from cotdistill.train.losses import ensemble_log_probs

    z1, z2 = torch.randn(2, 3, 5), torch.randn(2, 3, 5)  # [B, L, V] each
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).unsqueeze(-1)  # example 0 -> teacher 1, example 1 -> teacher 2
    got = ensemble_log_probs([z1, z2], w, 2.0)
    assert torch.allclose(got[0], torch.log_softmax(z1[0] / 2, -1), atol=1e-5)
    assert torch.allclose(got[1], torch.log_softmax(z2[1] / 2, -1), atol=1e-5)
    mix = ensemble_log_probs([z1, z2], [3.0, 1.0], 1.0)  # a list: the same weights everywhere, as before
    want = (0.75 * torch.softmax(z1, -1) + 0.25 * torch.softmax(z2, -1)).log()
    assert torch.allclose(mix, want, atol=1e-5)


def test_student_entropy_by_hand():
    import math

    from cotdistill.train.losses import student_entropy

    assert student_entropy(torch.full((4,), -math.log(4))).item() == pytest.approx(math.log(4))
    assert student_entropy(torch.tensor([0.0, float("-inf")])).item() == 0.0
