"""Stage configs (pydantic models): one per stage, with every range check and exclusive option in the
model. Loading from YAML with overrides and error formatting live in ``loading.py`` (re-exported here).

    cfg = load_config(GenerateConfig, "data/configs/generate_demo.yaml", ["sampling.n=8"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from cotdistill.loading import (  # noqa: F401 (re-exported)
    apply_overrides,
    format_validation_error,
    load_config,
    save_resolved,
)
from cotdistill.tiny import head_size_problem


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# ---------------------------------------------------------------- problem sources
class FieldMap(StrictModel):
    question: str = "question"
    answer: str | None = Field(default="answer", description="None: the dataset has no gold answers")
    id: str | None = Field(default=None, description="None: ids are \"<row index>\" within the selected split")


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


# ---------------------------------------------------------------- teachers
class VLLMTeacher(StrictModel):
    """Offline ``vllm.LLM`` engine in this process."""

    backend: Literal["vllm"] = "vllm"
    model: str  # hub id or local directory
    tokenizer: str | None = Field(default=None, description="defaults to model")
    revision: str | None = None
    chat_template: str | None = Field(default=None, description="path to a Jinja file when the tokenizer lacks one")
    dtype: str = "auto"
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


# ---------------------------------------------------------------- logits stage
class LogitsConfig(StrictModel):
    """The teacher's top-k logprobs for the kept traces, cached columnar for cached-logit KD."""

    teacher: str = Field(description="score: hub id or local directory of the teacher (transformers loads it)")
    tokenizer: str | None = Field(default=None, description="default: the teacher's")
    filter_dir: str  # a `cotdistill filter` output (sft/)
    output_dir: str
    mode: Literal["score", "in_pass"] = Field(
        default="score",
        description="score: the teacher scores the kept traces "
        "after the filter; in_pass: keep the logprobs vLLM captured while generating",
    )
    logprobs: str | None = Field(default=None, description="in_pass: the generation stage's logprobs.jsonl")
    top_k: int = Field(default=8, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, description="score: sequences per forward pass")
    device: str = Field(default="auto", description="score: auto (cuda when there is one) | cpu | cuda[:N]")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bf16 on CUDA and on CPUs with AMX / AVX512-BF16, else fp32"
    )
    chunk_tokens: int | None = Field(default=None, ge=0, description="score: positions whose logits are made at "
                                     "once (bounded memory at large vocabularies); None: 512, 0: whole sequences")
    rows_per_group: int = Field(default=512, ge=1, description="parquet row group size (traces)")
    progress: bool = True

    @model_validator(mode="after")
    def _in_pass_needs_file(self):
        if self.mode == "in_pass" and not self.logprobs:
            raise ValueError("mode in_pass reads the generation's logprobs.jsonl: set logprobs")
        return self


# ---------------------------------------------------------------- filter stage
class DecontamConfig(StrictModel):
    eval_sets: list[HFSource] = Field(default_factory=list, description="benchmarks that must not leak into training")
    ngram: int = Field(default=8, ge=3, description="word n-gram length; a shared n-gram is a hit")
    check_traces: bool = Field(
        default=True, description="also look for eval questions inside the teacher's completions"
    )


class FilterConfig(StrictModel):
    generate_dir: str  # a generation output directory (traces.jsonl, problems.jsonl, config.yaml)
    output_dir: str
    require_correct: bool = Field(default=True, description="drop incorrect and \"cannot tell\" traces")
    require_stop: bool = Field(default=True, description="drop truncated traces (finish reason other than \"stop\")")
    min_completion_tokens: int = Field(default=1, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    format_check: bool = Field(
        default=True, description="<think> balance when the template asks for it; one final answer section"
    )
    dedup_exact: bool = True
    near_dup_threshold: float | None = Field(default=0.9, gt=0, le=1, description="MinHash Jaccard within a problem")
    minhash_perm: int = Field(default=64, ge=16)
    decontam: DecontamConfig = DecontamConfig()
    max_per_problem: int | None = Field(default=None, ge=1)
    select: Literal["shortest", "diverse"] = "shortest"
    vote_threshold: float = Field(default=0.6, gt=0, le=1, description="pseudo-label agreement for gold-less problems")
    verify_workers: int = Field(default=0, ge=0, description="0: one per core")
    verify_timeout_s: float = Field(default=10.0, gt=0)
    progress: bool = True

    @model_validator(mode="after")
    def _length_bounds(self):
        if self.max_completion_tokens is not None and self.max_completion_tokens < self.min_completion_tokens:
            raise ValueError("max_completion_tokens must be >= min_completion_tokens")
        return self


# ---------------------------------------------------------------- distill stage
class LoraConfig(StrictModel):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class GKDOptions(StrictModel):
    lmbda: float = Field(default=0.5, ge=0, le=1, description="share of on-policy (student-generated) batches")
    beta: float = Field(default=0.5, ge=0, le=1, description="generalized JSD: 0 = forward KL, 1 = reverse KL")
    temperature: float = Field(default=0.9, gt=0, description="sampling temperature of on-policy rollouts")
    seq_kd: bool = Field(default=False, description="also train on teacher-generated sequences")
    max_new_tokens: int = Field(
        default=1024, ge=1, description="long enough for chain of thought (TRL's default is 128)"
    )
    use_vllm: bool | None = Field(default=None, description="distill: vLLM rollouts (colocated); None = on GPUs only")


class TemperatureSchedule(StrictModel):
    """T(t) = max(floor, t_max * exp(-decay * t)), t = optimizer step."""

    t_max: float = Field(default=4.0, gt=0)
    decay: float = Field(default=0.01, ge=0, description="per optimizer step")
    floor: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.floor > self.t_max:
            raise ValueError(f"schedule: floor {self.floor} is above t_max {self.t_max}")
        return self


class KDOptions(StrictModel):
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the KL term; 1 - alpha on cross-entropy")
    temperature: float = Field(default=1.0, gt=0)
    divergence: Literal["forward", "reverse", "jsd"] = Field(
        default="forward", description="kd: KL(teacher||student) (Hinton), KL(student||teacher), or JSD(beta)")
    beta: float = Field(default=0.5, gt=0, lt=1, description="kd, divergence jsd: the mixture weight")
    schedule: TemperatureSchedule | None = Field(
        default=None, description="kd: anneal T instead of a fixed temperature"
    )
    importance: Literal["none", "student_loss", "teacher_entropy"] = Field(
        default="none",
        description="kd: per-example weights (mean 1 per batch) from the student's CE or the teacher's entropy",
    )


LayerMap = Literal["uniform", "bottom_up", "top_down"] | list[tuple[int, int]]


class FeatureTerm(StrictModel):
    weight: float = Field(default=1.0, ge=0)
    loss: Literal["mse", "cosine"] = "mse"
    layer_map: LayerMap = Field(default="uniform", description="student layer -> teacher layer (1-based)")


class AttentionTerm(StrictModel):
    weight: float = Field(default=1.0, ge=0)
    layer_map: LayerMap = Field(default="uniform", description="student layer -> teacher layer (1-based)")


class RelationTerm(StrictModel):
    weight: float = Field(default=1.0, ge=0)


class TeacherWeight(StrictModel):
    model: str = Field(description="hub id or local directory; the student's tokenizer")
    weight: float = Field(default=1.0, gt=0, description="share in the averaged soft targets (normalised)")


class QATConfig(StrictModel):
    """Quantization-aware training: the student's linear weights are fake-quantized (weight-only,
    symmetric per output channel) in every forward pass; final/ holds the quantized values."""

    bits: Literal[4, 8] = 8


# what a train config may ask for that the core install lacks: (module, pip install argument)
OPTIONAL_DEPENDENCIES = {
    "tensorboard": ("tensorboard", "'cotdistill[tracking]'"), "wandb": ("wandb", "'cotdistill[tracking]'"),
    "trackio": ("trackio", "trackio"), "mlflow": ("mlflow", "mlflow"), "comet_ml": ("comet_ml", "comet_ml"),
    "flash_attention_2": ("flash_attn", "flash-attn --no-build-isolation (CUDA only)"),
    "flash_attention_3": ("flash_attn_interface", "flash-attn 3 from its repository (Hopper GPUs only)"),
}


def optional_dependency_problems(report_to: list[str], attn_implementation: str | None) -> list[str]:
    """One line per optional package a train config needs and this environment lacks, with the install
    command: found when the config is loaded, not at trainer init after hours of generation."""
    import importlib.util

    out = []
    for field, names in (("report_to", [n for n in report_to if n not in ("none", "all")]),
                         ("attn_implementation", [attn_implementation] if attn_implementation else [])):
        for name in names:
            module, install = OPTIONAL_DEPENDENCIES.get(name, (None, None))
            if module is not None and importlib.util.find_spec(module) is None:
                out.append(f"{field}: '{name}' needs the {module} package, which is not installed: "
                           f"pip install {install}")
    return out


DEFAULT_CHUNK_TOKENS = 512  # [512, 152k] fp32 is 311 MB; a loss makes ~6 of them


def chunk_size(value: int | None) -> int:
    """A chunk setting resolved: None -> the default, 0 -> unchunked (0)."""
    return DEFAULT_CHUNK_TOKENS if value is None else value


class TrainConfig(StrictModel):
    method: Literal["sft", "gkd", "distill", "logit_kd", "kd"] = "sft"
    student: str  # hub id or local directory (an SFT checkpoint for a warm start)
    teacher: str | None = Field(default=None, description="gkd / distill / kd: hub id or local directory")
    teachers: list[TeacherWeight] | None = Field(
        default=None, min_length=1, description="kd: an ensemble; soft targets average their distributions"
    )
    features: FeatureTerm | None = Field(default=None, description="kd: FitNets hidden-state term")
    attention: AttentionTerm | None = Field(
        default=None, description="kd: TinyBERT attention-map term (eager attention)"
    )
    relation: RelationTerm | None = Field(default=None, description="kd: RKD pairwise-similarity term")
    cosine: float = Field(
        default=0.0, ge=0, description="kd: weight of DistilBERT's cosine term on the last hidden states"
    )
    dataset_dir: str  # a filter output directory (sft/, prompts/)
    qat: QATConfig | None = Field(default=None, description="sft / logit_kd / kd: quantization-aware training "
                                                            "(fake-quantized weights, straight-through gradients)")
    logprobs: str | None = Field(default=None, description="logit_kd: a `cotdistill logits` cache directory (or the "
                                                           "generation stage's logprobs.jsonl)")
    output_dir: str
    max_length: int = Field(default=2048, ge=16)
    max_truncated_share: float = Field(default=0.05, ge=0, le=1, description="refuse when more examples are too long")
    chat_template: str | None = Field(default=None, description="the student's chat template instead of its "
                                      "tokenizer's: a .jinja file or the template text (saved with final/)")
    loss_chunk_tokens: int | None = Field(default=None, ge=0, description="logit_kd / kd: trained tokens whose logits "
                                          "are made at once (activation-checkpointed chunks: memory O(chunk x vocab), "
                                          "not O(batch x length x vocab)); None: 512, 0: unchunked")
    per_device_train_batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW decoupled weight decay")
    num_train_epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    lr_scheduler_type: str = "linear"
    logging_steps: int = Field(default=10, ge=1)
    save_steps: int = Field(default=500, ge=1)
    save_total_limit: int | None = 2
    seed: int = 0
    length_grouped: bool = Field(default=True, description="batch examples of similar length (less padding)")
    packing: bool = Field(
        default=False, description="only where attention honours sequence boundaries (flash-attention varlen)"
    )
    attn_implementation: str | None = Field(default=None, description="e.g. \"flash_attention_2\" on GPUs")
    bf16: bool | None = Field(default=None, description="None: bf16 where the GPU supports it, fp32 on CPU")
    gradient_checkpointing: bool | None = Field(default=None, description="None: on for GPUs, off on CPU")
    lora: LoraConfig | None = None
    gkd: GKDOptions = GKDOptions()
    kd: KDOptions = KDOptions()
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="tensorboard, wandb, trackio")
    resume: bool = Field(default=True, description="continue from the last checkpoint in output_dir")
    progress: bool = True

    @model_validator(mode="after")
    def _method_inputs(self):
        if self.method in ("gkd", "distill") and not self.teacher:
            raise ValueError(f"method '{self.method}' needs a teacher model (set teacher)")
        if self.method == "kd" and not (self.teacher or self.teachers):
            raise ValueError("method 'kd' needs a live teacher (set teacher, or teachers for an ensemble)")
        live_terms = [n for n in ("teachers", "features", "attention", "relation") if getattr(self, n) is not None]
        live_terms += ["cosine"] * bool(self.cosine)
        live_terms += [f"kd.{n}" for n in ("schedule",) if getattr(self.kd, n) is not None]
        live_terms += ["kd.importance"] * (self.kd.importance != "none") + ["kd.divergence"] * (
            self.kd.divergence != "forward"
        )
        if live_terms and self.method != "kd":
            raise ValueError(f"{', '.join(live_terms)}: only method 'kd' (live teacher) uses these; set method=kd")
        if self.attention is not None and self.attn_implementation not in (None, "eager"):
            raise ValueError(f"attention: attention transfer reads the attention maps, which only 'eager' attention "
                             f"returns; leave attn_implementation unset (got '{self.attn_implementation}')")
        if self.qat is not None and (self.lora is not None or self.method in ("gkd", "distill")):
            raise ValueError("qat: quantization-aware training runs with sft, logit_kd or kd on full weights; drop "
                             "lora, or use one of those methods")
        if self.method == "logit_kd" and not self.logprobs:
            raise ValueError("method 'logit_kd' needs the cached teacher logprobs (set logprobs)")
        if self.packing and self.attn_implementation not in ("flash_attention_2", "flash_attention_3"):
            raise ValueError("packing lets packed examples attend to each other unless attention honours "
                             "sequence boundaries: set attn_implementation=flash_attention_2 (GPU) or packing=false")
        return self

    @model_validator(mode="after")
    def _batch_terms(self):
        # both compare examples within one micro-batch: with one example RKD's pairwise term is exactly 0 and
        # importance weights (mean 1 per batch) are all 1, so the option would silently do nothing
        terms = ["relation"] * (self.relation is not None) + ["kd.importance"] * (self.kd.importance != "none")
        if terms and self.per_device_train_batch_size < 2:
            raise ValueError(f"{', '.join(terms)}: compares the examples of one micro-batch, and "
                             f"per_device_train_batch_size is 1 (the term would be 0 / the weights all 1); set "
                             f"per_device_train_batch_size >= 2 (use gradient_accumulation_steps to keep memory)")
        return self


# ---------------------------------------------------------------- eval stage
class EvalModel(StrictModel):
    name: str = Field(description="label in results and plots")
    role: Literal["teacher", "student", "baseline"] = "student"
    serve: TeacherConfig = Field(description="how to serve this model: an offline vLLM engine or an "
                                             "OpenAI-compatible server (the same blocks as a teacher)")


class EvalBenchmark(StrictModel):
    name: str
    source: SourceConfig
    template: str = Field(default="math_boxed_think", description="prompt template (prompts/)")


class EvalConfig(StrictModel):
    models: list[EvalModel] = Field(min_length=1)
    benchmarks: list[EvalBenchmark] = Field(min_length=1)
    sampling: SamplingConfig = Field(
        default=SamplingConfig(n=4, temperature=0.6, max_tokens=1024), description="temperature 0 = greedy"
    )
    ks: list[int] = Field(default_factory=lambda: [1, 4], description="pass@k and maj@k for each k <= n")
    ci: Literal["bootstrap", "wilson"] = "bootstrap"
    train_data: list[str] = Field(
        default_factory=list, description="filter outputs / jsonl files to check for overlap"
    )
    ngram: int = Field(default=8, ge=3)
    contamination: Literal["error", "warn"] | None = Field(
        default=None, description="benchmark questions sharing n-grams with train_data: None/error refuses to score; "
                                  "warn scores anyway and records the opt-out in results.json")
    verify_workers: int = Field(default=0, ge=0)
    verify_timeout_s: float = Field(default=10.0, gt=0)
    output_dir: str
    progress: bool = True

    @model_validator(mode="after")
    def _unique_names(self):
        for what, names in (
            ("models", [m.name for m in self.models]),
            ("benchmarks", [b.name for b in self.benchmarks]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique, got {names}")
        return self


# ---------------------------------------------------------------- the whole pipeline (cotdistill run)
class StudentInit(StrictModel):
    """A fresh, randomly initialised Llama that shares the teacher's tokenizer (the embedded run)."""

    hidden: int = Field(default=128, ge=32)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1, description="hidden / heads must be a head size vLLM supports (32, 64, ...)")
    intermediate: int | None = Field(default=None, ge=1, description="None: 2 * hidden")
    seed: int = 0

    @model_validator(mode="after")
    def _servable(self):
        problem = head_size_problem(self.hidden, self.heads)
        if problem:
            raise ValueError(problem)
        return self


class StudentFromTeacher(StrictModel):
    """A student made of the teacher's own blocks (DistilBERT): embeddings, head and every ``every``-th
    block, or the blocks listed (0-based). Its width is the teacher's."""

    from_teacher: Literal[True] = Field(description="set to true")
    layers: list[int] | None = Field(default=None, min_length=1, description="teacher blocks to keep, 0-based")
    every: int = Field(default=2, ge=1, description="keep blocks 0, every, 2*every, ... (when layers is not given)")


def _student_kind(v) -> str:
    if isinstance(v, str):
        return "=path"
    if isinstance(v, StudentFromTeacher) or (isinstance(v, dict) and "from_teacher" in v):
        return "=from_teacher"
    return "=fresh"


# a hub id / directory, a fresh model on the teacher's tokenizer, or the teacher's own blocks; the tag
# picks the branch, so an error names the fields of the one that was meant (tags starting with "=" are
# left out of error locations)
StudentSpec = Annotated[Annotated[str, Tag("=path")] | Annotated[StudentInit, Tag("=fresh")]
                        | Annotated[StudentFromTeacher, Tag("=from_teacher")], Discriminator(_student_kind)]


class SweepConfig(StrictModel):
    """Students of several sizes from one list: every listed student (or those named in ``students``) is
    repeated at every size, as ``<name>-<size label>`` (h<hidden>l<layers>, or teacher-<blocks>)."""

    sizes: list[StudentSpec] = Field(min_length=1, description="student architectures: fresh {hidden, layers, "
                                                               "heads}, {from_teacher: true, ...}, or a directory")
    students: list[str] | None = Field(default=None, min_length=1, description="the students repeated at every "
                                                                               "size (default: all of them)")
    train: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per size label, train fields that override the swept students' own "
                                          "(e.g. {h256l2: {learning_rate: 1.0e-3}}: wider models want a smaller step)")

    @model_validator(mode="after")
    def _known_labels(self):
        labels = [size_label(s) for s in self.sizes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"sizes: two sizes share a label ({labels}); give each size once")
        unknown = [k for k in self.train if k not in labels]
        if unknown:
            raise ValueError(f"train: {unknown} name no size of this sweep; use one of {labels}")
        return self


def size_label(spec) -> str:
    if isinstance(spec, str):
        return "".join(c if c.isalnum() else "_" for c in Path(spec).name)
    if isinstance(spec, StudentFromTeacher):
        return "teacher-" + ("b" + "_".join(map(str, spec.layers)) if spec.layers else f"every{spec.every}")
    return f"h{spec.hidden}l{spec.layers}"


class RunStudent(StrictModel):
    name: str = Field(description="label in results, the stage name train:<name>@<seed> and the output folder")
    data: Literal["filtered", "unfiltered", "answers_only"] = Field(
        default="filtered", description="training set: verified traces, every trace, or gold answers only")
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainConfig fields; student, dataset and output paths are filled in by the run",
    )
    seeds: list[int] | None = Field(
        default=None,
        min_length=1,
        description="one trained student per seed (weights init + data order); default: the run's seeds",
    )
    init_from: str | None = Field(
        default=None,
        description="start from this (earlier) student's trained model of the "
        "same seed instead of the run's student, e.g. GKD after SFT",
    )
    student: StudentSpec | None = Field(
        default=None,
        description="this student's own starting model instead of the run's (another size, or from_teacher)",
    )
    teacher_from: str | None = Field(
        default=None,
        description="kd / gkd / distill: the live teacher is this (earlier) "
        "student's model of the same seed: born-again rounds, or "
        "an assistant in progressive distillation",
    )
    ptq: QATConfig | None = Field(default=None, description="no training: post-training quantization (weight-only) "
                                                            "of the init_from student's model of the same seed")

    @model_validator(mode="after")
    def _distinct_seeds(self):
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"students '{self.name}': seeds must be distinct, got {self.seeds}")
        if self.ptq is not None and (self.init_from is None or self.train or self.student is not None):
            raise ValueError(f"students '{self.name}'.ptq: quantizes the trained model of the student named in "
                             f"init_from; set init_from and leave train and student out")
        return self


class PTQStage(StrictModel):
    """A run stage that quantizes a trained student (cotdistill/quant.py)."""

    source: str
    output_dir: str
    bits: Literal[4, 8]


class RunEval(StrictModel):
    benchmarks: list[EvalBenchmark] = Field(min_length=1)
    sampling: SamplingConfig = Field(
        default=SamplingConfig(n=1, temperature=0.0, max_tokens=1024), description="greedy"
    )
    ks: list[int] = Field(default_factory=lambda: [1])
    ci: Literal["bootstrap", "wilson"] = "wilson"
    teacher: bool = Field(default=True, description="evaluate the teacher too (retention needs it)")
    ngram: int = Field(
        default=8, ge=3, description="overlap check of benchmark questions against the filtered training set"
    )
    contamination: Literal["error", "warn"] | None = Field(
        default=None, description="benchmark questions found in the training data: None/error stops the run; warn "
                                  "goes on and records the opt-out in results.json")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="the students' eval engines (default: the teacher's); lower it when "
                                              "training ran in this process on the same GPU")


class RunTargets(StrictModel):
    """What the run checks and reports (it does not fail on a missed target unless strict)."""

    min_retention: float = Field(default=0.95, ge=0, description="best distilled student / teacher")
    min_gain_over_answers_only: float = Field(default=0.10, ge=0, description="accuracy points (0.10 = 10 points)")
    filtered_at_least_unfiltered: bool = True
    strict: bool = Field(default=False, description="exit non-zero when a target is missed")


class RunConfig(StrictModel):
    output_dir: str
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="student seeds: every student is trained once per seed unless it lists its own",
    )
    teacher: TeacherConfig  # generates the traces and is evaluated as the reference
    student: StudentSpec  # hub id / directory, a fresh model on the teacher's tokenizer, or from_teacher
    generate: dict[str, Any]  # GenerateConfig fields except teacher and output_dir
    filter: dict[str, Any] = Field(default_factory=dict, description="FilterConfig fields except the directories")
    logits: dict[str, Any] = Field(
        default_factory=dict,
        description="LogitsConfig fields (logit_kd students' teacher "
        "top-k cache): mode score (default) | in_pass (when generate.sampling.logprobs is set)",
    )
    students: list[RunStudent] = Field(min_length=1)
    eval: RunEval
    benchmark: str | None = Field(
        default=None, description="which eval benchmark the targets are judged on (default: the first)"
    )
    targets: RunTargets = RunTargets()
    sweep: SweepConfig | None = Field(default=None, description="repeat students at several sizes (compression sweep)")

    @model_validator(mode="before")
    @classmethod
    def _expand_sweep(cls, data):
        """students x sweep.sizes -> one student per (student, size); references between swept students
        (init_from, teacher_from) follow to the same size."""
        if not isinstance(data, dict) or not data.get("sweep") or not isinstance(data.get("students"), list):
            return data
        sweep = SweepConfig.model_validate(data["sweep"])
        base = [s if isinstance(s, dict) else s.model_dump() for s in data["students"]]
        names = [s.get("name") for s in base]
        swept = sweep.students or names
        unknown = [n for n in swept if n not in names]
        if unknown:
            raise ValueError(f"sweep.students: {unknown} are not students of this run ({names})")
        out = [s for s in base if s.get("name") not in swept]
        for spec in sweep.sizes:
            label = size_label(spec)
            dump = spec if isinstance(spec, str) else spec.model_dump(exclude_defaults=False)
            for s in base:
                if s.get("name") not in swept:
                    continue
                new = {**s, "name": f"{s['name']}-{label}", "student": dump}
                if sweep.train.get(label) and s.get("train"):  # trained students take the size's overrides
                    new["train"] = {**s["train"], **sweep.train[label]}
                for field in ("init_from", "teacher_from"):
                    if s.get(field) in swept:
                        new[field] = f"{s[field]}-{label}"
                if new.get("init_from"):  # starts from another student's trained model: no init of its own
                    new.pop("student")
                out.append(new)
        return {**data, "students": out}

    @model_validator(mode="after")
    def _check_parts(self):
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"student names must be unique, got {names}")
        if "teacher" in names:
            raise ValueError("'teacher' names the teacher in results; call the student something else")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for i, s in enumerate(self.students):
            if s.init_from is not None and s.student is not None:
                raise ValueError(f"students[{i}]: give init_from or student, not both")
            if s.teacher_from is not None and s.train.get("method") not in ("kd", "gkd", "distill"):
                raise ValueError(f"students[{i}].teacher_from: only live-teacher methods (kd, gkd, distill) take a "
                                 f"student as teacher; set train.method")
            for field in ("init_from", "teacher_from"):
                other = getattr(s, field)
                if other is None:
                    continue
                if other not in names[:i]:
                    raise ValueError(f"students[{i}].{field}: '{other}' is not a student listed before '{s.name}' "
                                     f"(students: {names[:i]}); list the student it starts from first")
                src = self.students[names.index(other)]
                missing = set(s.seeds or self.seeds) - set(src.seeds or self.seeds)
                if missing:
                    raise ValueError(f"students[{i}].{field}: '{other}' is not trained with seed(s) "
                                     f"{sorted(missing)}; give both students the same seeds")
        bench = [b.name for b in self.eval.benchmarks]
        if self.benchmark is not None and self.benchmark not in bench:
            raise ValueError(f"benchmark '{self.benchmark}' is not one of the eval benchmarks {bench}")
        # validate the embedded stage configs now, not an hour into the run
        parts = [
            ("generate", GenerateConfig, {**self.generate, "teacher": self.teacher.model_dump(), "output_dir": "-"}),
            ("filter", FilterConfig, {**self.filter, "generate_dir": "-", "output_dir": "-"}),
        ]
        live = isinstance(self.teacher, VLLMTeacher)  # its model path can be the live teacher of gkd / distill
        specs = [("student", self.student)] + [
            (f"students[{i}].student", s.student) for i, s in enumerate(self.students)
        ]
        for where, spec in specs:
            if isinstance(spec, StudentFromTeacher) and not live:
                raise ValueError(
                    f"{where}: from_teacher copies the teacher's blocks, but the run's teacher is a server; "
                    f"give the student as a directory built with `python -m cotdistill.student_init`"
                )
        for i, s in enumerate(self.students):
            if "seed" in s.train:
                raise ValueError(f"students[{i}].train.seed: a run sets seeds with 'seeds' (run-wide or per student), "
                                 f"not train.seed")
            if (s.train.get("method") in ("gkd", "distill", "kd") and not live and not s.teacher_from
                    and not (s.train.get("teacher") or s.train.get("teachers"))):
                raise ValueError(f"students[{i}].train.teacher: the run's teacher is a server; give method "
                                 f"'{s.train['method']}' the teacher's model (hub id or directory) to load")
        parts += [(f"students[{i}].train", TrainConfig,
                   {"student": "-", "dataset_dir": "-", "output_dir": "-", "logprobs": "-", "teacher": "-", **s.train})
                  for i, s in enumerate(self.students)]
        for where, cls, data in parts:
            try:
                cls.model_validate(data)
            except ValidationError as e:
                raise ValueError(format_validation_error(e, None, where)) from None
        return self
