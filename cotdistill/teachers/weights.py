"""New weights into a running vLLM engine, without restarting it: the worker-side half (``WeightSync``, mixed into
vLLM's worker through ``worker_extension_cls`` and called by name with ``collective_rpc``) and what crosses to it.

Two callers: the on_policy method's rollout engine receives the trainer's tensors each optimizer step
(``load_student_weights``), and eval moves one engine from a model to the next of the same architecture, tokenizer
and engine settings (``load_checkpoint_dir``: the worker reads the checkpoint itself, so only a path crosses).
Both go through vLLM's in-place ``reload_weights``, which maps Hugging Face names onto the model's fused layers and
runs the kernel-format processing (the CPU's weight repacking) again. A tied LM head needs its name sent too: vLLM
re-processes only layers that received weights, and on CPU the head keeps a repacked copy of the old embedding."""

from __future__ import annotations

import json
from pathlib import Path

TIED_HEAD = "lm_head.weight"
EMBEDDING = "model.embed_tokens.weight"  # the Hugging Face name a tied head copies (Llama, Qwen2, Mistral, ...)


class WeightSync:
    def load_student_weights(self, names: list[str], packed: list) -> int:
        """Tensors sent as (dtype, shape, bytes), under Hugging Face names."""
        self.model_runner.reload_weights(weights_iterator=iter([(n, unpack(p)) for n, p in zip(names, packed)]),
                                         is_checkpoint_format=True)
        return len(names)

    def load_checkpoint_dir(self, path: str, tied_from: str | None) -> int:
        """Every tensor of the safetensors files in ``path``; ``tied_from`` is also sent as the LM head."""
        count = 0

        def weights():
            nonlocal count
            from safetensors import safe_open

            for f in sorted(Path(path).glob("*.safetensors")):
                with safe_open(str(f), "pt") as st:
                    for name in st.keys():
                        t = st.get_tensor(name)
                        count += 1
                        yield name, t
                        if name == tied_from:
                            yield TIED_HEAD, t

        self.model_runner.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)
        return count


def pack(t) -> tuple[str, list[int], bytes]:
    """A tensor as (dtype, shape, raw bytes): what crosses to the engine (its decoder rebuilds tensors only where
    its own messages say so)."""
    import torch

    t = t.detach().cpu().contiguous()
    return str(t.dtype).removeprefix("torch."), list(t.shape), t.reshape(-1).view(torch.uint8).numpy().tobytes()


def unpack(p):
    import torch

    dtype, shape, raw = p
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(getattr(torch, dtype)).reshape(shape)


def checkpoint_names(path: Path) -> set[str] | None:
    """The tensor names of a local safetensors checkpoint (its index when sharded); None when it has none."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    names: set[str] = set()
    for f in files:
        with safe_open(str(f), "pt") as st:
            names |= set(st.keys())
    return names


def tie_source(path: Path, config: dict) -> str | None | bool:
    """What ``load_checkpoint_dir`` must send as the LM head: None when the head is stored (or untied), the
    embedding's name when the head is tied to it, False when the checkpoint cannot be reloaded in place (not
    safetensors, or a tied head whose embedding goes by another name)."""
    names = checkpoint_names(path)
    if names is None:
        return False
    if not config.get("tie_word_embeddings", False) or TIED_HEAD in names:
        return None
    return EMBEDDING if EMBEDDING in names else False
