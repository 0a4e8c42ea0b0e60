"""What every trainer shares: device defaults, data loading, and the preflight checks that
refuse to start a run that would silently train the wrong thing."""

from __future__ import annotations

import os
from pathlib import Path

from cotdistill.artifacts import load_filter_split
from cotdistill.chat import assistant_end_token, check_model_location, end_of_turn_ids  # noqa: F401 (re-exported)
from cotdistill.config import TrainConfig
from cotdistill.env import machine
from cotdistill.errors import CotdistillError, first_line
from cotdistill.loading import save_resolved
from cotdistill.quant import finalize_qat, prepare_qat, save_quantized
from cotdistill.store import write_atomic


def device_defaults(cfg: TrainConfig) -> dict:
    """TRL defaults to bf16 + gradient checkpointing; both only pay off on GPUs."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    gc = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    return {"bf16": bf16, "fp16": False, "gradient_checkpointing": gc, "use_cpu": not cuda}


def load_student(cfg: TrainConfig, attn_implementation: str | None = None):
    """The student every method trains, loaded one way: fp32 master weights whatever the checkpoint's dtype
    (bf16 runs as autocast through the trainer's ``bf16`` flag, as TRL's SFT/GKD do: an AdamW update of
    ~1e-5 on a bf16 weight near 0.02 rounds away), then LoRA, then QAT's fake-quantized linears."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_location(cfg.student, "student")
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
        **device_defaults(cfg),
    )


def load_split(cfg: TrainConfig, name: str):
    return load_filter_split(cfg.dataset_dir, name, "dataset_dir")


def example_name(ds, i: int) -> str:
    cols = ds.column_names
    if "problem_id" in cols:
        row = ds[i]
        return f"example {i} (problem '{row['problem_id']}'" + (
            f", sample {row['sample_index']})" if "sample_index" in cols else ")"
        )
    return f"example {i}"


def check_template_keeps_completion(tok, ds, field: str = "student") -> None:
    """Refuse a chat template that rewrites the assistant turn it renders: DeepSeek-R1's drops everything up to
    ``</think>`` from assistant messages (it is made for chat history), so a student with that template would
    train on the answers only, silently (TRL only warns). Checked on every distinct shape of completion."""
    checked = set()
    for i, msgs in enumerate(ds["messages"]):
        content = msgs[-1]["content"]
        shape = ("<think>" in content, "</think>" in content)
        if shape in checked:
            continue
        checked.add(shape)
        text = tok.apply_chat_template(msgs, tokenize=False)
        if content not in text:
            kept = next((len(content) - j for j in range(len(content)) if content[j:] in text), 0)
            raise CotdistillError(
                f"preflight: {example_name(ds, i)}: the {field}'s chat template rewrites the assistant turn (it keeps "
                f"{kept} of {len(content)} characters of the completion, e.g. DeepSeek-R1's keeps only the text after "
                f"</think>): the student would not learn the reasoning; set chat_template to a template that renders "
                f"assistant content unchanged")


def drop_too_long(ds, tok, max_length: int, max_share: float, column: str = "messages"):
    """Drop examples longer than max_length (their end-of-turn would be cut off: students that
    never stop), refusing when more than ``max_share`` of them are too long."""
    lengths = [len(tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]) for m in ds[column]]
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    share = len(too_long) / len(ds)
    if share > max_share:
        raise CotdistillError(
            f"{len(too_long)} of {len(ds)} examples ({share:.1%}) exceed max_length {max_length} tokens (longest "
            f"{max(lengths)}, e.g. {example_name(ds, too_long[0])}); raise max_length or max_truncated_share, or "
            f"filter with max_completion_tokens"
        )
    skip = set(too_long)
    keep = [i for i in range(len(ds)) if i not in skip]
    return (ds.select(keep) if too_long else ds), len(too_long)


def _row_key(row) -> tuple:
    return (row.get("problem_id"), row.get("sample_index"))


def check_loss_masks(ds, tok, source_ds=None) -> dict:
    """Token-level checks of a TRL-processed dataset (``labels``: -100 = not trained, or an
    ``assistant_masks``/``completion_mask`` column): every example trains on something, and on an
    end-of-turn token (otherwise the student never learns to stop). TRL silently drops examples
    whose mask is empty; those are named here instead."""
    source_ds = source_ds if source_ds is not None else ds
    if len(ds) != len(source_ds):
        have = {_row_key(r) for r in ds}
        lost = [i for i, r in enumerate(source_ds) if _row_key(r) not in have]
        name = example_name(source_ds, lost[0]) if lost else f"{len(source_ds) - len(ds)} examples"
        raise CotdistillError(f"preflight: {name} has an empty loss mask (no assistant tokens to learn) and would be "
                              f"dropped silently; remove it or fix its messages")
    if "labels" in ds.column_names:
        trained_of = lambda r: [t for t, lab in zip(r["input_ids"], r["labels"]) if lab != -100]
    else:
        col = next((c for c in ("assistant_masks", "completion_mask") if c in ds.column_names), None)
        if col is None:
            raise CotdistillError("preflight: the processed dataset has no loss mask; the loss would cover the prompt")
        trained_of = lambda r: [t for t, m in zip(r["input_ids"], r[col]) if m]
    eot = end_of_turn_ids(tok)
    trained_tokens = 0
    for i, row in enumerate(ds):
        trained = trained_of(row)
        name = example_name(source_ds, i)
        if not trained:
            raise CotdistillError(f"preflight: {name} has an empty loss mask (no assistant tokens to learn); "
                                  f"remove it or fix its messages")
        if not eot & set(trained):
            raise CotdistillError(
                f"preflight: {name}: the end-of-turn token is not trained (the student would never stop); the chat "
                f"template must put {tok.convert_ids_to_tokens(sorted(eot))} inside the assistant turn")
        trained_tokens += len(trained)
    return {"examples": len(ds), "trained_tokens": trained_tokens}


def check_same_vocab(student_tok, teacher_tok, what: str) -> None:
    """Logit-level methods compare distributions token by token: the vocabularies must be the same
    (extra rows in a model's embedding, e.g. 151936 vs 152064, are padding and are sliced off)."""
    sv, tv = student_tok.get_vocab(), teacher_tok.get_vocab()
    if sv != tv:
        diff = len(set(sv.items()) ^ set(tv.items()))
        raise CotdistillError(
            f"preflight: {what}: student and teacher tokenizers differ ({len(sv)} vs {len(tv)} tokens, {diff} "
            f"entries differ); logit-level distillation needs the same tokenizer: use sft, or a teacher of the "
            "student's family"
        )


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
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        import torch

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
    if cfg.qat is not None:  # the weights keep their quantized values; the int codes ship beside them

        finalize_qat(model)
    stop_on_turn_end(model, tok)
    model.save_pretrained(str(final))
    tok.save_pretrained(str(final))
    if cfg.qat is not None:
        summary["qat"] = save_quantized(model, final, cfg.qat.bits, f"qat ({cfg.method})")
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
