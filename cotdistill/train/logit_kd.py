"""KD from the teacher's cached top-k logprobs (captured by ``generate`` with sampling.logprobs):
no teacher model in memory during training.

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(trace tokens)

The KL is taken over k + 1 buckets, the teacher's top-k tokens and one tail bucket holding the
remaining mass, for teacher and student alike, each bucket tempered as one token (train/losses.py). Each training
example is the prompt rendered by the student's chat template followed by the exact token ids
the teacher generated; the cache must come from the same tokenizer (hash) and decode to the
trace's text, or the run is refused naming the example.
"""

from __future__ import annotations

import torch
from transformers import Trainer

from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError
from cotdistill.records import TokenLogprobs, trace_key
from cotdistill.store import iter_jsonl
from cotdistill.teachers.base import tokenizer_hash
from cotdistill.train.losses import kd_loss
from cotdistill.train.common import (assistant_end_token, end_of_turn_ids, example_name, load_split, load_tokenizer,
                                     peft_config, train_and_save, trainer_kwargs)


class CachedKDTrainer(Trainer):
    def __init__(self, *args, alpha: float, temperature: float, **kw):
        super().__init__(*args, **kw)
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # num_items_in_batch: trained tokens of the whole accumulated step (transformers counts them
        # because the model accepts loss kwargs, and then does not divide by the accumulation steps)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        loss, _, _ = kd_loss(out.logits, inputs["labels"], inputs["top_ids"], inputs["top_lp"],
                             self.alpha, self.temperature, num_items=num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # the count is global; DDP averages gradients
        return (loss, out) if return_outputs else loss


def collate(pad_id: int, k: int):
    def fn(rows):
        n = max(len(r["input_ids"]) for r in rows)
        b = len(rows)
        ids = torch.full((b, n), pad_id, dtype=torch.long)
        att = torch.zeros((b, n), dtype=torch.long)
        lab = torch.full((b, n), -100, dtype=torch.long)
        tid = torch.full((b, n, k), -1, dtype=torch.long)
        tlp = torch.zeros((b, n, k), dtype=torch.float32)
        for i, r in enumerate(rows):
            m = len(r["input_ids"])
            ids[i, :m] = torch.tensor(r["input_ids"])
            att[i, :m] = 1
            lab[i, :m] = torch.tensor(r["labels"])
            p = r["prompt_len"]
            tid[i, p:m] = torch.tensor(r["top_ids"], dtype=torch.long).view(-1, k)
            tlp[i, p:m] = torch.tensor(r["top_lp"], dtype=torch.float32).view(-1, k)
        return {"input_ids": ids, "attention_mask": att, "labels": lab, "top_ids": tid, "top_lp": tlp}
    return fn


def build_examples(cfg: TrainConfig, tok, ds) -> tuple[list[dict], int, int]:
    """Join kept traces with their cached logprobs; check tokenizer and token sequence."""
    from pathlib import Path

    want = {trace_key(r["problem_id"], r["sample_index"]): i for i, r in enumerate(ds)}
    recs: dict[str, TokenLogprobs] = {}
    path = Path(cfg.logprobs)
    if not path.is_file():
        raise CotdistillError(f"logprobs: {path} not found; generate with sampling.logprobs=K to capture it")
    for _, obj in iter_jsonl(path):
        key = trace_key(obj["problem_id"], obj["sample_index"])
        if key in want:
            recs[key] = TokenLogprobs.model_validate(obj)
    student_hash, eot = tokenizer_hash(tok), end_of_turn_ids(tok)
    closing = assistant_end_token(tok)
    closing = tok.eos_token_id if closing is None else closing
    examples, too_long, k = [], 0, None
    for key, i in want.items():
        row, name = ds[i], example_name(ds, i)
        rec = recs.get(key)
        if rec is None:
            raise CotdistillError(f"preflight: {name} has no record in {path}; it was generated without logprobs")
        if rec.tokenizer_hash != student_hash:
            raise CotdistillError(f"preflight: {name}: the cached logprobs come from tokenizer {rec.tokenizer_hash}, the "
                                  f"student's is {student_hash}; cached-logit KD needs the teacher's tokenizer")
        k = k or rec.top_k
        a = rec.arrays()
        comp = a["token_ids"].tolist()
        text = row["messages"][-1]["content"]
        if tok.decode(comp, skip_special_tokens=True).rstrip("\ufffd") != text.rstrip("\ufffd"):
            raise CotdistillError(f"preflight: {name}: the cached token ids do not decode to the trace's completion; "
                                  f"the cache belongs to another sequence")
        top_ids, top_lp = a["top_ids"].tolist(), a["top_logprobs"].tolist()
        if not comp or comp[-1] not in eot:  # the student must learn to stop; no teacher entry there
            comp = comp + [closing]
            top_ids.append([-1] * rec.top_k)
            top_lp.append([0.0] * rec.top_k)
        prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]
        ids = list(prompt) + comp
        if len(ids) > cfg.max_length:
            too_long += 1
            continue
        examples.append({"input_ids": ids, "labels": [-100] * len(prompt) + comp, "prompt_len": len(prompt),
                         "top_ids": [x for r in top_ids for x in r], "top_lp": [max(x, -1e4) for r in top_lp for x in r],
                         "length": len(ids), "problem_id": row["problem_id"], "sample_index": row["sample_index"]})
    if too_long / len(ds) > cfg.max_truncated_share:
        raise CotdistillError(f"{too_long} of {len(ds)} examples exceed max_length {cfg.max_length}; raise max_length "
                              f"or max_truncated_share")
    return examples, too_long, k


def build(cfg: TrainConfig):
    import datasets
    from transformers import AutoModelForCausalLM, TrainingArguments

    tok = load_tokenizer(cfg.student, "student")
    ds = load_split(cfg, "sft")
    examples, dropped, k = build_examples(cfg, tok, ds)
    train_ds = datasets.Dataset.from_list(examples)
    args = TrainingArguments(**trainer_kwargs(cfg), remove_unused_columns=False,
                             train_sampling_strategy="group_by_length" if cfg.length_grouped else "random")
    model = AutoModelForCausalLM.from_pretrained(cfg.student, dtype=torch.bfloat16 if args.bf16 else torch.float32,
                                                 **({"attn_implementation": cfg.attn_implementation}
                                                    if cfg.attn_implementation else {}))
    if cfg.lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(cfg))
    trainer = CachedKDTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                              data_collator=collate(tok.pad_token_id, k), alpha=cfg.kd.alpha,
                              temperature=cfg.kd.temperature)
    preflight = {"examples": len(examples), "dropped_too_long": dropped, "top_k": k,
                 "trained_tokens": sum(len(e["input_ids"]) - e["prompt_len"] for e in examples)}
    return trainer, tok, preflight


def run(cfg: TrainConfig) -> dict:
    trainer, tok, preflight = build(cfg)
    return train_and_save(trainer, cfg, tok, preflight)
