"""Teacher backends: offline ``vllm.LLM`` and OpenAI-compatible servers, one interface."""

from __future__ import annotations

from cotdistill.chat import tokenizer_hash
from cotdistill.config import OpenAITeacher, VLLMTeacher
from cotdistill.teachers.base import Job, Result, Teacher, derive_seed


def make_teacher(cfg: VLLMTeacher | OpenAITeacher, seed: int = 0, need_logprobs: bool = False) -> Teacher:
    if isinstance(cfg, VLLMTeacher):
        from cotdistill.teachers.vllm_offline import VLLMOfflineTeacher

        return VLLMOfflineTeacher(cfg, seed=seed)
    from cotdistill.teachers.openai_server import OpenAIServerTeacher

    return OpenAIServerTeacher(cfg, need_tokenizer=need_logprobs)


__all__ = ["Job", "Result", "Teacher", "derive_seed", "make_teacher", "tokenizer_hash"]
