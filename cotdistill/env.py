"""The one place that adjusts vLLM's environment. Called right before a vLLM engine is built."""

from __future__ import annotations

import os

DEFAULT_CPU_KV_CACHE_BYTES = 2 << 30  # vLLM on CPU otherwise reserves most of the RAM


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def prepare_vllm_env() -> None:
    """On CPU machines use every core (no OMP thread binding) unless the user chose otherwise."""
    if not cuda_available():
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
