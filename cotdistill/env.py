"""The one place that adjusts vLLM's environment. Called right before a vLLM engine is built."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_CPU_KV_CACHE_BYTES = 2 << 30  # vLLM on CPU otherwise reserves most of the RAM


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cpuinfo() -> dict[str, str]:
    """The first processor's lines of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16 (Sapphire Rapids and later, Zen 4+): bf16 matmuls several times faster than fp32.
    Without them (AVX2-only CPUs) oneDNN has no bf16 matmul and torch falls back to a generic loop."""
    flags = set(_cpuinfo().get("flags", "").split())
    return "amx_bf16" in flags or "avx512_bf16" in flags


def engine_dtype(dtype: str) -> str:
    """The dtype a vLLM engine is started with. vLLM's ``auto`` serves every model in bf16 on an x86 CPU, float32
    checkpoints included; on an x86 CPU without AVX512-BF16 or AMX those bf16 matmuls take the slow path
    (scripts/bench_cpu_dtype.py), so ``auto`` there means float32. Any other value, GPUs and other CPUs: as given."""
    import platform

    if dtype != "auto" or platform.machine().lower() not in ("x86_64", "amd64") or cpu_has_fast_bf16():
        return dtype
    return "auto" if cuda_available() else "float32"


def quiet_logs(verbose: bool = False) -> None:
    """The command line's logging: vLLM's logs on stderr (its default is stdout, which a stage's JSON summary owns),
    ours and the libraries' at WARNING (vLLM's at ERROR) unless ``verbose``; import-time noise (torchao's optional
    kernels, torch's pytree and FutureWarning notes) left out. Set before vLLM is imported; a user's settings win."""
    import logging
    import warnings

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if verbose:
        return
    # vLLM's warnings on CPU are engine notices a user cannot act on (tcmalloc, Triton, dtype casts): 20-odd lines
    if "VLLM_LOGGING_LEVEL" not in os.environ:
        os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"
        os.environ["COTDISTILL_VLLM_QUIETED"] = "1"  # a vLLM server we start logs to its own file at INFO
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    for name in ("torchao", "torch.utils._pytree", "torch._dynamo", "httpx", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*(Failed to load|is an Enum subclass|register_constant).*")


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to stdout while a stage runs (trainer log dicts, C extensions, child processes) goes to
    stderr, at the file-descriptor level, so the stage's JSON summary printed afterwards is stdout's only text."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def prepare_vllm_env() -> None:
    """On CPU machines use every core (no OMP thread binding) unless the user chose otherwise. Where the engine runs
    (this process on CPU): ``engine_in_this_process``."""
    if not cuda_available():
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """vLLM's CPU worker, when it runs in this process, replaces torch.set_num_threads with a no-op: put it back, so
    that the trainer's thread settings keep working after an engine starts here."""
    import torch

    set_threads = torch.set_num_threads
    try:
        yield
    finally:
        torch.set_num_threads = set_threads


@contextmanager
def engine_in_this_process() -> Iterator[None]:
    """Build the vLLM engine inside this process on CPU, unless VLLM_ENABLE_V1_MULTIPROCESSING says otherwise. On 2
    cores an engine in its own process competes with this one (rendering, writing, detokenizing) and both spin-wait:
    measured on the demo's generation (1,000 problems x 4 samples, 2026-12-03, AMX), 5,100-5,750 tok/s in its own
    process against 8,960-10,150 here, the same traces, and the engine starts in ~2.5 s instead of ~20 s.
    Afterwards nothing in this process stays changed for later engines or training: the variable is removed
    again, vLLM's cache of its environment dropped, torch.set_num_threads (which the CPU worker replaces with a
    no-op) restored. On GPUs vLLM's default (its own process) stays."""
    if cuda_available():
        yield
        return
    ours = "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ  # a value the user set stays, and decides
    if ours:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        with torch_threads_kept():  # also when the user's variable put the engine here
            yield
    finally:
        if ours:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        try:
            from vllm import envs

            envs.disable_envs_cache()
        except (ImportError, AttributeError):
            pass


def machine() -> dict:
    """What a measurement ran on, for every summary and benchmark line: the CPU model, its fast-matmul
    flags (AVX-512, AVX512-BF16, AMX: AMX machines run bf16 matmuls several times faster than AVX2-only
    ones, so absolute times differ between machines of one kind), the cores, and the GPU if any."""
    import platform

    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    out = {"cpu": model, "cores": os.cpu_count(), "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
           "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_bf16" in flags}
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def is_this_machine(host: str) -> bool:
    """Whether ``host`` (a name or an address, as in a base_url) reaches this machine: the loopback, the unspecified
    address, or an address of one of its network interfaces (a URL written with the machine's LAN address or host
    name). A name that does not resolve is elsewhere."""
    import ipaddress
    import socket

    import psutil

    if not host:
        return False
    try:
        addrs = {ai[4][0].split("%")[0] for ai in socket.getaddrinfo(host.strip("[]"), None)}
    except (OSError, UnicodeError):
        return False
    local = {a.address.split("%")[0] for nic in psutil.net_if_addrs().values() for a in nic}
    for a in addrs:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified or a in local:
            return True
    return False


def release_memory() -> None:
    """Free what a finished trainer held (its model, optimizer state and the CUDA allocator's cache): vLLM
    sizes its KV cache from the GPU's free memory, and refuses to start while a trainer's cache holds it."""
    import gc

    gc.collect()  # trainers hold reference cycles (callbacks, accelerator)
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
