"""GPU conditions on CPU: every method trains in bf16 the way TRL does it, fp32 master weights under
bf16 autocast. A bf16-stored student loses AdamW updates of ~1e-5 (they round away): most of its weights
never move, so "KD vs SFT" on GPU would be biased against whichever method loaded it that way."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import cfg, dataset_dir

from cotdistill import train

STEPS_CHANGED, STEPS_CURVE = 10, 50


def method_kw(name, teacher, tmp_path):
    if name == "sft":
        return {}
    if name == "gkd":  # off-policy steps: the same data in both runs, so the two curves are comparable
        return {"method": "gkd", "teacher": str(teacher), "gkd": {"lmbda": 0.0, "max_new_tokens": 8}}
    if name == "distill":
        return {"method": "distill", "teacher": str(teacher), "gkd": {"max_new_tokens": 8, "temperature": 1.0}}
    if name == "kd":  # a 64 -> 128 feature projection: fp32 Linear on the models' bf16 hidden states
        return {"method": "kd", "teacher": str(teacher), "features": {"weight": 0.5}, "relation": {"weight": 0.5}}
    if name == "logit_kd":
        return {"method": "logit_kd", "logprobs": str(teacher_cache(teacher, tmp_path))}
    if name == "mutual":  # the student and a peer (fresh weights) trained together, the peer under explicit autocast
        return {"method": "mutual", "mutual": {"peers": 2}}
    raise AssertionError(name)


def teacher_cache(teacher, tmp_path):
    from cotdistill import logits
    from cotdistill.config import LogitsConfig

    out = tmp_path / "cache"
    logits.run(LogitsConfig(teacher=str(teacher), filter_dir=str(dataset_dir(tmp_path)), output_dir=str(out),
                            top_k=4, device="cpu", dtype="float32", progress=False))
    return out


def changed_share(before: dict, after: dict, seen_ids: set[int]) -> float:
    """Share of weights that moved, over the weights that receive a gradient (input-embedding rows of tokens
    that never occur in the data get none)."""
    changed = total = 0
    for name, w0 in before.items():
        w1 = after[name]
        diff = w0 != w1
        if "embed_tokens" in name:
            rows = torch.tensor(sorted(seen_ids))
            diff = diff[rows]
        changed += int(diff.sum())
        total += diff.numel()
    return changed / total


def run(student, teacher, tmp_path, name, bf16, steps, tag):
    d = tmp_path / tag
    d.mkdir()
    c = cfg(student, d, bf16=bf16, max_steps=steps, learning_rate=1e-5, lr_scheduler_type="constant",
            save_steps=10_000, **method_kw(name, teacher, d))
    s = train.run(c)
    log = [json.loads(x) for x in (d / "out/trainer_log.jsonl").read_text().splitlines()]
    return s, [h["loss"] for h in log if "loss" in h], load_file(str(d / "out/final/model.safetensors"))


def seen_token_ids(student, tmp_path) -> set[int]:
    from test_train import ROWS
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(student))
    ids = set()
    for r in ROWS:
        ids |= set(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
    return ids


@pytest.mark.parametrize("name", ["sft", "gkd", "distill", "logit_kd", "kd", "mutual"])
def test_bf16_student_keeps_fp32_master_weights(tiny_student, tiny_model, tmp_path, name):
    before = load_file(str(tiny_student / "model.safetensors"))
    s, _, after = run(tiny_student, tiny_model, tmp_path, name, True, STEPS_CHANGED, "changed")
    assert s["steps"] == STEPS_CHANGED
    share = changed_share({k: v.float() for k, v in before.items()}, {k: v.float() for k, v in after.items()},
                          seen_token_ids(tiny_student, tmp_path))
    assert share > 0.99, f"{name}: only {share:.1%} of the weights moved in {STEPS_CHANGED} bf16 steps at lr 1e-5"
    assert all(t.dtype == torch.float32 for t in after.values())  # trained and saved in fp32


@pytest.mark.parametrize("name", ["sft", "gkd", "distill", "logit_kd", "kd", "mutual"])
def test_bf16_loss_curve_matches_fp32(tiny_student, tiny_model, tmp_path, name):
    _, fp32, _ = run(tiny_student, tiny_model, tmp_path, name, False, STEPS_CURVE, "fp32")
    _, bf16, _ = run(tiny_student, tiny_model, tmp_path, name, True, STEPS_CURVE, "bf16")
    assert len(fp32) == len(bf16) == STEPS_CURVE
    assert fp32 != bf16  # autocast really ran in bf16
    worst = max(abs(a - b) / abs(a) for a, b in zip(fp32, bf16))
    assert worst <= 0.02, f"{name}: bf16 loss differs from fp32 by up to {worst:.2%} (step losses {fp32} vs {bf16})"


def test_kd_terms_take_bf16_hidden_states(tiny_student, tiny_model, tmp_path):
    """compute_loss runs outside autocast: a bf16 student's (or teacher's) hidden states met the fp32 feature
    projection ("expected m1 and m2 to have the same dtype" on the first step)."""
    from cotdistill.train import kd

    trainer, _, _ = kd.build(cfg(tiny_student, tmp_path, method="kd", teacher=str(tiny_model), bf16=True,
                                 features={"weight": 1.0}, cosine=0.5, relation={"weight": 0.5}))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights
    batch = next(iter(trainer.get_train_dataloader()))
    forward = trainer.model.forward

    def autocast_forward(*a, **kw):  # the forward alone under autocast; its outputs as the model returns them
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(*a, **kw)

    trainer.model.forward = autocast_forward
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    assert torch.isfinite(loss) and trainer.projections[0].weight.grad is not None
