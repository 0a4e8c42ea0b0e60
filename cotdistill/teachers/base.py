"""What every teacher backend shares: the job/result types, seeds, tokenizer identity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import numpy as np

from cotdistill.errors import CotdistillError, first_line
from cotdistill.records import Message, TeacherInfo


@dataclass(frozen=True)
class Job:
    problem_id: str
    sample_index: int
    messages: list[Message]
    seed: int


@dataclass
class Result:
    completion: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # top-k logprob capture: token_ids[T], sampled_logprobs[T], top_ids[T,k], top_logprobs[T,k]
    logprobs: dict[str, np.ndarray] | None = field(default=None)


class Teacher(Protocol):
    info: TeacherInfo

    def generate(self, jobs: Iterable[Job], sampling: Any) -> Iterator[tuple[Job, Result]]:
        """Yield (job, result) as each sample finishes, in any order."""

    def close(self) -> None: ...


def derive_seed(run_seed: int, problem_id: str, sample_index: int) -> int:
    """Per-sample seed: each trace is reproducible alone, whatever the batching, shard or resume."""
    h = hashlib.sha256(f"{run_seed}\x00{problem_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def tokenizer_hash(tokenizer) -> str:
    """Identity of a tokenizer: sha256 over its (token, id) vocabulary and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    payload = json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def looks_like_local_path(name: str) -> bool:
    """Hub ids are "name" or "org/name" (dots allowed: "Qwen/Qwen2.5-0.5B-Instruct"); anything
    rooted, relative with ./ or ~, deeper than one slash, or present on disk is a path."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or Path(name).exists()


def check_model_location(name: str, field_name: str) -> None:
    """A local-looking path that does not exist fails here, in one line, before vLLM starts."""
    if looks_like_local_path(name) and not Path(name).expanduser().exists():
        raise CotdistillError(
            f"{field_name}: model path '{name}' does not exist; give a local model directory or a hub id"
        )


def load_chat_tokenizer(name: str, revision: str | None, chat_template: str | None,
                        trust_remote_code: bool = False, field_name: str = "teacher.model"):
    from transformers import AutoTokenizer

    check_model_location(name, field_name)
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise CotdistillError(f"{field_name}: cannot load tokenizer '{name}': {first_line(e)}") from None
    apply_chat_template_override(tok, chat_template)
    if not getattr(tok, "chat_template", None):
        raise CotdistillError(
            f"{field_name}: tokenizer '{name}' has no chat template; set teacher.chat_template to a Jinja file"
        )
    return tok


def apply_chat_template_override(tok, chat_template: str | None) -> None:
    if chat_template:
        p = Path(chat_template)
        if not p.is_file():
            raise CotdistillError(f"teacher.chat_template: file '{chat_template}' not found")
        tok.chat_template = p.read_text()


def render_prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    enc = tokenizer.apply_chat_template(
        [m.model_dump() for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(enc["input_ids"])
