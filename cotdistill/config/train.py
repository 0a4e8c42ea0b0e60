"""The train stage's config (cotdistill/train/): one TrainConfig whose ``method`` picks the trainer, the
option blocks of each method, and the optional packages a config can ask for."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cotdistill.config.common import StrictModel, TeacherConfig
from cotdistill.config.mutual import MutualOptions
from cotdistill.config.on_policy import MixedTeacher, OnPolicyOptions


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
    label_smoothing: float = Field(
        default=0.0, ge=0, lt=1, description="kd: smooth the teacher's soft targets, q' = (1 - eps) q + eps / V "
                                             "(an over-confident teacher)")
    confidence_penalty: float = Field(
        default=0.0, ge=0, description="kd: subtract this times the student's mean entropy (Pereyra et al.)")
    selection: Literal["fixed", "gold_likelihood"] = Field(
        default="fixed", description="kd, several teachers: fixed weights, or per-example weights "
        "softmax(log w_i + score_i(x) / selection_tau), score = teacher i's mean log-likelihood of the gold trace")
    selection_tau: float = Field(default=1.0, gt=0, description="kd, selection gold_likelihood: its temperature")


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
    "liger": ("liger_kernel", "'cotdistill[gpu]' (Triton kernels: CUDA GPUs only)"),
}


def optional_dependency_problems(report_to: list[str], attn_implementation: str | None,
                                 use_liger_kernel: bool = False) -> list[str]:
    """One line per optional package a train config needs and this environment lacks, with the install
    command: found when the config is loaded, not at trainer init after hours of generation."""
    import importlib.util

    out = []
    for field, names in (("report_to", [n for n in report_to if n not in ("none", "all")]),
                         ("attn_implementation", [attn_implementation] if attn_implementation else []),
                         ("use_liger_kernel", ["liger"] if use_liger_kernel else [])):
        for name in names:
            module, install = OPTIONAL_DEPENDENCIES.get(name, (None, None))
            if module is not None and importlib.util.find_spec(module) is None:
                out.append(f"{field}: '{name}' needs the {module} package, which is not installed: "
                           f"pip install {install}")
    return out


QAT_ON_FULL_WEIGHTS = ("qat: quantization-aware training runs with sft, logit_kd or kd on full weights; drop lora, "
                       "or use one of those methods")


class TrainConfig(StrictModel):
    """The fields every method has. ``TrainConfig.model_validate(data)`` (and loading a train YAML) returns the
    config class of ``data["method"]`` (TrainSFT, TrainGKD, TrainLogitKD, TrainKD, TrainOnPolicy), whose own fields
    follow; a field of another method is an error that names the method it belongs to."""

    method: Literal["sft", "gkd", "distill", "logit_kd", "kd", "on_policy", "mutual"] = "sft"
    student: str  # hub id or local directory (an SFT checkpoint for a warm start)
    dataset_dir: str  # a filter output directory (sft/, prompts/)
    output_dir: str
    qat: QATConfig | None = Field(default=None, description="sft / logit_kd / kd: quantization-aware training "
                                                            "(fake-quantized weights, straight-through gradients)")
    max_length: int = Field(default=2048, ge=16)
    max_truncated_share: float = Field(default=0.05, ge=0, le=1, description="refuse when more examples are too long")
    chat_template: str | None = Field(default=None, description="the student's chat template instead of its "
                                      "tokenizer's: a .jinja file or the template text (saved with final/)")
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
    use_liger_kernel: bool | None = Field(
        default=None, description="true: Liger's Triton layer kernels (RMSNorm, RoPE, SwiGLU; CUDA only, pip install "
        "'cotdistill[gpu]') through the trainer's use_liger_kernel. The [tokens x vocab] logits are already avoided "
        "by TRL's fused LM head (sft) and loss_chunk_tokens (logit_kd, kd, gkd)")
    bf16: bool | None = Field(default=None, description="None: bf16 where the GPU supports it, fp32 on CPU")
    gradient_checkpointing: bool | None = Field(default=None, description="None: on for GPUs, off on CPU")
    lora: LoraConfig | None = None
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="tensorboard, wandb, trackio")
    resume: bool = Field(default=True, description="continue from the last checkpoint in output_dir")
    progress: bool = True

    def __new__(cls, *args, **data):
        """``TrainConfig(method=..., ...)`` builds the method's class too (as model_validate does)."""
        if cls is TrainConfig and data:
            sub = METHOD_CONFIGS.get(data.get("method", "sft"))
            if sub is not None and not _foreign_fields(sub, data):
                cls = sub  # else: TrainConfig's own validation says what is wrong
        return super().__new__(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _by_method(cls, data, handler):
        if cls is not TrainConfig or not isinstance(data, dict):
            return handler(data)
        sub = METHOD_CONFIGS.get(data.get("method", "sft"))
        if sub is None:  # an unknown method: the Literal's error
            return handler(data)
        foreign = _foreign_fields(sub, data)
        if foreign:
            owners = sorted({m for k in foreign for m in METHOD_FIELDS[k]})
            if owners == ["kd"]:
                raise ValueError(f"{', '.join(foreign)}: only method 'kd' (live teacher) uses these; set method=kd")
            raise ValueError(f"{', '.join(foreign)}: method '{data.get('method', 'sft')}' does not use "
                             f"{'this' if len(foreign) == 1 else 'these'} (fields of {', '.join(owners)}); set method "
                             f"or drop {'it' if len(foreign) == 1 else 'them'}")
        return sub.model_validate(data)

    def fingerprint_dump(self) -> dict:
        """The dump a run's stage fingerprint hashes: every method's fields, at their defaults where this method
        has none (the one flat config's dump before the per-method classes, so earlier runs resume)."""
        return {**METHOD_DEFAULTS, **self.model_dump(mode="json")}

    # one validator per rule, checked in this order (each method class adds its own)
    @model_validator(mode="after")
    def _qat_on_full_weights(self):
        if self.qat is not None and self.lora is not None:
            raise ValueError(QAT_ON_FULL_WEIGHTS)
        return self

    @model_validator(mode="after")
    def _packing_needs_varlen_attention(self):
        if self.packing and self.attn_implementation not in ("flash_attention_2", "flash_attention_3"):
            raise ValueError("packing lets packed examples attend to each other unless attention honours "
                             "sequence boundaries: set attn_implementation=flash_attention_2 (GPU) or packing=false")
        return self


class TrainSFT(TrainConfig):
    """sft: sequence-level KD, TRL SFTTrainer on the filtered traces (train/sft.py)."""

    method: Literal["sft"] = "sft"


class _RolloutMethod(TrainConfig):
    """The methods whose student writes rollouts (gkd, distill, on_policy): no quantization-aware training."""

    @model_validator(mode="after")
    def _no_qat(self):
        if self.qat is not None:
            raise ValueError(QAT_ON_FULL_WEIGHTS)
        return self


class TrainGKD(_RolloutMethod):
    """gkd: TRL GKDTrainer (generalized JSD, on-policy share lmbda); distill: TRL's fully on-policy
    DistillationTrainer (train/gkd.py)."""

    method: Literal["gkd", "distill"]
    teacher: str | None = Field(default=None, description="hub id or local directory")
    gkd: GKDOptions = GKDOptions()
    loss_chunk_tokens: int | None = Field(default=None, ge=0, description="gkd: trained tokens whose logits (both "
                                          "models') are made at once; None: 512, 0: TRL's unchunked loss")

    @model_validator(mode="after")
    def _needs_a_teacher(self):
        if not self.teacher:
            raise ValueError(f"method '{self.method}' needs a teacher model (set teacher)")
        return self


class TrainLogitKD(TrainConfig):
    """logit_kd: KD from the teacher's cached top-k logprobs, no teacher in memory (train/logit_kd.py); the kd
    block's alpha and temperature apply."""

    method: Literal["logit_kd"]
    logprobs: str | None = Field(default=None, description="a `cotdistill logits` cache directory (or the "
                                                           "generation stage's logprobs.jsonl)")
    loss_chunk_tokens: int | None = Field(default=None, ge=0, description="trained tokens whose logits are made at "
                                          "once (activation-checkpointed chunks: memory O(chunk x vocab), not "
                                          "O(batch x length x vocab)); None: 512, 0: unchunked")
    kd: KDOptions = KDOptions()

    @model_validator(mode="after")
    def _needs_logprobs(self):
        if not self.logprobs:
            raise ValueError("method 'logit_kd' needs the cached teacher logprobs (set logprobs)")
        return self

    @model_validator(mode="after")
    def _live_options_only_with_kd(self):
        live = (["kd.schedule"] * (self.kd.schedule is not None) + ["kd.importance"] * (self.kd.importance != "none")
                + ["kd.divergence"] * (self.kd.divergence != "forward")
                + ["kd.label_smoothing"] * (self.kd.label_smoothing != 0)
                + ["kd.confidence_penalty"] * (self.kd.confidence_penalty != 0)
                + ["kd.selection"] * (self.kd.selection != "fixed"))
        if live:
            raise ValueError(f"{', '.join(live)}: only method 'kd' (live teacher) uses these; set method=kd")
        return self


class TrainKD(TrainConfig):
    """kd: live teacher(s) in memory, terms composed by their weights: soft targets at T (forward/reverse KL, JSD),
    FitNets features, TinyBERT attention, RKD relations, DistilBERT cosine; ensembles, a T schedule, importance
    weights (train/kd.py)."""

    method: Literal["kd"]
    teacher: str | None = Field(default=None, description="hub id or local directory")
    teachers: list[TeacherWeight] | None = Field(
        default=None, min_length=1, description="an ensemble; soft targets average their distributions"
    )
    features: FeatureTerm | None = Field(default=None, description="FitNets hidden-state term")
    attention: AttentionTerm | None = Field(default=None, description="TinyBERT attention-map term (eager attention)")
    relation: RelationTerm | None = Field(default=None, description="RKD pairwise-similarity term")
    cosine: float = Field(default=0.0, ge=0, description="DistilBERT's cosine term on the last hidden states")
    loss_chunk_tokens: int | None = Field(default=None, ge=0, description="trained tokens whose logits are made at "
                                          "once (activation-checkpointed chunks); None: 512, 0: unchunked")
    kd: KDOptions = KDOptions()

    @model_validator(mode="after")
    def _needs_a_teacher(self):
        if not (self.teacher or self.teachers):
            raise ValueError("method 'kd' needs a live teacher (set teacher, or teachers for an ensemble)")
        if self.kd.selection != "fixed" and len(self.teachers or []) < 2:
            raise ValueError("kd.selection gold_likelihood weighs several teachers per example: give teachers "
                             "(two or more)")
        return self

    @model_validator(mode="after")
    def _attention_needs_eager(self):
        if self.attention is not None and self.attn_implementation not in (None, "eager"):
            raise ValueError(f"attention: attention transfer reads the attention maps, which only 'eager' attention "
                             f"returns; leave attn_implementation unset (got '{self.attn_implementation}')")
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


class TrainOnPolicy(_RolloutMethod):
    """on_policy: the student samples completions for the training prompts; a teacher that is not loaded in the
    trainer (an in-process vLLM engine or an OpenAI-compatible vLLM server) scores every sampled token; the
    student learns from the per-token divergence (train/on_policy.py)."""

    method: Literal["on_policy"]
    teacher: str | TeacherConfig | None = Field(
        default=None, description="a local path or hub id (an in-process vLLM engine), or a teacher block "
        "({backend: vllm, ...} / {backend: openai, base_url: ..., model: ...}); it must share the student's "
        "tokenizer")
    teachers: list[MixedTeacher] | None = Field(
        default=None, min_length=2, description="several teachers: each prompt is graded by one, chosen by its "
        "problem's fields (route) and, among the teachers allowed, by its problem id against the weights (the "
        "same teacher for a problem on every run); instead of teacher")
    on_policy: OnPolicyOptions = OnPolicyOptions()

    @model_validator(mode="after")
    def _needs_a_teacher(self):
        if bool(self.teacher) == bool(self.teachers):
            raise ValueError("method 'on_policy' needs a teacher (a path, or a served teacher block), or teachers "
                             "(several, each with a name and a weight): one of the two")
        named = [("teacher", self.teacher)] if self.teacher else [(f"teachers.{t.name}", t.teacher)
                                                                  for t in self.teachers]
        for where, t in named:
            if getattr(t, "backend", None) == "openai" and not t.tokenizer:
                raise ValueError(f"{where}.tokenizer: a served teacher must name its tokenizer (path or hub id), so "
                                 f"that the run can check it is the student's: rollouts are scored token by token")
        if self.teachers and len({t.name for t in self.teachers}) < len(self.teachers):
            raise ValueError("teachers: two teachers share a name; names label the rollouts they grade")
        return self


class TrainMutual(TrainConfig):
    """mutual: deep mutual learning, several students trained together, each distilling from the others' soft
    outputs, with or without a fixed teacher (train/mutual.py)."""

    method: Literal["mutual"]
    teacher: str | None = Field(default=None, description="optional fixed teacher (hub id or local directory)")
    mutual: MutualOptions = MutualOptions()
    loss_chunk_tokens: int | None = Field(default=None, ge=0, description="trained tokens whose logits (all peers', "
                                          "the teacher's) are made at once; None: 512, 0: unchunked")

    @model_validator(mode="after")
    def _teacher_and_weight(self):
        if self.mutual.teacher_weight and not self.teacher:
            raise ValueError("mutual.teacher_weight: a teacher term needs teacher (hub id or local directory)")
        return self


def _foreign_fields(method_class: type[TrainConfig], data: dict) -> list[str]:
    """The keys of ``data`` that are fields of other methods, not of ``method_class``."""
    return [k for k in data if k not in method_class.model_fields and k in METHOD_FIELDS]


METHOD_CONFIGS: dict[str, type[TrainConfig]] = {
    "sft": TrainSFT, "gkd": TrainGKD, "distill": TrainGKD, "logit_kd": TrainLogitKD, "kd": TrainKD,
    "on_policy": TrainOnPolicy, "mutual": TrainMutual}
# a field that only some methods have -> those methods
METHOD_FIELDS: dict[str, list[str]] = {}
for _m, _cls in METHOD_CONFIGS.items():
    for _f in _cls.model_fields:
        if _f not in TrainConfig.model_fields:
            METHOD_FIELDS.setdefault(_f, []).append(_m)
# every method-only field at its default (fingerprint_dump)
METHOD_DEFAULTS: dict = {}
for _cls in (TrainKD, TrainLogitKD, TrainGKD):
    for _f, _info in _cls.model_fields.items():
        if _f not in TrainConfig.model_fields and _f != "method":
            _d = _info.get_default(call_default_factory=True)
            METHOD_DEFAULTS[_f] = _d.model_dump(mode="json") if hasattr(_d, "model_dump") else _d
