"""Shared fixtures: a tiny local model (built once per session) and one vLLM engine per session."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

# `pytest -n N` (pytest-xdist, as `make test` runs it): each worker gets its own share of the cores and as many
# OpenMP threads, so two workers' thread pools never spin on one core (two unpinned torch or vLLM jobs on 2 cores
# run many times slower, ENVIRONMENT.md), and its own temporary directory, so that checks for leftovers there see
# only its own tests. Subprocesses inherit both.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _worker.startswith("gw") and _workers > 1:
    if hasattr(os, "sched_setaffinity"):
        _cores = sorted(os.sched_getaffinity(0))
        _per = max(1, len(_cores) // _workers)
        _slot = int(_worker[2:]) % max(1, len(_cores) // _per)
        os.sched_setaffinity(0, _cores[_slot * _per:(_slot + 1) * _per])
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_per)
    _tmp = os.path.join(tempfile.gettempdir(), f"cotdistill-tests-{os.getuid()}-{_worker}")  # one per worker, reused
    os.makedirs(_tmp, exist_ok=True)
    os.chmod(_tmp, 0o1777)  # like /tmp: any uid a test switches to works under it
    os.environ["TMPDIR"] = tempfile.tempdir = _tmp

# vLLM in-process, all cores, offline hub: set before anything imports vllm/datasets
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

ROOT = Path(__file__).resolve().parent.parent
KV_BYTES = 256 << 20


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from cotdistill.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def auto_engine_dtype() -> str:
    """The dtype ``dtype: auto`` starts a CPU vLLM engine in on this machine: float32 where env.engine_dtype says so
    (x86 without AMX / AVX512-BF16), else vLLM's own choice, bf16 on CPUs."""
    from cotdistill.env import engine_dtype

    return "float32" if engine_dtype("auto") == "float32" else "bfloat16"


def teacher_dict(model_dir: Path, **kw) -> dict:
    d = {"backend": "vllm", "model": str(model_dir), "max_model_len": 512,
         "kv_cache_memory_bytes": KV_BYTES, "enforce_eager": True}
    d.update(kw)
    return d


@pytest.fixture(scope="session")
def vllm_teacher(tiny_model):
    from cotdistill.config import VLLMTeacher
    from cotdistill.teachers.vllm_offline import VLLMOfflineTeacher

    t = VLLMOfflineTeacher(VLLMTeacher.model_validate(teacher_dict(tiny_model)))
    yield t
    t.close()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A smaller student sharing the tiny teacher's tokenizer (the tokenizer build is deterministic)."""
    from cotdistill.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("student") / "model", hidden=64, heads=2, layers=1,
                            intermediate=128, seed=1)


def own_address() -> str | None:
    """This machine's first non-loopback, non-link-local interface address (None where it has none)."""
    import ipaddress

    import psutil

    for nic in psutil.net_if_addrs().values():
        for a in nic:
            try:
                ip = ipaddress.ip_address(a.address.split("%")[0])
            except ValueError:  # MAC addresses
                continue
            if not (ip.is_loopback or ip.is_link_local):
                return str(ip)
    return None

