"""cotdistill/student_init.py: a student made of the teacher's own blocks (DistilBERT init)."""

import json

import pytest
import torch
from conftest import ROOT
from transformers import AutoModelForCausalLM

from cotdistill.errors import CotdistillError
from cotdistill.student_init import choose_layers, from_teacher


@pytest.mark.parametrize("depth,layers,every,want", [(6, None, 2, [0, 2, 4]), (3, None, 2, [0, 2]),
                                                     (3, None, 3, [0]), (6, [1, 5], 2, [1, 5])])
def test_choose_layers(depth, layers, every, want):
    assert choose_layers(depth, layers, every) == want


@pytest.mark.parametrize("layers,expect", [([0, 3], r"\[3\] are not blocks of the teacher \(it has 3: 0..2\)"),
                                           ([2, 0], "increasing order")])
def test_choose_layers_refuses(layers, expect):
    with pytest.raises(CotdistillError, match=expect):
        choose_layers(3, layers, 2)


def test_copies_embeddings_chosen_blocks_and_head(tiny_model, tmp_path):
    out = from_teacher(tiny_model, tmp_path / "s", layers=[1])
    t = AutoModelForCausalLM.from_pretrained(tiny_model)
    s = AutoModelForCausalLM.from_pretrained(out)
    assert s.config.num_hidden_layers == 1 and t.config.num_hidden_layers == 2
    assert json.loads((out / "cotdistill_from_teacher.json").read_text())["layers"] == [1]
    ts, ss = t.state_dict(), s.state_dict()
    assert torch.equal(ss["model.embed_tokens.weight"], ts["model.embed_tokens.weight"])
    assert torch.equal(ss["model.norm.weight"], ts["model.norm.weight"])
    for k, v in ss.items():
        if k.startswith("model.layers.0."):
            assert torch.equal(v, ts[k.replace("model.layers.0.", "model.layers.1.")]), k
    # the reduced model is a working causal LM: cached generation equals the uncached forward
    ids = torch.tensor([[5, 17, 9, 30]])
    greedy = s.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    seq = ids
    for _ in range(6):
        nxt = s(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(greedy[:, :seq.size(1)], seq)
    assert (out / "tokenizer.json").exists()


PINNED_FP = "63197119b2bcbb93"


@pytest.mark.parametrize("init_std", [None, 0.08])
def test_fresh_student_weights_at_the_chosen_std(tmp_path, init_std):
    """A fresh student's linear and embedding weights are drawn at ``init_std`` (None: transformers' 0.02); the
    norms stay at 1."""
    from cotdistill.config import StudentInit, VLLMTeacher
    from cotdistill.student_init import run

    spec = StudentInit(**({} if init_std is None else {"init_std": init_std}))
    path = run(spec, VLLMTeacher(model=str(ROOT / "data/teacher")), tmp_path)["model"]
    m = AutoModelForCausalLM.from_pretrained(path)
    want = init_std or 0.02
    for name, w in m.named_parameters():
        if w.dim() == 2:
            assert abs(w.std().item() - want) < 0.1 * want, name
        else:
            assert torch.all(w == 1), name
    assert json.loads((tmp_path / "model" / "cotdistill_tiny.json").read_text())["init_std"] == want


def test_init_std_left_out_of_the_fingerprint_when_unset(tmp_path):
    """Runs planned before the field existed keep their stage fingerprints (they resume): the value pinned is the
    one a1dbb31 (before init_std) planned for run_on_policy.yaml's first student_init stage; a set std changes it."""
    from cotdistill.config import RunConfig, StudentInit
    from cotdistill.loading import load_config
    from cotdistill.plan import Plan

    cfg = lambda *o: load_config(RunConfig, ROOT / "data/configs/run_on_policy.yaml",  # noqa: E731
                                 ["output_dir=runs/on_policy", *o])
    assert Plan(cfg("student.init_std=null")).fps["student_init@0"] == PINNED_FP
    assert Plan(cfg("student.init_std=0.08")).fps["student_init@0"] != PINNED_FP
    with pytest.raises(ValueError, match="init_std"):
        StudentInit(init_std=0)


def test_tiny_module_help_builds_nothing(tmp_path):
    """`python -m cotdistill.tiny --help` prints its usage; it used to build a model into a folder named --help."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "cotdistill.tiny", "--help"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("usage: python -m cotdistill.tiny")
    assert not any(tmp_path.iterdir())
