"""What every trainer shares besides its data (train/data.py): device defaults and trainer arguments, the student
loaded with fp32 master weights (+ LoRA, + QAT), the loss scale across processes, peak memory, and saving
``final/`` (the full state dict gathered from sharded runs, the turn's end among the EOS ids) with the summary.
``fit(build, cfg)`` is every method's run: its ``build`` returns (trainer, tokenizer, preflight)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cotdistill.chat import assistant_end_token, check_model_location
from cotdistill.config import TrainConfig
from cotdistill.env import machine
from cotdistill.errors import CotdistillError, first_line
from cotdistill.loading import save_resolved
from cotdistill.quant import finalize_qat, prepare_qat, save_quantized
from cotdistill.store import write_atomic


def device_defaults(cfg: TrainConfig) -> dict:
    """TRL defaults to bf16 + gradient checkpointing; both only pay off on GPUs."""

    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    gc = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    return {"bf16": bf16, "fp16": False, "gradient_checkpointing": gc, "use_cpu": not cuda}


def load_student(cfg: TrainConfig, attn_implementation: str | None = None):
    """The student every method trains, loaded one way: fp32 master weights whatever the checkpoint's dtype
    (bf16 runs as autocast through the trainer's ``bf16`` flag, as TRL's SFT/GKD do: an AdamW update of
    ~1e-5 on a bf16 weight near 0.02 rounds away), then LoRA, then QAT's fake-quantized linears."""
    from transformers import AutoModelForCausalLM

    check_model_location(cfg.student, "student", model=True)
    attn = attn_implementation or cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.student, dtype=torch.float32,
                                                     **({"attn_implementation": attn} if attn else {}))
    except (OSError, ValueError) as e:
        raise CotdistillError(f"student: cannot load model '{cfg.student}': {first_line(e)}") from None
    if cfg.lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(cfg))
        if device_defaults(cfg)["gradient_checkpointing"]:
            model.enable_input_require_grads()  # checkpointed blocks need a grad-requiring input under LoRA
    if cfg.qat is not None:
        prepare_qat(model, cfg.qat.bits)
    return model


def one_device(args):
    """transformers wraps the model in ``DataParallel`` when one process sees several GPUs: the batch
    silently grows n_gpu-fold and per-token losses come back as [n_gpu] tensors. Several GPUs are used
    through ``accelerate launch`` (one process per GPU); a plain process trains on its first GPU."""
    _ = args.device  # sets _n_gpu (lazily computed by transformers)
    if args._n_gpu > 1:
        import warnings

        warnings.warn(f"{args._n_gpu} GPUs are visible to one process: training on the first only; launch with "
                      f"`accelerate launch --num_processes {args._n_gpu} -m cotdistill train ...` to use all",
                      stacklevel=2)
        args._n_gpu = 1
    return args


def training_args(cls, cfg: TrainConfig, **extra):
    """A TRL/transformers config object of class ``cls`` with the shared arguments, on one device per process."""
    return one_device(cls(**trainer_kwargs(cfg), **extra))


def trainer_kwargs(cfg: TrainConfig) -> dict:
    """Arguments shared by every TRL/transformers config class we build."""
    return dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio
        lr_scheduler_type=cfg.lr_scheduler_type,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        report_to=cfg.report_to,
        disable_tqdm=not cfg.progress,
        use_liger_kernel=bool(cfg.use_liger_kernel),
        **device_defaults(cfg),
    )


def global_token_loss(trainer, loss, num_items_in_batch):
    """A loss divided by the step's global trained-token count is scaled by the process count, because DDP
    averages the gradients over processes (as transformers does for its own losses)."""
    if num_items_in_batch is not None and trainer.args.average_tokens_across_devices:
        return loss * trainer.accelerator.num_processes
    return loss


def fit(build, cfg: TrainConfig) -> dict:
    """A method's ``run``: build its trainer, then train and save (train_and_save)."""
    trainer, tok, preflight = build(cfg)
    return train_and_save(trainer, cfg, tok, preflight)


def peft_config(cfg: TrainConfig):
    if cfg.lora is None:
        return None
    from peft import LoraConfig as PeftLora

    return PeftLora(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")


class PeakMemory:
    """Peak memory while training: the process's resident set (sampled every 50 ms from /proc, Linux)
    above what it held at the start, and on CUDA torch's peak allocation. Reported, never asserted."""

    def __init__(self):
        import threading

        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None

    def _sample(self):
        while not self._stop.wait(0.05):
            now = self._rss()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)

    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        mib = lambda b: round(b / 2**20, 1) if b is not None else None
        out = {"rss_start_mib": mib(self.start), "rss_peak_mib": mib(self.peak),
               "rss_growth_mib": mib(self.peak - self.start) if self.start is not None else None}
        if torch.cuda.is_available():
            out["cuda_peak_allocated_mib"] = mib(torch.cuda.max_memory_allocated())
        return out


def stop_on_turn_end(model, tok) -> list[int]:
    """The student learnt to end its turn with the chat template's closing token (``<|im_end|>``, ``<|eot_id|>``,
    ``<end_of_turn>``); a base model's generation config often stops only on ``<|endoftext|>``, so vLLM (which reads
    generation_config.json) would let it run on. The closing token joins the EOS ids of the saved config."""
    gc = model.generation_config
    ids = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    ids = [i for i in ids if i is not None]
    for extra in (tok.eos_token_id, assistant_end_token(tok)):
        if extra is not None and extra not in ids:
            ids.append(extra)
    gc.eos_token_id = ids if len(ids) > 1 else (ids[0] if ids else None)
    return ids


def is_sharded(trainer) -> bool:
    """FSDP, or DeepSpeed ZeRO-3: no process holds the whole model after training."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    ds = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(getattr(trainer, "is_deepspeed_enabled", False) and ds is not None and ds.zero_stage == 3)


def whole_model(trainer, cfg: TrainConfig):
    """The trained student, whole, on the main process. Unsharded runs unwrap it. Sharded runs (FSDP, ZeRO-3)
    gather the full state dict through the accelerator (every process takes part) and load it into a fresh,
    unsharded student built the same way (LoRA, QAT), where LoRA merging and QAT finalisation then see whole
    weights; ``save_pretrained`` on the partitioned model wrote empty tensors (ZeRO-3) or hung (FSDP).
    Other processes get None."""
    if not is_sharded(trainer):
        return trainer.accelerator.unwrap_model(trainer.model)
    try:
        state = trainer.accelerator.get_state_dict(trainer.model)
    except ValueError as e:  # ZeRO-3 without gathering on save
        raise CotdistillError(f"sharded save: {first_line(e)}; set zero3_save_16bit_model: true (stage3_gather_16bit_"
                              f"weights_on_model_save) in the accelerate/DeepSpeed config") from None
    if not trainer.is_world_process_zero():
        return None
    model = load_student(cfg)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise CotdistillError(f"sharded save: the gathered state dict does not fit the student (missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]})")
    return model


def train_and_save(trainer, cfg: TrainConfig, tok, preflight: dict) -> dict:
    """Resume from the last checkpoint when asked, train, save final/ (merged when LoRA), log."""
    import json

    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    main = trainer.is_world_process_zero()  # under `accelerate launch` every process runs this; one writes
    last = get_last_checkpoint(str(out)) if cfg.resume and out.exists() else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out / "config.yaml")
    with PeakMemory() as memory:
        result = trainer.train(resume_from_checkpoint=last)
    model = whole_model(trainer, cfg)  # None on processes other than the main one when sharded
    if model is not None and cfg.lora is not None and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    final = out / "final"
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    summary = {"method": cfg.method, "final_model": str(final), "resumed_from": last,
               "steps": trainer.state.global_step, "train_loss": result.training_loss,
               "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None,
               "train_runtime_s": result.metrics.get("train_runtime"), "memory": memory.summary(),
               "processes": trainer.accelerator.num_processes, "sharded": is_sharded(trainer), "preflight": preflight,
               "machine": machine()}
    if not main:
        trainer.accelerator.wait_for_everyone()
        return summary
    deploy = None
    if cfg.qat is not None:  # the weights keep their quantized values; the int codes ship beside them
        deploy = finalize_qat(model, cfg.qat.bits)
    stop_on_turn_end(model, tok)
    model.save_pretrained(str(final))
    tok.save_pretrained(str(final))
    if cfg.qat is not None:
        summary["qat"] = save_quantized(deploy, final, cfg.qat.bits, f"qat ({cfg.method})")
    write_atomic(out / "trainer_log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    trainer.accelerator.wait_for_everyone()
    return summary


def chunk_for(trainer, chunk: int) -> int:
    """The loss chunk a trainer can use: 0 (unchunked) when the model is sharded, because FSDP/ZeRO-3 gather the
    output head's weights only inside the model's own forward, and the chunks apply it outside (it crashed)."""
    if chunk and is_sharded(trainer):
        import warnings

        warnings.warn(
            "loss_chunk_tokens: the model is sharded (FSDP/ZeRO-3), so the logit loss runs unchunked, on the "
            "full [batch, length, vocab] logits",
            stacklevel=2,
        )
        return 0
    return chunk


class TrainsAlongside:
    """Mixin for a ``transformers.Trainer`` that trains modules beside its model (kd's feature projections, mutual's
    peers), listed first among the bases: ``self.alongside`` (a ModuleList) joins the optimizer
    (``alongside_groups``), is saved in every checkpoint as ``alongside_file`` and restored on resume; the per-term
    values a step appends to ``self._logged`` are logged as ``<log_prefix>/<term>`` means since the last log."""

    alongside_file = "alongside.pt"
    log_prefix = "train"

    def alongside_groups(self, params: list) -> list[dict]:
        return [{"params": params, "weight_decay": 0.0}]

    def log(self, logs, start_time=None):
        if "loss" in logs and self._logged:
            logs = {**logs, **{f"{self.log_prefix}/{k}": sum(v) / len(v) for k, v in self._logged.items()}}
            self._logged = {}
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        opt = super().create_optimizer(model) if model is not None else super().create_optimizer()
        params = [p for p in self.alongside.parameters() if p.requires_grad]
        if params and not any(p is params[0] for g in opt.param_groups for p in g["params"]):
            for group in self.alongside_groups(params):
                opt.add_param_group(group)
            # the Trainer zeroes only its model's gradients (model.zero_grad()): without this, the modules alongside
            # would add up every step's gradient since the start (mutual's peers diverged from a warm start)
            inner = getattr(opt, "optimizer", opt)
            inner.register_step_post_hook(lambda *_: self.alongside.zero_grad(set_to_none=True))
        return opt

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if len(list(self.alongside.parameters())) and self.is_world_process_zero():
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            torch.save(self.alongside.state_dict(), folder / self.alongside_file)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / self.alongside_file
        if path.exists():
            self.alongside.load_state_dict(torch.load(path, map_location=self.args.device))
