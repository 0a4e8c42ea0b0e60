"""The one place that adjusts vLLM's environment. Called right before a vLLM engine is built."""

from __future__ import annotations

import os

DEFAULT_CPU_KV_CACHE_BYTES = 2 << 30  # vLLM on CPU otherwise reserves most of the RAM


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def prepare_vllm_env(in_process: bool = False) -> None:
    """On CPU machines use every core (no OMP thread binding) unless the user chose otherwise.

    ``in_process``: on CPU, run the next engines inside this process (VLLM_ENABLE_V1_MULTIPROCESSING=0):
    an engine then starts in about 2 s instead of 12 s, which dominates evaluating many small models
    one after another. Only for work that trains nothing afterwards in this process: vLLM then pins
    this process's torch to one thread and makes torch.set_num_threads a no-op."""
    if not cuda_available():
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
