"""A vLLM server that this run starts for its teacher and stops when done: the teacher's weights and KV cache
live in another process, reached over HTTP on 127.0.0.1 like any served teacher.

    with ServedTeacher(VLLMTeacher(model="runs/tiny-teacher", max_model_len=512)) as t:
        t.score(sequences, starts, k=8)

The server gets a free port, its log goes to ``log_path``, and it dies with us: stopped on close (SIGTERM to
its process group, then SIGKILL), and, if this process is killed outright, by the kernel (parent-death
signal), so a stopped run leaves no server behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cotdistill.config import OpenAITeacher, VLLMTeacher
from cotdistill.env import DEFAULT_CPU_KV_CACHE_BYTES, cuda_available, engine_dtype
from cotdistill.errors import CotdistillError
from cotdistill.teachers.openai_server import OpenAIServerTeacher

PR_SET_PDEATHSIG = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    import ctypes

    os.setsid()  # its own process group: stopped as a whole
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def server_command(cfg: VLLMTeacher, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.model, "--served-model-name",
           "teacher", "--host", "127.0.0.1", "--port", str(port), "--dtype", engine_dtype(cfg.dtype)]
    for flag, value in (("--tokenizer", cfg.tokenizer), ("--revision", cfg.revision),
                        ("--max-model-len", cfg.max_model_len), ("--max-num-seqs", cfg.max_num_seqs),
                        ("--chat-template", cfg.chat_template)):
        if value is not None:
            cmd += [flag, str(value)]
    kv = cfg.kv_cache_memory_bytes or (None if cuda_available() else DEFAULT_CPU_KV_CACHE_BYTES)
    cmd += (["--kv-cache-memory-bytes", str(kv)] if kv else
            ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)])
    cmd += ["--enforce-eager"] * cfg.enforce_eager + ["--trust-remote-code"] * cfg.trust_remote_code
    if cfg.tensor_parallel_size > 1:
        cmd += ["--tensor-parallel-size", str(cfg.tensor_parallel_size)]
    return cmd


class ServedTeacher:
    """Start the server, wait until it answers, then behave as the OpenAI-compatible teacher on it."""

    def __init__(self, cfg: VLLMTeacher, log_path: Path, startup_s: float = 300.0, seed: int = 0):
        import httpx

        from cotdistill.chat import check_model_location

        check_model_location(cfg.model, "teacher.model", model=True)
        port = _free_port()
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")}
        if env.pop("COTDISTILL_VLLM_QUIETED", None):  # quiet on our stderr, whole in the server's log file
            env["VLLM_LOGGING_LEVEL"] = "INFO"
        if not cuda_available():
            # on CPU the server shares the cores with the trainer that calls it: its OpenMP threads spinning after
            # each request take the trainer's cores (2 cores, the demo's on_policy, the trainer on one thread: a
            # step 1.12 s with spinning server threads, 0.55 s with sleeping ones)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(server_command(cfg, port) + ["--seed", str(seed)], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        base, deadline = f"http://127.0.0.1:{port}", time.time() + startup_s
        while True:
            if self.proc.poll() is not None:
                tail = log_path.read_text()[-600:].strip().splitlines()[-1:] or ["(empty log)"]
                raise CotdistillError(f"teacher.model '{cfg.model}': the teacher server exited with code "
                                      f"{self.proc.returncode} while starting: {tail[0]} (log: {log_path})")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.close()
                raise CotdistillError(f"teacher.model '{cfg.model}': the teacher server did not answer within "
                                      f"{startup_s:.0f} s (log: {log_path})")
            time.sleep(0.5)
        self.base_url = base + "/v1"  # served model name "teacher"
        self.client = OpenAIServerTeacher(OpenAITeacher(base_url=self.base_url, model="teacher", api="completions",
                                                        tokenizer=cfg.tokenizer or cfg.model))
        dtype = engine_dtype(cfg.dtype)  # "auto": vLLM's choice, which the server does not report
        self.info = self.client.info.model_copy(update={"model": cfg.model,
                                                        "dtype": None if dtype == "auto" else dtype})
        self.pid = self.proc.pid

    def score(self, sequences, starts, k):
        return self.client.score(sequences, starts, k)

    def generate(self, jobs, sampling):
        return self.client.generate(jobs, sampling)

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
