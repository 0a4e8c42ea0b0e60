"""Defects that only show on users' hardware, reproduced on CPU: several GPUs in one process, GKD's
rollouts under gradient checkpointing and its token count, optional dependencies, batch-size-1 terms."""

import pytest
import torch
from test_train import cfg

from cotdistill import train
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError


def test_one_process_never_wraps_the_student_in_data_parallel(tiny_student, tmp_path, monkeypatch):
    """With n GPUs visible and no `accelerate launch`, transformers uses DataParallel: the batch grows
    n-fold and per-token losses come back as [n] tensors. Several GPUs are faked by the count transformers
    reads; the guard keeps the process on one device."""
    from transformers import TrainingArguments

    from cotdistill.train import common, sft

    real = TrainingArguments._setup_devices.func

    def many_gpus(self):  # transformers' cached property, with 4 GPUs counted
        if "_faked_device" not in self.__dict__:
            self.__dict__["_faked_device"] = real(self)
            self._n_gpu = 4
        return self.__dict__["_faked_device"]

    monkeypatch.setattr(TrainingArguments, "_setup_devices", property(many_gpus))
    with pytest.warns(UserWarning, match="4 GPUs are visible to one process"):
        trainer, _, _ = sft.build(cfg(tiny_student, tmp_path, max_steps=1))
    assert trainer.args.n_gpu == 1
    trainer.train()
    assert not isinstance(trainer.model_wrapped, torch.nn.DataParallel)
    args = TrainingArguments(output_dir=str(tmp_path / "x"), use_cpu=True)
    assert args.n_gpu == 4 and common.one_device(args).n_gpu == 1


def test_gkd_rollouts_use_the_kv_cache_under_gradient_checkpointing(tiny_student, tiny_model, tmp_path):
    from cotdistill.train import gkd

    trainer, _, _ = gkd.build(cfg(tiny_student, tmp_path, method="gkd", teacher=str(tiny_model),
                                  gradient_checkpointing=True, gkd={"lmbda": 1.0, "max_new_tokens": 8}))
    assert trainer.args.gradient_checkpointing
    assert trainer.generation_config.use_cache is True and trainer.generation_kwargs["use_cache"] is True


def test_gkd_on_policy_loss_is_a_mean_over_the_rollout_tokens(tiny_student, tiny_model, tmp_path):
    """transformers counts the trained tokens of the data batch before GKD replaces the labels with a
    rollout; dividing the rollout's summed JSD by that count weighted the step by generated / data length."""
    from cotdistill.train import gkd

    trainer, _, _ = gkd.build(cfg(tiny_student, tmp_path, method="gkd", teacher=str(tiny_model),
                                  gkd={"lmbda": 1.0, "max_new_tokens": 8}))
    batch = next(iter(trainer.get_train_dataloader()))
    data_tokens = int((batch["labels"][:, 1:] != -100).sum())
    trainer.model.train()
    loss = trainer.training_step(trainer.model, batch, num_items_in_batch=torch.tensor(data_tokens))
    with torch.no_grad():  # batch now holds the rollout
        s = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = trainer.teacher_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        mean = trainer.generalized_jsd_loss(s, t, labels=batch["labels"][:, 1:], beta=trainer.beta)
    rollout_tokens = int((batch["labels"][:, 1:] != -100).sum())
    assert rollout_tokens != data_tokens
    assert float(loss) == pytest.approx(float(mean), rel=1e-4)


def test_relation_and_importance_refuse_batch_size_one(tmp_path):
    base = dict(student="s", dataset_dir="d", output_dir="o", method="kd", teacher="t", per_device_train_batch_size=1)
    with pytest.raises(ValueError, match="relation: compares the examples of one micro-batch"):
        TrainConfig.model_validate({**base, "relation": {"weight": 1.0}})
    with pytest.raises(ValueError, match="kd.importance: compares"):
        TrainConfig.model_validate({**base, "kd": {"importance": "student_loss"}})
    TrainConfig.model_validate({**base, "per_device_train_batch_size": 2, "relation": {"weight": 1.0}})


def test_a_missing_optional_dependency_fails_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in ("tensorboard", "flash_attn") else real(n, *a)
    )
    c = TrainConfig.model_validate(dict(student=str(tmp_path / "nothing"), dataset_dir="d", output_dir="o",
                                        report_to=["tensorboard"]))
    with pytest.raises(CotdistillError, match=r"report_to: 'tensorboard' needs the tensorboard package.*"
                                              r"pip install 'cotdistill\[tracking\]'"):
        train.run(c)
    c = TrainConfig.model_validate(dict(student="s", dataset_dir="d", output_dir="o",
                                        attn_implementation="flash_attention_2"))
    with pytest.raises(CotdistillError, match="attn_implementation: 'flash_attention_2' needs the flash_attn"):
        train.run(c)


def test_liger_kernels_are_asked_of_the_trainer_and_need_their_package(tmp_path, monkeypatch):
    """use_liger_kernel reaches the trainer's arguments; without liger-kernel installed it fails before any work,
    naming the extra (the kernels are Triton: they run on CUDA only, so CPU tests stop at the check)."""
    import importlib.util

    from transformers import TrainingArguments

    from cotdistill.train.common import training_args

    c = TrainConfig.model_validate(dict(student="s", dataset_dir="d", output_dir=str(tmp_path / "o"),
                                        use_liger_kernel=True))
    assert training_args(TrainingArguments, c).use_liger_kernel is True
    assert training_args(TrainingArguments, c.model_copy(update={"use_liger_kernel": None})).use_liger_kernel is False
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "liger_kernel" else real(n, *a))
    with pytest.raises(CotdistillError, match=r"use_liger_kernel: 'liger' needs the liger_kernel package.*"
                                              r"pip install 'cotdistill\[gpu\]'"):
        train.run(c)


def test_run_checks_optional_dependencies_before_generating(tmp_path, monkeypatch):
    import importlib.util

    from conftest import ROOT

    from cotdistill import run as run_mod
    from cotdistill.config import RunConfig
    from cotdistill.loading import load_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    c = load_config(RunConfig, ROOT / "data/configs/run_demo.yaml",
                    [f"output_dir={tmp_path / 'run'}", "students.0.train.report_to=[wandb]"])
    with pytest.raises(CotdistillError, match=r"stage train:.*report_to: 'wandb' needs the wandb package"):
        run_mod.run(c)
    assert not (tmp_path / "run" / "generate").exists()


def test_run_refuses_a_benchmark_that_is_its_training_source(tmp_path):
    from conftest import ROOT

    from cotdistill import run as run_mod
    from cotdistill.config import RunConfig
    from cotdistill.loading import load_config

    same = "eval.benchmarks.0.source.path=data/digit_chain_train.jsonl"
    c = load_config(RunConfig, ROOT / "data/configs/run_demo.yaml", [f"output_dir={tmp_path / 'run'}", same])
    with pytest.raises(CotdistillError, match="the benchmark is the generate stage's own source"):
        run_mod.run(c)
    assert not (tmp_path / "run" / "generate").exists()


def test_trainer_memory_is_released_before_eval_engines_start(tiny_student, tmp_path, monkeypatch):
    """One process trains, then starts vLLM engines: the trainer's model must be gone by then."""
    import weakref

    from cotdistill import run as run_mod
    from cotdistill.train import common

    models = []
    real = common.load_student

    def tracked(*a, **kw):
        m = real(*a, **kw)
        models.append(weakref.ref(m))
        return m

    monkeypatch.setattr(common, "load_student", tracked)
    from cotdistill.train import sft

    monkeypatch.setattr(sft, "load_student", tracked)
    c = cfg(tiny_student, tmp_path, max_steps=1)

    from cotdistill.plan import Stage

    class FakePlan:
        stages = {"train:s@0": Stage("train:s@0", "train", tmp_path / "s", c, [], "-")}

    run_mod._run_stage(FakePlan(), "train:s@0")
    assert models and models[0]() is None


def _base_model_eos(student, tmp_path):
    """A student whose tokenizer and generation config stop on <|endoftext|> while its chat template closes
    assistant turns with <|im_end|>: a base model given a chat template, as users fine-tune them."""
    import json
    import shutil

    d = tmp_path / "base-eos"
    shutil.copytree(student, d)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["eos_token"] = "<|endoftext|>"
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(d)
    GenerationConfig(eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>")).save_pretrained(d)
    return d


def test_students_are_saved_stopping_at_the_end_of_their_turn(tiny_student, tmp_path):
    from cotdistill.chat import stop_token_problem

    student = _base_model_eos(tiny_student, tmp_path)
    assert "would not stop at the end of the answer" in stop_token_problem(student)
    train.run(cfg(student, tmp_path, max_steps=1))
    assert stop_token_problem(tmp_path / "out/final") is None


def test_eval_refuses_a_student_that_would_not_stop(tiny_student, tmp_path):
    from conftest import ROOT, teacher_dict

    from cotdistill import evaluate
    from cotdistill.config import EvalConfig

    student = _base_model_eos(tiny_student, tmp_path)
    c = EvalConfig.model_validate({
        "models": [{"name": "s", "role": "student", "serve": teacher_dict(student)}],
        "benchmarks": [{"name": "a", "source": {"kind": "hf", "path": str(ROOT / "data/arithmetic_test.jsonl"),
                                                "fields": {"id": "id"}, "limit": 2}}],
        "output_dir": str(tmp_path / "eval"), "progress": False})
    with pytest.raises(CotdistillError, match=r"model 's': .* ends assistant turns with '<\|im_end\|>'"):
        evaluate.run(c)


R1_LIKE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>user\n{{ m['content'] }}<|im_end|>\n"
    "{% else %}{% set c = m['content'] %}{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "<|im_start|>assistant\n{{ c }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize("method", ["sft", "gkd"])
def test_a_template_that_drops_the_reasoning_is_refused(tiny_student, tiny_model, tmp_path, method):
    """DeepSeek-R1's template keeps only the text after </think> in assistant turns (the real one is tested with
    the real tokenizer in test_real_tokenizers.py); a student with it would train on answers only."""
    from test_train import with_template

    student = with_template(tiny_student, tmp_path, template=R1_LIKE)
    kw = {"method": "gkd", "teacher": str(tiny_model), "gkd": {"lmbda": 0.0}} if method == "gkd" else {}
    with pytest.raises(CotdistillError, match=r"rewrites the assistant turn \(it keeps \d+ of \d+ characters"):
        train.run(cfg(student, tmp_path, max_steps=1, **kw))
    from cotdistill.tiny import CHAT_TEMPLATE

    s = train.run(cfg(student, tmp_path / "fixed", max_steps=1, chat_template=CHAT_TEMPLATE, **kw))
    assert s["steps"] == 1


def test_a_missing_chat_template_file_is_one_line(tiny_student, tmp_path):
    with pytest.raises(CotdistillError, match=r"chat_template: .*nope\.jinja not found"):
        train.run(cfg(tiny_student, tmp_path, chat_template=str(tmp_path / "nope.jinja")))
    template = tmp_path / "t.jinja"
    from cotdistill.tiny import CHAT_TEMPLATE

    template.write_text(CHAT_TEMPLATE)
    assert train.run(cfg(tiny_student, tmp_path / "ok", max_steps=1, chat_template=str(template)))["steps"] == 1
