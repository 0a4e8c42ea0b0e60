"""Sequence-level KD: TRL ``SFTTrainer`` on the filtered teacher traces, loss on the assistant turn.

Chat templates with ``{% generation %}`` markers train with TRL's ``assistant_only_loss``; the
many real templates without them (TRL refuses those) are fed as prompt/completion pairs, where TRL
masks the prompt, so any chat model works. Preflight then checks the processed examples token by
token before the first step.
"""

from __future__ import annotations

from cotdistill.chat import load_tokenizer
from cotdistill.config import TrainConfig
from cotdistill.train.common import load_student, training_args
from cotdistill.train.data import check_loss_masks, check_template_keeps_completion, drop_too_long, load_split


def to_prompt_completion(ds):
    return ds.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                  remove_columns=["messages"])


def build(cfg: TrainConfig):
    from trl import SFTConfig, SFTTrainer

    tok = load_tokenizer(cfg.student, "student", cfg.chat_template)
    ds, dropped = drop_too_long(load_split(cfg, "sft"), tok, cfg.max_length, cfg.max_truncated_share)
    check_template_keeps_completion(tok, ds)
    markers = "{% generation %}" in tok.chat_template or "{%- generation %}" in tok.chat_template
    train_ds = ds if markers else to_prompt_completion(ds)
    args = training_args(
        SFTConfig, cfg, max_length=cfg.max_length, packing=cfg.packing,
        assistant_only_loss=markers, completion_only_loss=None if markers else True,
        train_sampling_strategy="group_by_length" if cfg.length_grouped else "random",
    )
    trainer = SFTTrainer(model=load_student(cfg), args=args, train_dataset=train_ds, processing_class=tok)
    preflight = check_loss_masks(trainer.train_dataset, tok, source_ds=ds)
    preflight.update({"dropped_too_long": dropped, "format": "messages" if markers else "prompt_completion"})
    return trainer, tok, preflight

