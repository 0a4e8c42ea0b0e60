"""Build tiny causal LMs locally (no hub): a BPE tokenizer trained with ``tokenizers`` plus a
ChatML-style chat template, and a randomly initialised ``LlamaForCausalLM`` that vLLM can serve.

    python -c "from cotdistill.tiny import build_tiny_model; build_tiny_model('/tmp/tiny')"

Used by the tests and benchmarks; head size is 32 or 64 (vLLM's CPU attention needs one of its
supported head sizes).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 256)  # what vLLM's CPU attention kernels accept


def head_size_problem(hidden: int, heads: int) -> str | None:
    """Why ``hidden`` / ``heads`` cannot be served by vLLM, or None when it can."""
    if hidden % heads or hidden // heads not in VLLM_HEAD_SIZES:
        return (f"hidden {hidden} / heads {heads}: head size must be one of {', '.join(map(str, VLLM_HEAD_SIZES))} "
                f"(vLLM's attention kernels); change hidden or heads")
    return None


def _corpus(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ("think step answer final the is of and compute first then sum product difference "
             "question reason boxed solve number total so we get add multiply subtract result").split()
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op = rng.choice("+-*")
        lines.append(f"<think> {a} {op} {b} = {eval(f'{a}{op}{b}')} </think> \\boxed{{{a}}} #### {b}")
        lines.append(" ".join(rng.choice(words) for _ in range(12)))
    return lines


def build_tokenizer(out: Path, vocab_size: int = 512, individual_digits: bool = False, corpus=None):
    """BPE over bytes; ``individual_digits`` keeps every digit its own token (arithmetic models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if individual_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus or _corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>",
                                   bos_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_tiny_model(out: str | Path, hidden: int = 128, heads: int = 4, layers: int = 2,
                     intermediate: int = 256, vocab_size: int = 512, max_len: int = 2048,
                     seed: int = 0, individual_digits: bool = False, corpus=None) -> Path:
    """Write tokenizer + random Llama weights to ``out``; returns the directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, vocab_size, individual_digits, corpus)
    return _random_llama(tok, out, hidden, heads, layers, intermediate, max_len, seed)


def build_student(tokenizer_from: str | Path, out: str | Path, hidden: int = 128, heads: int = 4, layers: int = 2,
                  intermediate: int | None = None, seed: int = 0, max_len: int = 2048,
                  init_std: float | None = None) -> Path:
    """A fresh random Llama on another model's tokenizer (a student that can be distilled from it). ``init_std``:
    the weights' normal std (None: transformers' ``initializer_range``, 0.02, sized for widths of 768 and up)."""
    from transformers import AutoTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_from))
    tok.save_pretrained(out)
    return _random_llama(tok, out, hidden, heads, layers, intermediate or 2 * hidden, max_len, seed, init_std)


def _random_llama(tok, out: Path, hidden: int, heads: int, layers: int, intermediate: int, max_len: int,
                  seed: int, init_std: float | None = None) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    problem = head_size_problem(hidden, heads)
    if problem:
        raise ValueError(problem)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_len, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True, dtype="float32",
                      **({"initializer_range": init_std} if init_std is not None else {}))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    (out / "cotdistill_tiny.json").write_text(json.dumps({"hidden": hidden, "heads": heads, "layers": layers,
                                                          "seed": seed, "init_std": cfg.initializer_range}))
    return out


if __name__ == "__main__":  # python -m cotdistill.tiny OUT_DIR
    import argparse

    ap = argparse.ArgumentParser(prog="python -m cotdistill.tiny",
                                 description="Build a tiny random Llama and its BPE tokenizer into OUT (no hub).")
    ap.add_argument("out", nargs="?", default="runs/tiny-teacher", help="folder to write (default: %(default)s)")
    target = Path(ap.parse_args().out)
    if (target / "config.json").exists():
        print(f"{target} already holds a model; leaving it")
    else:
        print(f"built {build_tiny_model(target)}")
