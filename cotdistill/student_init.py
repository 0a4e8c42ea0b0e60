"""A student initialised from the teacher's own layers (DistilBERT): the teacher's embeddings, a subset
of its transformer blocks (every ``every``-th, or a given list) and its final norm and head, in a
model with fewer layers. Same width and tokenizer as the teacher, so it can be served, fine-tuned
and distilled like any other checkpoint.

    python -m cotdistill.student_init TEACHER OUT [--every 2 | --layers 0,2]

Works for decoder-only models that keep their blocks in ``model.model.layers`` (Llama, Qwen2/3,
Mistral, Gemma, Phi-3, SmolLM, ...); other layouts are refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.chat import check_model_location
from cotdistill.config import StudentFromTeacher, StudentInit, VLLMTeacher
from cotdistill.errors import CotdistillError, first_line
from cotdistill.tiny import build_student


def choose_layers(depth: int, layers: list[int] | None, every: int) -> list[int]:
    """0-based teacher blocks to keep: the given list (sorted, distinct, inside the teacher), or
    0, every, 2 * every, ... (DistilBERT keeps every other layer)."""
    if layers is None:
        return list(range(0, depth, every))
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise CotdistillError(f"student.layers: {bad} are not blocks of the teacher (it has {depth}: 0..{depth - 1})")
    if sorted(set(layers)) != list(layers):
        raise CotdistillError(f"student.layers: give distinct blocks in increasing order, got {layers}")
    return list(layers)


def from_teacher(teacher: str | Path, out: str | Path, layers: list[int] | None = None, every: int = 2) -> Path:
    """Write the reduced model and the teacher's tokenizer to ``out``; returns ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_location(str(teacher), "teacher", model=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(teacher), dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(teacher))
    except Exception as e:
        raise CotdistillError(f"teacher: cannot load '{teacher}': {first_line(e)}") from None
    blocks = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise CotdistillError(f"student from_teacher: {type(model).__name__} does not keep its blocks in "
                              f"model.model.layers; build the student another way (a hub id or a directory)")
    keep = choose_layers(len(blocks), layers, every)
    model.model.layers = torch.nn.ModuleList([blocks[i] for i in keep])
    for j, block in enumerate(model.model.layers):  # the KV cache indexes blocks by position
        attn = getattr(block, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = j
    tc = model.config.get_text_config()
    if getattr(tc, "layer_types", None):
        tc.layer_types = [tc.layer_types[i] for i in keep]
    tc.num_hidden_layers = len(keep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "cotdistill_from_teacher.json").write_text(json.dumps({"teacher": str(teacher), "layers": keep,
                                                                  "teacher_layers": len(blocks)}) + "\n")
    return out


def run(spec: StudentInit | StudentFromTeacher, teacher: VLLMTeacher, folder: Path) -> dict:
    """A run's student_init stage: the starting model in ``folder/model``, fresh on the teacher's tokenizer or
    made of the teacher's own blocks."""
    if isinstance(spec, StudentFromTeacher):
        path = from_teacher(teacher.model, folder / "model", spec.layers, spec.every)
        return {"model": str(path),
                "layers": json.loads((path / "cotdistill_from_teacher.json").read_text())["layers"]}
    tok = teacher.tokenizer or teacher.model
    path = build_student(tok, folder / "model", spec.hidden, spec.heads, spec.layers, spec.intermediate, spec.seed,
                         init_std=spec.init_std)
    return {"model": str(path)}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher")
    ap.add_argument("out")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=None)
    a = ap.parse_args()
    print(from_teacher(a.teacher, a.out, a.layers, a.every))

