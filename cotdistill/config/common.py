"""What several stages' configs share: the strict base model, problem sources, teacher backends, sampling and
prompt settings, and the token-chunk default of the losses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class FieldMap(StrictModel):
    question: str = "question"
    answer: str | None = Field(default="answer", description="None: the dataset has no gold answers")
    id: str | None = Field(default=None, description="None: ids are \"<row index>\" within the selected split")
    choices: str | list[str] | None = Field(
        default=None,
        description="multiple choice: a column holding the list of options (MMLU: \"choices\"), or the columns that "
                    "each hold one option (GPQA: [\"Correct Answer\", \"Incorrect Answer 1\", ...]); the gold then "
                    "becomes the option's letter, read from the answer field as a 0-based index, a letter or the "
                    "option's text")
    tests: str | None = Field(
        default=None, description="code problems: the column of tests ({input, output} or {assert} objects, or "
                                  "APPS' input_output JSON); a column named 'tests' is used without this")
    shuffle_choices: bool = Field(
        default=False, description="shuffle the options per problem, seeded by its id (GPQA lists the right one "
                                   "first)")


class HFSource(StrictModel):
    """Any Hugging Face dataset: a hub id, or a local jsonl/json/parquet/csv file."""

    kind: Literal["hf"] = "hf"
    path: str  # hub id ("openai/gsm8k") or a local file path
    name: str | None = Field(default=None, description="hub subset/config name (\"main\")")
    split: str = Field(default="train", description="supports slicing: \"test[:100]\"")
    fields: FieldMap = FieldMap()
    limit: int | None = Field(default=None, ge=1)


class ReasoningGymSource(StrictModel):
    """A procedural task from the reasoning-gym package (offline)."""

    kind: Literal["reasoning_gym"] = "reasoning_gym"
    task: str
    size: int = Field(default=100, ge=1)
    seed: int = 0
    config: dict[str, Any] = Field(default_factory=dict, description="the task's own options")


SourceConfig = Annotated[HFSource | ReasoningGymSource, Field(discriminator="kind")]


class VLLMTeacher(StrictModel):
    """Offline ``vllm.LLM`` engine in this process."""

    backend: Literal["vllm"] = "vllm"
    model: str  # hub id or local directory
    tokenizer: str | None = Field(default=None, description="defaults to model")
    revision: str | None = None
    chat_template: str | None = Field(default=None, description="path to a Jinja file when the tokenizer lacks one")
    dtype: str = Field(default="auto", description="auto: bf16 on GPUs and on CPUs with AMX or AVX512-BF16, float32 "
                       "on other CPUs, where bf16 matmuls are several times slower (env.engine_dtype)")
    max_model_len: int | None = Field(default=None, ge=16)
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1 << 20)
    enforce_eager: bool = False
    trust_remote_code: bool = False
    max_num_seqs: int | None = Field(default=None, ge=1)
    extra_engine_args: dict[str, Any] = Field(default_factory=dict, description="passed to vllm.LLM as is")


class OpenAITeacher(StrictModel):
    """An OpenAI-compatible endpoint (``vllm serve`` or any compatible server)."""

    backend: Literal["openai"] = "openai"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str  # the served model name
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = Field(
        default=None, description="name of the env var holding the key (never the key itself)"
    )
    max_concurrency: int = Field(default=64, ge=1)
    timeout_s: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    # for the "completions" api the prompt is rendered locally through this tokenizer's template
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _completions_needs_tokenizer(self):
        if self.api == "completions" and not self.tokenizer:
            raise ValueError("api 'completions' renders prompts locally: set teacher.tokenizer")
        return self


TeacherConfig = Annotated[VLLMTeacher | OpenAITeacher, Field(discriminator="backend")]


class SamplingConfig(StrictModel):
    n: int = Field(default=4, ge=1)
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=-1, ge=-1, description="-1: disabled")
    max_tokens: int = Field(default=1024, ge=1)
    seed: int = 0
    stop: list[str] = Field(default_factory=list)
    logprobs: int | None = Field(default=None, ge=1, le=100, description="capture top-k logprobs per token")
    until_verified: int | None = Field(
        default=None,
        ge=1,
        description="generate: adaptive sampling, stop a problem "
        "once this many distinct correct traces exist "
        "(n is then the budget per problem)",
    )

    @model_validator(mode="after")
    def _budget(self):
        if self.until_verified is not None and self.until_verified > self.n:
            raise ValueError(f"sampling.until_verified {self.until_verified} is more than the budget n {self.n}; "
                             f"raise n or lower until_verified")
        return self


class PromptConfig(StrictModel):
    template: str = Field(default="math_boxed_think", description="name in prompts/ or a path to a .yaml template")
    variables: dict[str, Any] = Field(default_factory=dict, description="extra template variables")


DEFAULT_CHUNK_TOKENS = 512  # [512, 152k] fp32 is 311 MB; a loss makes ~6 of them


def chunk_size(value: int | None) -> int:
    """A chunk setting resolved: None -> the default, 0 -> unchunked (0)."""
    return DEFAULT_CHUNK_TOKENS if value is None else value
