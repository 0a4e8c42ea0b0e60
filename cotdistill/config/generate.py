"""The generate stage's config (cotdistill/generate.py, cotdistill/sampling.py, cotdistill/distributed.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cotdistill.config.common import PromptConfig, SamplingConfig, SourceConfig, StrictModel, TeacherConfig


class ShardConfig(StrictModel):
    index: int = Field(default=0, ge=0)
    count: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _index_in_range(self):
        if self.index >= self.count:
            raise ValueError(f"index {self.index} must be < count {self.count}")
        return self


class DistributedConfig(StrictModel):
    """Generation on a Ray cluster: one vLLM replica per Ray actor, each owning one shard of the
    problems with the single-process run's exactly-once resume; a replica that dies is restarted by
    Ray and resumes its shard; the stage ends with the checked merge."""

    address: str | None = Field(default=None, description="None: start a local Ray cluster on this machine; 'auto': "
                                                          "join the cluster `ray start` made; or 'ray://HOST:10001'")
    replicas: int = Field(default=2, ge=1, description="vLLM replicas = shards")
    cpus_per_replica: float = Field(default=1.0, ge=0, description="Ray CPUs each replica reserves")
    gpus_per_replica: float = Field(
        default=0.0,
        ge=0,
        description="Ray GPUs each replica reserves: tensor_parallel_size x pipeline_parallel_size on GPUs, 0 on CPU",
    )
    max_restarts: int = Field(
        default=3, ge=0, description="times Ray restarts a replica that died; it resumes its shard"
    )
    local_cpus: int | None = Field(default=None, ge=1, description="CPUs of the local cluster (address None); "
                                                                   "default: replicas x cpus_per_replica")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables of every replica")


class GenerateConfig(StrictModel):
    source: SourceConfig
    prompt: PromptConfig = PromptConfig()
    teacher: TeacherConfig
    extra_teachers: list[TeacherConfig] = Field(
        default_factory=list,
        description="more teachers answering every problem (multi-teacher traces): teacher k "
        "(0 = teacher) writes sample indices k*n .. k*n + n - 1; each trace names its teacher",
    )
    sampling: SamplingConfig = SamplingConfig()
    output_dir: str
    shard: ShardConfig = ShardConfig()
    flush_every: int = Field(default=64, ge=1, description="records buffered before an append")
    verify_workers: int = Field(default=0, ge=0, description="until_verified: verifier processes (0: one per core)")
    verify_timeout_s: float = Field(default=10.0, gt=0, description="until_verified: hard limit per trace")
    progress: bool = True
    too_long: Literal["skip", "refuse"] | None = Field(
        default=None, description="a problem whose prompt cannot fit the teacher's context (checked before the engine "
                                  "starts): skip it, recorded in skipped.jsonl (None: skip), or refuse the run")
    distributed: DistributedConfig | None = Field(default=None, description="run the replicas on a Ray cluster")

    @model_validator(mode="after")
    def _distributed_owns_shards(self):
        d = self.distributed
        if d is not None and self.shard.count > 1:
            raise ValueError(
                "distributed with shard.count > 1: the Ray replicas are the shards (distributed.replicas); "
                "drop the shard block"
            )
        if d is not None and d.gpus_per_replica and self.teacher.backend == "vllm":
            need = self.teacher.tensor_parallel_size * self.teacher.pipeline_parallel_size
            if d.gpus_per_replica < need:
                raise ValueError(f"distributed.gpus_per_replica {d.gpus_per_replica} is less than the "
                                 f"{need} GPUs one replica uses (tensor x pipeline parallel); raise it")
        return self

    @model_validator(mode="after")
    def _adaptive_one_teacher(self):
        if self.sampling.until_verified is not None and self.extra_teachers:
            raise ValueError("sampling.until_verified with extra_teachers: adaptive sampling runs one teacher; "
                             "drop one of the two")
        return self
