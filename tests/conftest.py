"""Shared fixtures: a tiny local model (built once per session) and one vLLM engine per session."""

from __future__ import annotations

import os

# vLLM in-process, all cores, offline hub: set before anything imports vllm/datasets
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KV_BYTES = 256 << 20


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from cotdistill.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


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
