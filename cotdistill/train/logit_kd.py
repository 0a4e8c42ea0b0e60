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

import os
import sys

import torch
from transformers import Trainer

from cotdistill import logit_cache
from cotdistill.chat import end_of_turn_ids, load_tokenizer, tokenizer_hash
from cotdistill.config import TrainConfig, chunk_size
from cotdistill.errors import CotdistillError
from cotdistill.lm_head import check_head, final_hidden, head_fn
from cotdistill.train.common import chunk_for, global_token_loss, load_student, training_args
from cotdistill.train.data import LengthGuard, example_name, load_split, pad_collator
from cotdistill.train.losses import FP16_ROUNDING, kd_loss, kd_loss_chunked


class CachedKDTrainer(Trainer):
    def __init__(self, *args, alpha: float, temperature: float, chunk: int = 0, rounding: float = 0.0, **kw):
        super().__init__(*args, **kw)
        self.alpha, self.temperature, self.chunk = alpha, temperature, chunk_for(self, chunk)
        self.rounding = rounding  # FP16_ROUNDING for a `cotdistill logits` cache (float16 log-probs)
        if self.chunk:
            check_head(self.accelerator.unwrap_model(self.model), "student")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # num_items_in_batch: trained tokens of the whole accumulated step (transformers counts them
        # because the model accepts loss kwargs, and then does not divide by the accumulation steps)
        if self.chunk:  # logits made chunk by chunk from the final hidden states: memory O(chunk x V)
            out, hidden = final_hidden(model, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            head = head_fn(self.accelerator.unwrap_model(model))
            with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
                loss, _, _ = kd_loss_chunked(hidden, head, inputs["labels"], inputs["top_ids"], inputs["top_lp"],
                                             self.alpha, self.temperature, num_items_in_batch, self.chunk,
                                             self.rounding)
        else:
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss, _, _ = kd_loss(out.logits, inputs["labels"], inputs["top_ids"], inputs["top_lp"],
                                 self.alpha, self.temperature, num_items=num_items_in_batch, rounding=self.rounding)
        loss = global_token_loss(self, loss, num_items_in_batch)
        return (loss, out) if return_outputs else loss


def collate(pad_id: int, k: int):
    return pad_collator(pad_id, {"top_ids": (k, -1, torch.long), "top_lp": (k, 0.0, torch.float32)})


def teacher_rows(cfg: TrainConfig, tok, ds):
    """(row index in ``ds``, problem_id, sample_index, token_ids, top_ids [T, k], top_lp [T, k]) for every kept
    trace, in the dataset's order, streamed: from a `cotdistill logits` cache directory (without the traces it
    skipped as longer than the teacher's context, listed in its skipped.jsonl), or generate's logprobs.jsonl.
    The cache's own checks (present, tokenizer, counts) run at the call, before anything is written."""
    from pathlib import Path

    path = Path(cfg.logprobs)
    student_hash = tokenizer_hash(tok)
    if path.is_dir():
        meta = logit_cache.read_meta(path)
        if meta["tokenizer_hash"] != student_hash:
            raise CotdistillError(
                f"preflight: {path}: the cached logprobs come from tokenizer {meta['tokenizer_hash']}, "
                f"the student's is {student_hash}; cached-logit KD needs the teacher's tokenizer"
            )
        skipped = logit_cache.read_skipped(path) if meta.get("skipped") else set()
        keys = set(zip(ds["problem_id"], ds["sample_index"])) if skipped else set()
        if not skipped <= keys or meta["traces"] + len(skipped) != len(ds):
            raise CotdistillError(
                f"preflight: {path} holds {meta['traces']} traces (+{len(skipped)} skipped), {cfg.dataset_dir} keeps "
                f"{len(ds)}; the cache was built from another filter output: rebuild it (cotdistill logits)"
            )
        if not (path / logit_cache.CACHE).is_file():
            raise CotdistillError(f"preflight: {path / logit_cache.CACHE} not found beside its cache.json; rebuild "
                                  f"the cache (cotdistill logits)")
        if skipped:
            print(f"train: {len(skipped)} kept trace(s) longer than the teacher's context have no teacher logprobs "
                  f"({path / logit_cache.SKIPPED}); left out", file=sys.stderr)
        return _cache_rows(cfg, path, ds, skipped)
    if not path.is_file():
        raise CotdistillError(f"logprobs: {path} not found; build a cache with `cotdistill logits`, or generate with "
                              f"sampling.logprobs=K")
    return _in_pass_rows(logit_cache.in_pass_rows(path, ds, tok), ds, student_hash)


def _cache_rows(cfg: TrainConfig, path, ds, skipped: set):
    keys = ds.select_columns(["problem_id", "sample_index"]).to_dict()
    at = ((i, pid, si) for i, (pid, si) in enumerate(zip(keys["problem_id"], keys["sample_index"]))
          if (pid, si) not in skipped)
    for n, (row, (i, pid, si)) in enumerate(zip(logit_cache.iter_cache(path / logit_cache.CACHE), at, strict=True)):
        if (row[0], row[1]) != (pid, si):
            raise CotdistillError(
                f"preflight: {path}: row {n} is {row[0]}#{row[1]}, {cfg.dataset_dir} has {pid}#{si} "
                f"there; the cache was built from another filter output: rebuild it"
            )
        yield (i, *row)


def _in_pass_rows(records, ds, student_hash: str):
    for i, (pid, si, comp, tids, tlp, thash) in enumerate(records):
        if thash != student_hash:
            name = example_name(ds, 0)
            raise CotdistillError(f"preflight: {name}: the cached logprobs come from tokenizer {thash}, the student's "
                                  f"is {student_hash}; cached-logit KD needs the teacher's tokenizer")
        yield i, pid, si, comp, tids, tlp


def build_examples(cfg: TrainConfig, tok, ds, path) -> tuple[int, int, int]:
    """Join kept traces with their teacher logprobs (checking each decodes to its trace) into a
    memory-mapped Arrow file at ``path``, one example at a time: memory does not grow with the data.
    Returns (examples, dropped as too long, k)."""
    import datasets
    import numpy as np
    from datasets.arrow_writer import ArrowWriter

    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")), "labels": datasets.Sequence(datasets.Value("int32")),
        "prompt_len": datasets.Value("int32"), "top_ids": datasets.Sequence(datasets.Value("int32")),
        "top_lp": datasets.Sequence(datasets.Value("float32")), "length": datasets.Value("int32"),
        "problem_id": datasets.Value("string"), "sample_index": datasets.Value("int32")})
    n, k, guard = 0, None, LengthGuard(ds, cfg.max_length, cfg.max_truncated_share)
    eot = end_of_turn_ids(tok)  # once, not per example
    rows = teacher_rows(cfg, tok, ds)  # the cache's checks, before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrowWriter(features=features, path=str(path), writer_batch_size=256)
    try:
        for i, pid, si, comp, tids, tlp in rows:
            row = ds[i]
            k = k or tids.shape[1]
            text = row["messages"][-1]["content"]
            body = comp[:-1] if len(comp) and int(comp[-1]) in eot else comp
            if tok.decode(body.tolist(), skip_special_tokens=True).rstrip("\ufffd") != text.rstrip("\ufffd"):
                raise CotdistillError(f"preflight: {example_name(ds, i)}: the cached token ids do not decode to the "
                                      f"trace's completion; the cache belongs to another sequence")
            prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
            ids = list(prompt) + comp.tolist()
            if not guard.fits(i, len(ids)):
                continue
            writer.write({"input_ids": ids, "labels": [-100] * len(prompt) + comp.tolist(), "prompt_len": len(prompt),
                          "top_ids": tids.ravel().tolist(), "top_lp": np.maximum(tlp, -1e4).ravel().tolist(),
                          "length": len(ids), "problem_id": pid, "sample_index": si})
            n += 1
        writer.finalize()
    finally:
        writer.close()
    return n, guard.check(), k


def build(cfg: TrainConfig):
    from pathlib import Path

    import datasets
    from transformers import TrainingArguments

    tok = load_tokenizer(cfg.student, "student", cfg.chat_template)
    ds = load_split(cfg, "sft")
    arrow = Path(cfg.output_dir) / "kd_examples.arrow"  # rebuilt every start (resume included): never stale
    tmp = arrow.with_name(f".{arrow.name}.{os.getpid()}.tmp")
    count, dropped, k = build_examples(cfg, tok, ds, tmp)
    os.replace(tmp, arrow)
    train_ds = datasets.Dataset.from_file(str(arrow))  # memory-mapped
    args = training_args(TrainingArguments, cfg, remove_unused_columns=False,
                         train_sampling_strategy="group_by_length" if cfg.length_grouped else "random")
    model = load_student(cfg)
    trainer = CachedKDTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                              data_collator=collate(tok.pad_token_id, k), alpha=cfg.kd.alpha,
                              temperature=cfg.kd.temperature, chunk=chunk_size(cfg.loss_chunk_tokens),
                              rounding=FP16_ROUNDING if Path(cfg.logprobs).is_dir() else 0.0)
    preflight = {"examples": count, "dropped_too_long": dropped, "top_k": k,
                 "trained_tokens": int(sum(train_ds["length"]) - sum(train_ds["prompt_len"]))}
    return trainer, tok, preflight

