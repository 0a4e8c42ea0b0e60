"""on_policy's option blocks: how the student rolls out and how the teacher grades (``on_policy:``), and the
named teachers of a mix (``teachers:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from cotdistill.config.common import StrictModel, TeacherConfig


class OnPolicyOptions(StrictModel):
    """on_policy: the student writes, a served teacher grades every token it wrote."""

    loss: Literal["reverse_kl", "topk"] = Field(
        default="reverse_kl", description="reverse_kl: log p_student - log p_teacher of each sampled token as its "
        "(negative) reward, as Thinking Machines' on-policy distillation; topk: the divergence over the teacher's "
        "top-k + 1 tail bucket at every rollout position (train/losses.py)")
    divergence: Literal["forward", "reverse", "jsd"] = Field(default="reverse", description="topk: which divergence")
    beta: float = Field(default=0.5, gt=0, lt=1, description="topk, divergence jsd: the mixture weight")
    temperature: float = Field(default=1.0, gt=0, description="topk: both distributions at this temperature")
    top_k: int = Field(default=8, ge=1, le=64, description="teacher logprobs per position (topk)")
    rollout_temperature: float = Field(default=1.0, gt=0, description="the student's sampling temperature")
    max_new_tokens: int = Field(default=256, ge=1, description="rollout length; a rollout cut here is still graded")
    overlap_chunks: int = Field(
        default=1, ge=1, description="a served teacher grades chunk i of the batch while the student writes chunk "
        "i + 1 (no stale weights: all within one step); 1 = no overlap. An in-process engine grades after. "
        "Measured 4x slower on a 2-core CPU where server and trainer share the cores: for a teacher elsewhere")
    use_vllm: bool | None = Field(
        default=None, description="the student rolls out through a vLLM engine in its own process, the trainer's "
        "weights sent to it before every optimizer step's rollouts; false = transformers generate; None = on GPUs")
    vllm_dtype: str = Field(default="auto", description="use_vllm: the engine's dtype (auto: as teacher.dtype)")
    vllm_gpu_memory_utilization: float = Field(
        default=0.3, gt=0, lt=1, description="use_vllm on a GPU: the engine's share of the GPU (the trainer has the "
        "rest)")
    vllm_kv_cache_bytes: int = Field(default=1 << 30, ge=1 << 20, description="use_vllm on CPU: the engine's KV cache")
    serve_teacher: bool = Field(
        default=False, description="a path / vllm teacher: start it as a vLLM server on 127.0.0.1 (a free port) for "
        "this run and stop it after, so its weights and KV cache live in another process")


class MixedTeacher(StrictModel):
    name: str = Field(min_length=1, description="recorded in rollouts.jsonl for every rollout it grades")
    teacher: str | TeacherConfig = Field(description="a path / hub id, or a teacher block, as on_policy's teacher")
    weight: float = Field(default=1.0, gt=0, description="its share of the prompts it may grade (normalised "
                          "among the teachers a prompt's route allows)")
    route: dict[str, list[str]] | None = Field(
        default=None, description="grade only the prompts whose problem fields match: {field: [values]}, every "
        "field matching (fields: source, or a metadata column of the problem such as domain or rg_task; values "
        "compared as text); prompts no route matches go to the teachers without a route")

    @field_validator("route")
    @classmethod
    def _route_not_empty(cls, v):
        if v is not None and (not v or any(not vals for vals in v.values())):
            raise ValueError("route: give at least one field, each with at least one value, e.g. {domain: [math]}")
        return v
