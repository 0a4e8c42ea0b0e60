"""The training set as the trainers see it, for every method (a module of the train stage): a filter split
loaded, examples named in errors, the too-long guard, the padding collator, and the preflight checks (the chat
template keeps the completion, the loss mask covers exactly the completion, student and teacher share a
vocabulary)."""

from __future__ import annotations

import torch

from cotdistill.artifacts import load_filter_split
from cotdistill.chat import end_of_turn_ids
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError


def load_split(cfg: TrainConfig, name: str):
    return load_filter_split(cfg.dataset_dir, name, "dataset_dir", workdir=cfg.output_dir)


def example_name(ds, i: int) -> str:
    cols = ds.column_names
    if "problem_id" in cols:
        row = ds[i]
        return f"example {i} (problem '{row['problem_id']}'" + (
            f", sample {row['sample_index']})" if "sample_index" in cols else ")"
        )
    return f"example {i}"


def check_template_keeps_completion(tok, ds, field: str = "student") -> None:
    """Refuse a chat template that rewrites the assistant turn it renders: DeepSeek-R1's drops everything up to
    ``</think>`` from assistant messages (it is made for chat history), so a student with that template would
    train on the answers only, silently (TRL only warns). Checked on every distinct shape of completion."""
    checked = set()
    for i, msgs in enumerate(ds["messages"]):
        content = msgs[-1]["content"]
        shape = ("<think>" in content, "</think>" in content)
        if shape in checked:
            continue
        checked.add(shape)
        text = tok.apply_chat_template(msgs, tokenize=False)
        if content not in text:
            kept = next((len(content) - j for j in range(len(content)) if content[j:] in text), 0)
            raise CotdistillError(
                f"preflight: {example_name(ds, i)}: the {field}'s chat template rewrites the assistant turn (it keeps "
                f"{kept} of {len(content)} characters of the completion, e.g. DeepSeek-R1's keeps only the text after "
                f"</think>): the student would not learn the reasoning; set chat_template to a template that renders "
                f"assistant content unchanged")


class LengthGuard:
    """Examples longer than max_length are dropped (their end of turn would be cut off: students that never stop);
    more than ``max_share`` of them is an error naming the longest and the first. One guard per training set, for
    every method: ``fits(i, n)`` per example, then ``check()``."""

    def __init__(self, ds, max_length: int, max_share: float):
        self.ds, self.max_length, self.max_share = ds, max_length, max_share
        self.dropped: list[int] = []
        self.longest = 0

    def fits(self, i: int, n: int) -> bool:
        self.longest = max(self.longest, n)
        if n > self.max_length:
            self.dropped.append(i)
        return n <= self.max_length

    def check(self) -> int:
        """The number dropped, or the error when they are too many."""
        share = len(self.dropped) / max(1, len(self.ds))
        if share > self.max_share:
            raise CotdistillError(
                f"{len(self.dropped)} of {len(self.ds)} examples ({share:.1%}) exceed max_length {self.max_length} "
                f"tokens (longest {self.longest}, e.g. {example_name(self.ds, self.dropped[0])}); raise max_length or "
                f"max_truncated_share, or filter with max_completion_tokens"
            )
        return len(self.dropped)


def drop_too_long(ds, tok, max_length: int, max_share: float, column: str = "messages"):
    """The examples whose rendered chat fits max_length (LengthGuard), and how many were dropped."""
    guard = LengthGuard(ds, max_length, max_share)
    keep = [i for i, m in enumerate(ds[column])
            if guard.fits(i, len(tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]))]
    dropped = guard.check()
    return (ds.select(keep) if dropped else ds), dropped


def pad_collator(pad_id: int, per_token: dict[str, tuple] | None = None):
    """Right-padding collator for examples with ``input_ids`` and ``labels`` (-100 where not trained) and, per
    name in ``per_token``, a flat per-token array of ``width`` values from position ``prompt_len`` on, padded with
    ``fill`` (the cached teacher top-k: {"top_ids": (k, -1, long), "top_lp": (k, 0.0, float32)})."""
    per_token = per_token or {}

    def collate(rows):
        b, n = len(rows), max(len(r["input_ids"]) for r in rows)
        out = {"input_ids": torch.full((b, n), pad_id, dtype=torch.long),
               "attention_mask": torch.zeros((b, n), dtype=torch.long),
               "labels": torch.full((b, n), -100, dtype=torch.long)}
        for name, (width, fill, dtype) in per_token.items():
            out[name] = torch.full((b, n, width), fill, dtype=dtype)
        for i, r in enumerate(rows):
            m = len(r["input_ids"])
            out["input_ids"][i, :m] = torch.tensor(r["input_ids"])
            out["attention_mask"][i, :m] = 1
            out["labels"][i, :m] = torch.tensor(r["labels"])
            for name, (width, _, dtype) in per_token.items():
                out[name][i, r["prompt_len"]:m] = torch.tensor(r[name], dtype=dtype).view(-1, width)
        return out

    return collate


def _row_key(row) -> tuple:
    return (row.get("problem_id"), row.get("sample_index"))


def check_loss_masks(ds, tok, source_ds=None) -> dict:
    """Token-level checks of a TRL-processed dataset (``labels``: -100 = not trained, or an
    ``assistant_masks``/``completion_mask`` column): every example trains on something, and on an
    end-of-turn token (otherwise the student never learns to stop). TRL silently drops examples
    whose mask is empty; those are named here instead."""
    source_ds = source_ds if source_ds is not None else ds
    if len(ds) != len(source_ds):
        have = {_row_key(r) for r in ds}
        lost = [i for i, r in enumerate(source_ds) if _row_key(r) not in have]
        name = example_name(source_ds, lost[0]) if lost else f"{len(source_ds) - len(ds)} examples"
        raise CotdistillError(f"preflight: {name} has an empty loss mask (no assistant tokens to learn) and would be "
                              f"dropped silently; remove it or fix its messages")
    if "labels" in ds.column_names:
        trained_of = lambda r: [t for t, lab in zip(r["input_ids"], r["labels"]) if lab != -100]
    else:
        col = next((c for c in ("assistant_masks", "completion_mask") if c in ds.column_names), None)
        if col is None:
            raise CotdistillError("preflight: the processed dataset has no loss mask; the loss would cover the prompt")
        trained_of = lambda r: [t for t, m in zip(r["input_ids"], r[col]) if m]
    eot = end_of_turn_ids(tok)
    trained_tokens = 0
    for i, row in enumerate(ds):
        trained = trained_of(row)
        name = example_name(source_ds, i)
        if not trained:
            raise CotdistillError(f"preflight: {name} has an empty loss mask (no assistant tokens to learn); "
                                  f"remove it or fix its messages")
        if not eot & set(trained):
            raise CotdistillError(
                f"preflight: {name}: the end-of-turn token is not trained (the student would never stop); the chat "
                f"template must put {tok.convert_ids_to_tokens(sorted(eot))} inside the assistant turn")
        trained_tokens += len(trained)
    return {"examples": len(ds), "trained_tokens": trained_tokens}


def check_same_vocab(student_tok, teacher_tok, what: str) -> None:
    """Logit-level methods compare distributions token by token: the vocabularies must be the same
    (extra rows in a model's embedding, e.g. 151936 vs 152064, are padding and are sliced off)."""
    sv, tv = student_tok.get_vocab(), teacher_tok.get_vocab()
    if sv != tv:
        diff = len(set(sv.items()) ^ set(tv.items()))
        raise CotdistillError(
            f"preflight: {what}: student and teacher tokenizers differ ({len(sv)} vs {len(tv)} tokens, {diff} "
            f"entries differ); logit-level distillation needs the same tokenizer: use sft, or a teacher of the "
            "student's family"
        )
