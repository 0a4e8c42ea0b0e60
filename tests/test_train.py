"""Distill stage: real TRL runs of a few steps on tiny local models, loss masks token by token,
every preflight refusal, resume, and the cached-logit KD loss."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch

from cotdistill import train
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError
from cotdistill.train.logit_kd import kd_loss

ROWS = [{"messages": [{"role": "user", "content": f"Compute {i} + {i}."},
                      {"role": "assistant", "content": f"<think>{i} + {i} = {2 * i}</think>\\boxed{{{2 * i}}}"}],
         "problem_id": f"p{i}", "sample_index": 0} for i in range(8)]


def dataset_dir(tmp_path, rows=ROWS):
    d = tmp_path / "data"
    datasets.Dataset.from_list(rows).save_to_disk(str(d / "sft"))
    prompts = [{"prompt": r["messages"][:1], "problem_id": r["problem_id"], "gold": "x"} for r in rows]
    datasets.Dataset.from_list(prompts).save_to_disk(str(d / "prompts"))
    return d


def cfg(student, tmp_path, **kw):
    d = dict(student=str(student), dataset_dir=str(dataset_dir(tmp_path)), output_dir=str(tmp_path / "out"),
             max_steps=4, logging_steps=1, per_device_train_batch_size=4, max_length=256, progress=False)
    d.update(kw)
    return TrainConfig.model_validate(d)


def with_template(model_dir, tmp_path, template=None, drop_pad=False):
    d = tmp_path / "variant"
    shutil.copytree(model_dir, d)
    if template is not None:
        (d / "chat_template.jinja").write_text(template)
    if drop_pad:
        tc = json.loads((d / "tokenizer_config.json").read_text())
        tc.pop("pad_token", None)
        (d / "tokenizer_config.json").write_text(json.dumps(tc))
    return d


def test_sft_masks_prompt_token_by_token_and_learns(tiny_student, tmp_path):
    from transformers import AutoTokenizer

    from cotdistill.train import sft

    c = cfg(tiny_student, tmp_path, max_steps=30, learning_rate=5e-3)
    trainer, tok, pre = sft.build(c)
    assert pre["format"] == "prompt_completion" and pre["examples"] == 8
    row = trainer.train_dataset[0]
    prompt_len = len(tok.apply_chat_template(ROWS[0]["messages"][:1], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"])
    assert all(lab == -100 for lab in row["labels"][:prompt_len])
    assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]
    assert tok.convert_tokens_to_ids("<|im_end|>") in row["labels"][prompt_len:]
    summary = train.run(c)
    assert summary["last_logged_loss"] < 0.5 * summary["first_logged_loss"]  # memorisable set
    reloaded = AutoTokenizer.from_pretrained(summary["final_model"])
    assert reloaded.get_vocab() == tok.get_vocab()
    assert json.loads((tmp_path / "out/summary.json").read_text())["steps"] == 30


def test_resume_from_last_checkpoint(tiny_student, tmp_path):
    train.run(cfg(tiny_student, tmp_path, max_steps=4, save_steps=2))
    s = train.run(cfg(tiny_student, tmp_path, max_steps=6, save_steps=2))
    assert s["resumed_from"].endswith("checkpoint-4") and s["steps"] == 6


TEMPLATE_NO_EOT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                   "{% if m['role'] != 'assistant' %}<|im_end|>\n{% endif %}{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEMPLATE_NO_ASSISTANT = ("{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{{ m['role'] }}\n"
                         "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize(
    "variant,kw,expect",
    [
        ({"template": TEMPLATE_NO_EOT}, {}, "the end-of-turn token is not trained"),
        (
            {"template": TEMPLATE_NO_ASSISTANT},
            {},
            "the student's chat template rewrites the assistant turn (it keeps 0 of",
        ),
        ({"drop_pad": True}, {}, "has no pad token"),
        ({}, {"max_length": 20, "max_truncated_share": 0.0}, "8 of 8 examples (100.0%) exceed max_length 20"),
    ],
)
def test_preflight_refusals(tiny_student, tmp_path, variant, kw, expect):
    student = with_template(tiny_student, tmp_path, **variant) if variant else tiny_student
    with pytest.raises(CotdistillError) as e:
        train.run(cfg(student, tmp_path, **kw))
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out" / "final").exists()


def test_packing_without_varlen_attention_is_refused(tiny_student, tmp_path):
    with pytest.raises(ValueError, match="packing lets packed examples attend to each other"):
        cfg(tiny_student, tmp_path, packing=True)


def test_logit_methods_refuse_a_different_tokenizer(tiny_student, tmp_path):
    from cotdistill.tiny import build_tokenizer

    other = with_template(tiny_student, tmp_path)
    build_tokenizer(other, vocab_size=400)
    with pytest.raises(CotdistillError, match="student and teacher tokenizers differ"):
        train.run(cfg(tiny_student, tmp_path, method="gkd", teacher=str(other)))


@pytest.mark.parametrize("method", ["gkd", "distill"])
def test_live_teacher_methods_run(tiny_student, tiny_model, tmp_path, method):
    s = train.run(cfg(tiny_student, tmp_path, method=method, teacher=str(tiny_model),
                      gkd={"max_new_tokens": 12, "lmbda": 1.0}))
    assert s["steps"] == 4 and s["train_loss"] > 0 and (tmp_path / "out/final/config.json").exists()


def test_kd_loss_zero_when_student_matches_teacher():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 50)
    lp = torch.log_softmax(logits, -1)
    top_lp, top_ids = lp.topk(8, -1)
    # teacher arrays are aligned with target positions: position t holds the distribution of token t
    tid = torch.cat([torch.full((1, 1, 8), -1), top_ids[:, :-1]], 1)
    tlp = torch.cat([torch.zeros(1, 1, 8), top_lp[:, :-1]], 1)
    labels = torch.tensor([[-100, 3, 4, 5, 6]])
    loss, ce, kd = kd_loss(logits, labels, tid, tlp, alpha=1.0, temperature=1.0)
    assert kd.abs() < 1e-5
    _, _, kd2 = kd_loss(torch.randn(1, 5, 50), labels, tid, tlp, alpha=1.0, temperature=1.0)
    assert kd2 > 0.01
    loss_ce, ce_only, _ = kd_loss(logits, labels, tid, tlp, alpha=0.0, temperature=2.0)
    assert torch.isclose(loss_ce, ce_only)


def test_logit_kd_from_real_generation(tiny_model, tiny_student, vllm_teacher, tmp_path):
    from test_generate import make_cfg

    from cotdistill import filter as filter_stage
    from cotdistill import generate
    from cotdistill.config import FilterConfig

    generate.run(make_cfg(tiny_model, tmp_path / "gen", **{"source.limit": 4, "sampling.logprobs": 4}),
                 teacher=vllm_teacher)
    filter_stage.run(FilterConfig(generate_dir=str(tmp_path / "gen"), output_dir=str(tmp_path / "flt"),
                                  require_correct=False, require_stop=False, format_check=False,
                                  near_dup_threshold=None, verify_workers=1, progress=False))
    base = dict(method="logit_kd", student=str(tiny_student), dataset_dir=str(tmp_path / "flt"),
                logprobs=str(tmp_path / "gen/logprobs.jsonl"), output_dir=str(tmp_path / "kd"), max_steps=3,
                logging_steps=1, per_device_train_batch_size=4, max_length=256, progress=False)
    s = train.run(TrainConfig.model_validate(base))
    assert s["steps"] == 3 and s["preflight"]["top_k"] == 4 and s["preflight"]["examples"] == 12
    # a cache from another tokenizer is refused
    lp = tmp_path / "gen/logprobs.jsonl"
    rows = [json.loads(x) for x in lp.read_text().splitlines()]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({**r, "tokenizer_hash": "0" * 16}) + "\n" for r in rows))
    with pytest.raises(CotdistillError, match="cached logprobs come from tokenizer 0000000000000000"):
        train.run(TrainConfig.model_validate({**base, "logprobs": str(bad)}))
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.raises(CotdistillError, match="no logprob record for kept trace"):
        train.run(TrainConfig.model_validate({**base, "logprobs": str(bad)}))
    swapped = rows[1:2] + rows[:1] + rows[2:]
    bad.write_text("".join(json.dumps({**r, "problem_id": o["problem_id"], "sample_index": o["sample_index"]}) + "\n"
                           for r, o in zip(swapped, rows)))
    if rows[0]["token_ids"] != rows[1]["token_ids"]:
        with pytest.raises(CotdistillError, match="do not decode to the trace's completion"):
            train.run(TrainConfig.model_validate({**base, "logprobs": str(bad)}))


def test_padding_only_vocab_difference_is_handled(tiny_student, tiny_model, tmp_path):
    """Same tokenizer, embedding of 576 rows vs the teacher's 512 (like 151936 vs 152064)."""
    from transformers import AutoModelForCausalLM

    padded = with_template(tiny_student, tmp_path)
    m = AutoModelForCausalLM.from_pretrained(padded)
    m.resize_token_embeddings(576)
    m.save_pretrained(padded)
    s = train.run(cfg(padded, tmp_path, method="gkd", teacher=str(tiny_model), max_steps=2,
                      gkd={"max_new_tokens": 8, "lmbda": 0.0}))
    assert s["steps"] == 2 and s["preflight"]["teacher_embedding_resized"] == {
        "teacher_vocab_size": 512,
        "resized_to": 576,
    }


def test_lora_sft_merges_into_final(tiny_student, tmp_path):
    from transformers import AutoModelForCausalLM

    s = train.run(cfg(tiny_student, tmp_path, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                      learning_rate=1e-2))
    final = AutoModelForCausalLM.from_pretrained(s["final_model"])
    base = AutoModelForCausalLM.from_pretrained(tiny_student)
    assert not any("lora" in n for n, _ in final.named_parameters())
    changed = [n for (n, a), (_, b) in zip(final.named_parameters(), base.named_parameters()) if not torch.equal(a, b)]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)


def test_assistant_end_token_comes_from_the_chat_template(tiny_model):
    from transformers import AutoTokenizer

    from cotdistill.chat import assistant_end_token

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert assistant_end_token(tok) == tok.convert_tokens_to_ids("<|im_end|>")  # ChatML
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|endoftext|>{% endfor %}"
    assert assistant_end_token(tok) == tok.convert_tokens_to_ids("<|endoftext|>")  # another template's closer
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert assistant_end_token(tok) is None  # plain text after the turn: no special token to learn


@pytest.mark.parametrize("method,large", [("sft", False), ("gkd", False), ("sft", True)])
def test_training_leaves_its_input_dataset_folder_as_it_was(tiny_student, tiny_model, tmp_path, method, large,
                                                            monkeypatch):
    """The filter's output is another stage's folder (maybe read-only, maybe read by other runs): training writes
    no tokenisation cache (cache-*.arrow) or anything else into it; every file keeps its bytes. A split too large
    to read into memory is linked into the trainer's own folder, where its caches go."""
    from cotdistill import artifacts

    if large:
        monkeypatch.setattr(artifacts, "IN_MEMORY_MAX_BYTES", 0)
    kw = {"teacher": str(tiny_model), "gkd": {"max_new_tokens": 4}} if method == "gkd" else {}
    c = cfg(tiny_student, tmp_path, method=method, max_steps=2, **kw)
    before = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    train.run(c)
    after = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert sorted(map(str, after)) == sorted(map(str, before)) and after == before
    linked = Path(c.output_dir) / ".dataset" / "sft.rank0"
    assert linked.is_dir() == large
    if large:  # the same data, memory-mapped from the trainer's folder
        source = {f.name for f in (tmp_path / "data/sft").glob("*.arrow")}
        assert {f.name for f in linked.glob("data-*.arrow")} == source
