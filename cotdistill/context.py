"""Prompts that cannot fit a teacher's context, found before any engine starts (generate and eval), and traces
longer than a scoring teacher's context (the logits stage, ``too_long_traces``).

vLLM refuses a whole batch when one prompt is longer than ``max_model_len`` (a ~270-line traceback, nothing written
for the prompts that fit); here each problem's rendered prompt is counted with the teacher's tokenizer and chat
template, so generation skips the ones that cannot fit (recorded with their ids and lengths) or refuses the run
(``too_long: refuse``), naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.chat import load_tokenizer, looks_like_local_path, render_prompt_ids
from cotdistill.config import VLLMTeacher
from cotdistill.errors import CotdistillError

CHARS_PER_TOKEN_BOUND = 64  # a prompt with more characters than this x the context is not tokenised at all


def context_length(t: VLLMTeacher) -> int | None:
    """The engine's context: ``max_model_len``, else the local model's config (a hub id without it: None)."""
    return t.max_model_len or model_context(t.model)


def model_context(model: str) -> int | None:
    """Positions a local model takes (its config.json), or None: a hub id, no such field, or a RoPE-scaled model
    (vLLM and transformers stretch its context; left to them)."""
    cfg = Path(model) / "config.json"
    if not cfg.is_file():
        return None
    c = json.loads(cfg.read_text())
    c = c.get("text_config", c)
    scaling = c.get("rope_scaling") or c.get("rope_parameters") or {}
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        return None  # vLLM stretches the context by the scaling factor: leave the check to it
    return (c.get("max_position_embeddings") or c.get("max_sequence_length") or c.get("n_positions")
            or c.get("n_ctx"))


def over_context(teachers: list, rendered: dict[str, list]) -> dict[str, dict]:
    """problem id -> {prompt_tokens (or chars), limit, teacher} for every rendered prompt some vLLM teacher cannot
    take (prompt tokens >= its context: no room for one token). Other backends are not checked here."""
    over: dict[str, dict] = {}
    for t in teachers:
        if not isinstance(t, VLLMTeacher):
            continue
        limit = context_length(t)
        name = t.tokenizer or t.model
        if limit is None or not (looks_like_local_path(name) or Path(name).exists()):
            continue  # a hub id: its tokenizer would be downloaded twice; vLLM checks it
        tok = load_tokenizer(name, "teacher.tokenizer", t.chat_template, need_pad=False, revision=t.revision,
                             trust_remote_code=t.trust_remote_code)
        for pid, msgs in rendered.items():
            chars = sum(len(m.content) for m in msgs)
            if chars > CHARS_PER_TOKEN_BOUND * limit:
                over.setdefault(pid, {"prompt_chars": chars, "limit": limit, "teacher": t.model})
                continue
            n = len(render_prompt_ids(tok, msgs))
            if n >= limit:
                over.setdefault(pid, {"prompt_tokens": n, "limit": limit, "teacher": t.model})
    return over


def describe(over: dict[str, dict], n: int = 3) -> str:
    items = list(over.items())[:n]
    shown = ", ".join(f"'{pid}' ({v.get('prompt_tokens', v.get('prompt_chars'))} "
                      f"{'tokens' if 'prompt_tokens' in v else 'characters'})" for pid, v in items)
    more = f" and {len(over) - n} more" if len(over) > n else ""
    return f"{shown}{more} cannot fit teacher '{items[0][1]['teacher']}' (max_model_len {items[0][1]['limit']})"


def refuse(over: dict[str, dict]) -> None:
    raise CotdistillError(f"source: {len(over)} problem(s) too long: {describe(over)}; shorten them, raise "
                          f"teacher.max_model_len, or set too_long: skip to generate the others")


def too_long_traces(ds, tok, limit: int, teacher: str) -> dict[int, dict]:
    """Row index -> {problem_id, sample_index, tokens (or chars), limit, teacher} for every trace of a filter output
    whose prompt + completion + closing token would not fit ``limit`` positions. Only rows whose rendered text has
    more bytes than the limit are tokenised (a byte-level or SentencePiece token covers at least one byte; 16 spare
    for a dummy prefix and the closing token), so data well inside the context costs one template render a row."""
    over: dict[int, dict] = {}
    for w in range(0, len(ds), 1024):
        rows = ds[w:w + 1024]
        for j, (pid, si, msgs) in enumerate(zip(rows["problem_id"], rows["sample_index"], rows["messages"])):
            chars = sum(len(m["content"]) for m in msgs)
            key = {"problem_id": pid, "sample_index": int(si)}
            if chars > CHARS_PER_TOKEN_BOUND * limit:
                over[w + j] = {**key, "chars": chars, "limit": limit, "teacher": teacher}
                continue
            prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
            if len(prompt.encode()) + len(msgs[-1]["content"].encode()) + 16 <= limit:
                continue
            n = (len(tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"])
                 + len(tok(msgs[-1]["content"], add_special_tokens=False)["input_ids"]) + 1)
            if n > limit:
                over[w + j] = {**key, "tokens": n, "limit": limit, "teacher": teacher}
    return over
