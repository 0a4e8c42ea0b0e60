"""Chat-template facts every stage needs (a leaf module: no stage imports here): which tokens end a turn,
which one the template writes after an assistant message, and whether a model's saved generation config stops
on it."""

from __future__ import annotations

import json
from pathlib import Path


def end_of_turn_ids(tok) -> set[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for t in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
            ids.add(i)
    return ids


def assistant_end_token(tok) -> int | None:
    """The special token the chat template writes right after an assistant turn's content
    (ChatML's ``<|im_end|>``, Llama 3's ``<|eot_id|>``, ...); None when it writes none there."""
    mark = "\u2063cotdistill\u2063"
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": mark}],
                                       tokenize=False)
    except Exception:  # templates that refuse a closing assistant turn
        return None
    if mark not in text:
        return None
    ids = tok(text.split(mark, 1)[1], add_special_tokens=False)["input_ids"]
    return ids[0] if ids and ids[0] in set(tok.all_special_ids) | end_of_turn_ids(tok) else None


def stop_token_problem(model_dir: str | Path) -> str | None:
    """Why vLLM serving ``model_dir`` would not stop at the end of an assistant turn, or None: the chat template
    closes assistant turns with a token that is neither the tokenizer's EOS nor in generation_config.json's
    eos_token_id (vLLM stops on those), so a model trained to end turns that way runs on to max_tokens."""
    p = Path(model_dir)
    if not (p / "tokenizer_config.json").exists():
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(p)
    if not getattr(tok, "chat_template", None):
        return None
    end = assistant_end_token(tok)
    eos = set()
    if (p / "generation_config.json").exists():
        e = json.loads((p / "generation_config.json").read_text()).get("eos_token_id")
        eos = set(e) if isinstance(e, list) else {e}
    if end is None or end == tok.eos_token_id or end in eos:
        return None
    return (f"{p}: its chat template ends assistant turns with {tok.convert_ids_to_tokens(end)!r} (id {end}), but "
            f"generation_config.json stops on {sorted(i for i in eos if i is not None)} and the tokenizer's EOS is "
            f"{tok.eos_token!r}: generation would not stop at the end of the answer; add {end} to eos_token_id in "
            f"{p / 'generation_config.json'}")
