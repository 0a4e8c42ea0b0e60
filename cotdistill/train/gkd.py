"""Logit-level distillation with a live teacher, through TRL:

- ``gkd``: ``trl.experimental.gkd.GKDTrainer`` on the filtered conversations. Each step is
  on-policy (student rollouts) with probability ``lmbda``; loss is the generalized JSD with
  ``beta`` (0 = forward KL, 1 = reverse KL); ``seq_kd`` adds teacher-generated sequences.
- ``distill``: TRL's stable ``DistillationTrainer``, fully on-policy, on the prompt-only view;
  student rollouts through vLLM where it runs (``gkd.use_vllm``; GPUs by default).

Warm start: point ``student`` at an SFT checkpoint (``.../final``); JSD from a random student
learns very slowly. Teacher and student must share the tokenizer (checked before loading models).
"""

from __future__ import annotations

import os

from cotdistill.chat import load_tokenizer
from cotdistill.config import TrainConfig, chunk_size
from cotdistill.errors import CotdistillError
from cotdistill.train.common import chunk_for, device_defaults, global_token_loss, load_student, training_args
from cotdistill.train.data import (
    check_loss_masks,
    check_same_vocab,
    check_template_keeps_completion,
    drop_too_long,
    load_split,
)


def _teacher_kwargs(cfg: TrainConfig) -> dict:
    # TRL needs a "dtype" key here, given by name (it does getattr(torch, name))
    return {"dtype": "bfloat16" if device_defaults(cfg)["bf16"] else "float32"}


def teacher_for(cfg: TrainConfig, tok):
    """The teacher as TRL should get it: its path, or, when its embedding has a different number of
    rows than the student's while the tokenizers agree (padding rows, e.g. 152064 vs 151936), the
    loaded model with its embedding resized to the student's: rows past the tokenizer are never
    produced, so dropping or adding them changes nothing the student learns from."""
    from transformers import AutoConfig, AutoModelForCausalLM

    sv = AutoConfig.from_pretrained(cfg.student).get_text_config().vocab_size
    tv = AutoConfig.from_pretrained(cfg.teacher).get_text_config().vocab_size
    if sv == tv:
        return cfg.teacher, None
    if min(sv, tv) < len(tok):
        raise CotdistillError(f"preflight: student vocab_size {sv} / teacher {tv} is smaller than the tokenizer "
                              f"({len(tok)} tokens); the models do not match their tokenizer")
    import torch

    teacher = AutoModelForCausalLM.from_pretrained(cfg.teacher, dtype=getattr(torch, _teacher_kwargs(cfg)["dtype"]))
    teacher.resize_token_embeddings(sv, mean_resizing=False)
    return teacher, {"teacher_vocab_size": tv, "resized_to": sv}


def gkd_trainer_class():
    """TRL's GKDTrainer with four fixes for runs on GPUs:

    - rollouts use the KV cache: TRL turns ``use_cache`` off whenever gradient checkpointing is on (the
      GPU default), so every generated token recomputed the whole prefix; generation happens with
      checkpointing disabled (TRL's unwrap does that), so the cache is safe there.
    - an on-policy (or seq_kd) step replaces the labels after transformers counted the trained tokens
      (``num_items_in_batch``) from the data: the sum over the rollout's tokens was divided by the data's
      count, weighting the step by generated length / data length. After a rollout the loss is the mean
      over the rollout's own trained tokens (divided by the accumulation steps, as transformers does).
    - an off-policy step is divided by the trained tokens counted over all processes, and DDP then averages the
      gradients over processes: TRL leaves out the x num_processes that transformers' own losses apply, so on P
      processes off-policy steps weighed 1/P of on-policy ones and of a one-process run (``global_token_loss``).
    - the loss is made ``loss_chunk_tokens`` trained tokens at a time from both models' final hidden states
      (``gkd_jsd_chunked``): TRL's keeps ~12 fp32 [B, L, V] tensors (~55 GiB at 2 x 4k tokens on Qwen's vocabulary).
    """
    from trl.experimental.gkd import GKDTrainer

    from cotdistill.lm_head import check_head

    class CotGKDTrainer(GKDTrainer):
        def __init__(self, *args, chunk: int = 0, **kw):
            super().__init__(*args, **kw)
            self.generation_config.use_cache = True
            self.generation_kwargs["use_cache"] = True
            self._rolled_out = False
            self.chunk = chunk_for(self, chunk)
            if self.chunk:
                check_head(self.accelerator.unwrap_model(self.model), "student")
                check_head(self.accelerator.unwrap_model(self.teacher_model), "teacher")

        def generate_on_policy_outputs(self, model, inputs, generation_config):
            self._rolled_out = True
            return GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)

        def training_step(self, model, inputs, num_items_in_batch=None):
            self._rolled_out = False
            try:
                return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self._rolled_out = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self._rolled_out and num_items_in_batch is not None:
                trained = (inputs["labels"][:, 1:] != -100).sum().clamp(min=1)
                num_items_in_batch = trained * getattr(self, "current_gradient_accumulation_steps",
                                                       self.args.gradient_accumulation_steps)
            if self.chunk:
                loss, out = _chunked_loss(self, model, inputs, num_items_in_batch)
                result = (loss, out) if return_outputs else loss
            else:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self._rolled_out:  # normalised by this process's own tokens above: nothing to undo
                return result
            if return_outputs:
                return global_token_loss(self, result[0], num_items_in_batch), result[1]
            return global_token_loss(self, result, num_items_in_batch)

    return CotGKDTrainer


def _chunked_loss(trainer, model, inputs, num_items_in_batch):
    """GKD's JSD from both models' final hidden states, ``trainer.chunk`` trained tokens at a time."""
    import torch

    from cotdistill.lm_head import final_hidden, head_fn
    from cotdistill.train.losses import gkd_jsd_chunked

    ids, att = inputs["input_ids"], inputs["attention_mask"]
    out, hidden = final_hidden(model, input_ids=ids, attention_mask=att)
    teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    teacher.eval()
    with torch.no_grad():
        _, t_hidden = final_hidden(trainer.teacher_model, input_ids=ids, attention_mask=att)
    with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=bool(trainer.args.bf16)):
        loss = gkd_jsd_chunked(hidden, head_fn(trainer.accelerator.unwrap_model(model)), t_hidden, head_fn(teacher),
                               inputs["labels"], trainer.beta, num_items_in_batch, trainer.chunk)
    return loss, out


def _collated_view(trainer, ds):
    """GKD tokenizes in its collator: collate each example alone to see its labels."""
    import datasets

    rows = []
    for i in range(len(ds)):
        batch = trainer.data_collator([ds[i]])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        keep = [j for j, m in enumerate(batch["attention_mask"][0].tolist()) if m]
        rows.append({"input_ids": [ids[j] for j in keep], "labels": [labels[j] for j in keep]})
    return datasets.Dataset.from_list(rows)


def build(cfg: TrainConfig):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    tok = load_tokenizer(cfg.student, "student", cfg.chat_template)
    check_same_vocab(tok, load_tokenizer(cfg.teacher, "teacher"), f"method {cfg.method}")
    teacher, resized = teacher_for(cfg, tok)
    g = cfg.gkd
    if cfg.method == "gkd":
        from trl.experimental.gkd import GKDConfig

        ds, dropped = drop_too_long(load_split(cfg, "sft"), tok, cfg.max_length, cfg.max_truncated_share)
        check_template_keeps_completion(tok, ds)
        args = training_args(GKDConfig, cfg, max_length=cfg.max_length, lmbda=g.lmbda, beta=g.beta,
                         temperature=g.temperature, seq_kd=g.seq_kd, max_new_tokens=g.max_new_tokens,
                         teacher_model_init_kwargs=None if resized else _teacher_kwargs(cfg))
        trainer = gkd_trainer_class()(model=load_student(cfg), teacher_model=teacher, args=args, train_dataset=ds,
                                      processing_class=tok, chunk=chunk_size(cfg.loss_chunk_tokens))
        preflight = check_loss_masks(_collated_view(trainer, ds), tok, source_ds=ds)
        preflight.update({"dropped_too_long": dropped, "teacher_embedding_resized": resized})
        return trainer, tok, preflight

    import torch
    from trl import DistillationConfig, DistillationTrainer

    ds = load_split(cfg, "prompts")
    if "prompt" not in ds.column_names:
        raise CotdistillError(
            f"dataset_dir: {cfg.dataset_dir}/prompts has no 'prompt' column; re-run `cotdistill filter`"
        )
    ds, dropped = drop_too_long(ds, tok, cfg.max_length - g.max_new_tokens if cfg.max_length > g.max_new_tokens
                                else cfg.max_length, cfg.max_truncated_share, column="prompt")
    use_vllm = g.use_vllm if g.use_vllm is not None else torch.cuda.is_available()
    args = training_args(DistillationConfig, cfg, beta=g.beta, temperature=g.temperature,
                              max_completion_length=g.max_new_tokens, use_vllm=use_vllm,
                              vllm_mode="colocate",
                              teacher_model_init_kwargs=None if resized else _teacher_kwargs(cfg))
    trainer = DistillationTrainer(model=load_student(cfg), teacher_model=teacher, args=args, train_dataset=ds,
                                  processing_class=tok)
    return trainer, tok, {"examples": len(ds), "dropped_too_long": dropped, "on_policy": True, "use_vllm": use_vllm,
                          "teacher_embedding_resized": resized}

