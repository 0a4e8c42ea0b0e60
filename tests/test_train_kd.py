"""method kd (train/kd.py): live-teacher distillation with every term, real Trainer runs of a few
steps on tiny local models; each term is zero at the teacher, the projections resume and stay out of
the saved student, and the config refuses what cannot work."""

import json

import pytest
import torch
from test_train import cfg, with_template

from cotdistill import train
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError

TERMS = {
    "soft_T2": {"kd": {"alpha": 0.7, "temperature": 2.0}},
    "reverse_T4": {"kd": {"alpha": 1.0, "temperature": 4.0, "divergence": "reverse"}},
    "jsd": {"kd": {"divergence": "jsd", "beta": 0.3}},
    "features": {"features": {"weight": 1.0}},
    "features_cosine_top_down": {"features": {"loss": "cosine", "layer_map": "top_down"}},
    "attention": {"attention": {"weight": 1.0, "layer_map": [[1, 2]]}},
    "relation": {"relation": {"weight": 1.0}},
    "distilbert_triple": {"kd": {"alpha": 0.5, "temperature": 2.0}, "cosine": 1.0},
    "schedule": {"kd": {"schedule": {"t_max": 4.0, "decay": 0.5, "floor": 1.0}}},
    "importance_student_loss": {"kd": {"importance": "student_loss"}},
    "importance_teacher_entropy": {"kd": {"importance": "teacher_entropy"}},
}
LOGGED = {"features": "feature", "features_cosine_top_down": "feature", "attention": "attention",
          "relation": "relation", "distilbert_triple": "cosine"}


@pytest.mark.parametrize("name", list(TERMS))
def test_every_term_trains(tiny_student, tiny_model, tmp_path, name):
    s = train.run(cfg(tiny_student, tmp_path, method="kd", teacher=str(tiny_model), **TERMS[name]))
    assert s["steps"] == 4 and s["train_loss"] > 0
    mem = s["memory"]
    assert mem["rss_start_mib"] > 50 and mem["rss_peak_mib"] >= mem["rss_start_mib"]
    log = [json.loads(x) for x in (tmp_path / "out/trainer_log.jsonl").read_text().splitlines()]
    steps = [h for h in log if "loss" in h]
    assert len(steps) == 4 and all(h["kd/ce"] > 0 for h in steps)
    if name in LOGGED:
        assert all(h[f"kd/{LOGGED[name]}"] > 0 for h in steps)
    if name == "schedule":  # 4 * exp(-0.5 t) at steps 0..3
        assert [round(h["kd/temperature"], 4) for h in steps] == [4.0, round(4 * 0.60653066, 4),
                                                                  round(4 * 0.36787944, 4), 1.0]  # floor 1
    saved = json.loads((tmp_path / "out/final/config.json").read_text())
    assert saved["hidden_size"] == 64  # the student, without the projections to the teacher's width
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out/final/model.safetensors"), "pt") as f, \
            safe_open(str(tiny_student / "model.safetensors"), "pt") as g:
        assert set(f.keys()) == set(g.keys())


def test_ensemble_of_teachers_trains(tiny_student, tiny_model, tmp_path):
    s = train.run(
        cfg(
            tiny_student,
            tmp_path,
            method="kd",
            teachers=[{"model": str(tiny_model), "weight": 2.0}, {"model": str(tiny_student), "weight": 1.0}],
            features={"weight": 0.5},
        )
    )
    assert s["steps"] == 4 and s["preflight"]["teachers"] == [str(tiny_model), str(tiny_student)]


def test_every_term_is_zero_when_the_student_is_the_teacher(tiny_model, tmp_path):
    from cotdistill.train import kd

    c = cfg(tiny_model, tmp_path, method="kd", teacher=str(tiny_model), kd={"alpha": 1.0, "temperature": 3.0},
            features={"weight": 1.0}, attention={"weight": 1.0}, relation={"weight": 1.0}, cosine=1.0)
    trainer, _, pre = kd.build(c)
    assert pre["projections"] == 0  # same width: compared directly
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
    terms = {k: v[0] for k, v in trainer._logged.items()}
    for k in ("kd", "feature", "attention", "relation", "cosine"):
        assert abs(terms[k]) < 1e-5, (k, terms[k])
    assert terms["ce"] > 0.1


def test_projections_start_from_the_seed_not_from_what_ran_before(tiny_student, tiny_model, tmp_path):
    """A run trains many students in one process: a feature projection's init must depend on its seed only (it
    came from the global RNG, so the same seed gave 0.143 after other students and 0.173 alone)."""
    from cotdistill.train import kd

    c = cfg(tiny_student, tmp_path, method="kd", teacher=str(tiny_model), features={"weight": 1.0})
    inits = []
    for state in (1, 2):
        torch.manual_seed(state)
        torch.randn(1000)
        trainer, _, _ = kd.build(c)
        inits.append({k: v.clone() for k, v in trainer.projections.state_dict().items()})
    assert inits[0] and all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0])
    other, _, _ = kd.build(c.model_copy(update={"seed": c.seed + 1}))
    assert any(not torch.equal(inits[0][k], v) for k, v in other.projections.state_dict().items())


def test_projections_resume_with_the_checkpoint(tiny_student, tiny_model, tmp_path):
    from cotdistill.train import kd

    c = cfg(tiny_student, tmp_path, method="kd", teacher=str(tiny_model), features={"weight": 1.0}, save_steps=2)
    train.run(c)
    saved = torch.load(tmp_path / "out/checkpoint-4" / kd.PROJECTIONS)
    assert (tmp_path / "out/checkpoint-2" / kd.PROJECTIONS).exists()
    trainer, _, _ = kd.build(c.model_copy(update={"max_steps": 6}))
    before = {k: v.clone() for k, v in trainer.projections.state_dict().items()}
    trainer._load_from_checkpoint(str(tmp_path / "out/checkpoint-4"))
    after = trainer.projections.state_dict()
    assert all(torch.equal(after[k].cpu(), saved[k].cpu()) for k in saved)
    assert any(not torch.equal(before[k], after[k].cpu()) for k in saved)  # trained, not the fresh init
    s = train.run(c.model_copy(update={"max_steps": 6}))
    assert s["steps"] == 6 and s["resumed_from"].endswith("checkpoint-4")


@pytest.mark.parametrize("kw,expect", [
    ({"method": "kd"}, "method 'kd' needs a live teacher"),
    ({"method": "sft", "features": {}}, "features: only method 'kd'"),
    ({"method": "logit_kd", "logprobs": "x", "kd": {"divergence": "reverse"}}, "kd.divergence: only method 'kd'"),
    ({"method": "kd", "teacher": "t", "attention": {}, "attn_implementation": "sdpa"}, "only 'eager' attention"),
    ({"method": "kd", "teacher": "t", "kd": {"beta": 1.0}}, "beta"),
    ({"method": "kd", "teacher": "t", "kd": {"schedule": {"t_max": 1.0, "floor": 2.0}}}, "floor 2.0 is above t_max"),
])
def test_config_refusals(tmp_path, kw, expect):
    d = {"student": "s", "dataset_dir": "d", "output_dir": "o", **kw}
    with pytest.raises(ValueError, match=expect):
        TrainConfig.model_validate(d)


def test_layer_map_past_the_teacher_is_refused(tiny_student, tiny_model, tmp_path):
    with pytest.raises(CotdistillError, match=r"features.layer_map: pair \[1, 3\] points past .* teacher 2"):
        train.run(cfg(tiny_student, tmp_path, method="kd", teacher=str(tiny_model), features={"layer_map": [[1, 3]]}))


def test_a_teacher_with_another_tokenizer_is_refused(tiny_student, tmp_path):
    from cotdistill.tiny import build_tokenizer

    other = with_template(tiny_student, tmp_path)
    build_tokenizer(other, vocab_size=400)
    with pytest.raises(CotdistillError, match="student and teacher tokenizers differ"):
        train.run(cfg(tiny_student, tmp_path, method="kd", teacher=str(other)))


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_gradient_accumulation_matches_one_big_batch(tiny_student, tiny_model, tmp_path, t):
    """GA = 4 x batch 2 gives the gradient of GA = 1 x batch 8 (micro-batches of unequal token counts),
    for the soft-target, CE and feature terms together, projections included."""
    from test_train import dataset_dir

    from cotdistill.train import kd

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Compute {i} + {i}."},
                {"role": "assistant", "content": "<think>" + " then add" * i + f"</think>\\boxed{{{2 * i}}}"},
            ],
            "problem_id": f"p{i}",
            "sample_index": 0,
        }
        for i in range(8)
    ]
    data = dataset_dir(tmp_path, rows)

    def grads(ga, bs):
        torch.manual_seed(0)
        c = TrainConfig(
            student=str(tiny_student),
            teacher=str(tiny_model),
            method="kd",
            dataset_dir=str(data),
            output_dir=str(tmp_path / f"ga{ga}"),
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            kd={"alpha": 0.6, "temperature": t},
            features={"weight": 2.0},
            progress=False,
        )
        tr, _, _ = kd.build(c)
        tr.create_optimizer()
        ex = [tr.train_dataset[i] for i in range(8)]
        micro = [tr.data_collator(ex[i:i + bs]) for i in range(0, 8, bs)]
        tr.current_gradient_accumulation_steps = ga
        num_items = tr._get_num_items_in_batch(micro, torch.device("cpu"))
        tr.model.zero_grad()
        for mb in micro:
            tr.training_step(tr.model, mb, num_items)
        params = list(tr.model.parameters()) + list(tr.projections.parameters())
        return torch.cat([p.grad.flatten() for p in params if p.grad is not None]), len(
            list(tr.projections.parameters())
        )

    (g1, n1), (g4, _) = grads(1, 8), grads(4, 2)
    assert n1 > 0
    assert torch.allclose(g1, g4, atol=1e-6, rtol=1e-4), (g1 - g4).abs().max()
