"""GPU memory a recipe's stages need, computed from the models' shapes and the config: the numbers the
GPU recipes state in their headers (tests/test_recipes.py recomputes them from each config).

    python -m cotdistill.memory data/configs/run_gsm8k_qwen_gpu.yaml   # the header lines a recipe states

Serving (generate / eval, vLLM): bf16 weights + the KV cache of ``seqs`` sequences at full length
(2 x layers x kv_heads x head_dim x 2 bytes per token) + 1 GiB of CUDA graphs and workspace.
Training (one process, no sharding), as the trainers here run it: fp32 master weights (4 B/param) with
fp32 gradients and AdamW moments (12 B/trained param; LoRA trains ~1%), activations with gradient
checkpointing (each layer's bf16 input, 2 B x tokens x hidden, plus one layer recomputed, ~34 B x tokens x
hidden with flash/sdpa attention), and the logits: TRL's GKD keeps full fp32 [tokens, V] tensors (about three:
logits, log-softmax, gradient); TRL's SFT (fused LM head) and DistillationTrainer tile them, as our chunked losses
do (``loss_chunk_tokens`` x V x ~6); a live teacher adds its bf16 weights and logits. Estimates, rounded up
to 0.1 GiB; they ignore fragmentation (add ~10%).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

GIB = 2**30


class Arch(NamedTuple):
    params: float
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int


# the models our GPU recipes name (from their config.json files)
ARCH = {
    "Qwen/Qwen2.5-Math-7B-Instruct": Arch(7.62e9, 28, 3584, 4, 128, 152064),
    "Qwen/Qwen2.5-7B-Instruct": Arch(7.62e9, 28, 3584, 4, 128, 152064),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": Arch(7.62e9, 28, 3584, 4, 128, 152064),
    "Qwen/Qwen2.5-Math-1.5B-Instruct": Arch(1.54e9, 28, 1536, 2, 128, 151936),
    "Qwen/Qwen2.5-1.5B-Instruct": Arch(1.54e9, 28, 1536, 2, 128, 151936),
    "Qwen/Qwen2.5-0.5B-Instruct": Arch(0.49e9, 24, 896, 2, 64, 151936),
}


def arch(model: str, aliases: dict[str, str] | None = None) -> Arch:
    """A hub id's shape; ``aliases`` maps a run's own outputs (runs/.../final) to the hub id they start from."""
    model = (aliases or {}).get(model, model)
    if model not in ARCH:
        raise KeyError(f"memory: no shape for '{model}'; add it to cotdistill.memory.ARCH")
    return ARCH[model]


def _gib(x: float) -> float:
    return round(-(-x / GIB * 10 // 1) / 10, 1)  # rounded up to 0.1 GiB


def serve(model: Arch, max_model_len: int, seqs: int = 1) -> dict:
    kv = 2 * model.layers * model.kv_heads * model.head_dim * 2 * max_model_len * seqs
    parts = {"weights": model.params * 2, "kv_cache": kv, "overhead": GIB}
    return {k: _gib(v) for k, v in parts.items()} | {"total": _gib(sum(parts.values()))}


def train(student: Arch, method: str, max_length: int, batch: int, lora: bool = False, teacher: Arch | None = None,
          chunk: int = 512, gradient_checkpointing: bool = True) -> dict:
    tokens = max_length * batch
    trained = student.params * (0.01 if lora else 1.0)
    acts = (student.layers * 2 + 34) * tokens * student.hidden if gradient_checkpointing else \
        student.layers * 34 * tokens * student.hidden
    if method == "gkd" and not chunk:  # TRL's GKD loss on full logits; chunked (loss_chunk_tokens) like the rest
        logits = tokens * student.vocab * 4 * 3
    else:
        logits = chunk * student.vocab * 4 * 6
    parts = {"weights_fp32": student.params * 4, "grads_and_adamw": trained * 12, "activations": acts,
             "logits": logits}
    if method in ("gkd", "distill", "kd") and teacher is not None:
        parts["teacher_weights"] = teacher.params * 2
        chunked = method == "kd" or method == "gkd" and chunk
        parts["teacher_logits"] = (chunk if chunked else tokens) * teacher.vocab * (2 if chunked else 6)
    return {k: _gib(v) for k, v in parts.items()} | {"total": _gib(sum(parts.values()))}


def train_stage(c, student: Arch, default_teacher: Arch | None = None) -> dict:
    """``train`` for a TrainConfig ``c`` whose student has the shape ``student``."""
    from cotdistill.config import chunk_size

    teacher = arch(c.teacher) if getattr(c, "teacher", None) else default_teacher
    return train(student, c.method, c.max_length, c.per_device_train_batch_size, c.lora is not None, teacher,
                 chunk_size(getattr(c, "loss_chunk_tokens", None)), c.gradient_checkpointing is not False)


def run_recipe(cfg) -> dict[str, dict]:
    """Every stage of a RunConfig that needs a GPU, by stage name (one entry per student, seeds alike)."""
    from cotdistill.plan import Plan

    plan = Plan(cfg)
    teacher = arch(cfg.teacher.model)
    student = arch(cfg.student)
    length = getattr(cfg.teacher, "max_model_len", None) or 4096
    out = {"generate": serve(teacher, length, 1)}
    for name, c in plan.configs.items():
        if name.startswith("train:") and hasattr(c, "method"):
            out[name.split("@")[0]] = train_stage(c, student, teacher if c.method == "kd" else None)
    out["eval:student"] = serve(student, length, 1)
    return out


def estimate(path) -> dict[str, dict]:
    """GPU memory of each stage a shipped config runs, by stage: generate_*, train_*, eval_* and run_* recipes.
    A train config whose student is an earlier stage's output (runs/.../final) is sized as the hub model that
    output started from: ``student_from`` in its header comment."""
    from pathlib import Path

    from cotdistill.config import EvalConfig, GenerateConfig, RunConfig, TrainConfig
    from cotdistill.loading import load_config

    text = Path(path).read_text()
    kind = Path(path).name.split("_")[0]
    if kind == "run":
        return run_recipe(load_config(RunConfig, path))
    if kind == "generate":
        c = load_config(GenerateConfig, path)
        return {"generate": serve(arch(c.teacher.model), getattr(c.teacher, "max_model_len", None) or 4096, 1)}
    if kind == "eval":
        c = load_config(EvalConfig, path)
        return {f"eval:{m.name}": serve(arch(m.serve.model, _aliases(text)),
                                        getattr(m.serve, "max_model_len", None) or 4096, 1) for m in c.models}
    if kind == "train":
        c = load_config(TrainConfig, path)
        return {"train": train_stage(c, arch(c.student, _aliases(text)))}
    raise ValueError(f"memory: {path} is not a generate/train/eval/run config")


def _aliases(text: str) -> dict[str, str]:
    """``# student_from: runs/x/final = Org/Model`` lines: what a run's own checkpoint is the shape of."""
    import re

    return dict(re.findall(r"#\s*student_from:\s*(\S+)\s*=\s*(\S+)", text))


def header(path) -> list[str]:
    """The lines a recipe's header states: ``<stage>: <total> GiB (<parts>)``."""
    return [f"{name}: {parts['total']} GiB (" + ", ".join(f"{k} {v}" for k, v in parts.items() if k != "total") + ")"
            for name, parts in estimate(path).items()]


def stated(text: str) -> dict[str, float]:
    """The totals a header states, by stage (the inverse of ``header``)."""
    import re

    return {m[0]: float(m[1]) for m in re.findall(r"#\s+(\S+): ([0-9.]+) GiB \(", text)}


def main(argv: list[str]) -> None:  # pragma: no cover - a reading aid
    for path in argv:
        print(f"# GPU memory (python -m cotdistill.memory {path}; estimates, see cotdistill/memory.py):")
        for line in header(path):
            print(f"#   {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
