"""OpenAI-compatible teacher against a real vLLM server subprocess on 127.0.0.1."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from conftest import KV_BYTES, ROOT, read_jsonl

from cotdistill import generate
from cotdistill.config import GenerateConfig, OpenAITeacher
from cotdistill.errors import CotdistillError
from cotdistill.records import TokenLogprobs
from cotdistill.teachers.openai_server import OpenAIServerTeacher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, port: int, log):
    """A vLLM OpenAI-compatible server for ``model`` on 127.0.0.1:port, healthy, or the test fails."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", str(KV_BYTES)]
    with open(log, "w") as fh:
        # its own process group: the server and its EngineCore child are stopped (or SIGKILLed) together
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(1)
    stop_server(proc)
    pytest.fail("vLLM server did not become healthy in 180 s")


def stop_server(proc) -> None:
    """The whole group, so no EngineCore is left behind (also when the server itself was SIGKILLed)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGKILL or proc.returncode is not None:
            break
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their server
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    proc = start_server(tiny_model, port, tmp_path_factory.mktemp("server") / "server.log")
    base = f"http://127.0.0.1:{port}"
    yield base + "/v1"
    stop_server(proc)


def cfg_for(tiny_model, out, teacher: dict, **sampling) -> GenerateConfig:
    return GenerateConfig.model_validate({
        "source": {"kind": "reasoning_gym", "task": "chain_sum", "size": 6, "seed": 1},
        "prompt": {"template": "reasoning_gym"},
        "teacher": teacher,
        "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 16, "seed": 5, **sampling},
        "output_dir": str(out), "progress": False,
    })


@pytest.mark.slow
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_server_generation_with_logprobs(server, tiny_model, tmp_path, api):
    teacher = {"backend": "openai", "base_url": server, "model": "tiny", "api": api,
               "tokenizer": str(tiny_model), "max_concurrency": 4}
    summary = generate.run(cfg_for(tiny_model, tmp_path, teacher, logprobs=3))
    assert summary["traces"] == 12 and summary["complete"]
    traces = read_jsonl(tmp_path / "traces.jsonl")
    lps = {
        (r["problem_id"], r["sample_index"]): TokenLogprobs.model_validate(r)
        for r in read_jsonl(tmp_path / "logprobs.jsonl")
    }
    assert len({(t["problem_id"], t["sample_index"]) for t in traces}) == 12 and len(lps) == 12
    for t in traces:
        assert t["teacher"]["backend"] == "openai" and t["teacher"]["tokenizer_hash"]
        assert t["prompt_tokens"] > 10 and t["finish_reason"] in {"stop", "length"}
        lp = lps[(t["problem_id"], t["sample_index"])]
        a = lp.arrays()
        assert lp.num_tokens == t["completion_tokens"] and a["top_ids"].shape[1] == 3
        assert (a["top_ids"] >= 0).all() and np.all(np.diff(a["top_logprobs"], axis=1) <= 1e-6)


@pytest.mark.slow
def test_server_and_offline_agree_on_prompt_rendering(server, tiny_model, tmp_path):
    """Same template, same chat template: the server's prompt token count equals the offline one."""
    cfg = cfg_for(tiny_model, tmp_path / "srv", {"backend": "openai", "base_url": server, "model": "tiny"})
    generate.run(cfg)
    off = cfg_for(tiny_model, tmp_path / "off", {"backend": "vllm", "model": str(tiny_model),
                                                 "max_model_len": 512, "kv_cache_memory_bytes": KV_BYTES,
                                                 "enforce_eager": True})
    # the offline side in its own process: an in-process pipeline test earlier in the session (run e2e)
    # starts and closes engines, which tears down the parallel state the session engine needs
    import os
    import subprocess
    import sys

    import yaml

    (tmp_path / "off.yaml").write_text(yaml.safe_dump(off.model_dump(mode="json")))
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # generation only: an in-process engine starts faster
    p = subprocess.run([sys.executable, "-m", "cotdistill", "generate", str(tmp_path / "off.yaml")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    srv = {(r["problem_id"], r["sample_index"]): r["prompt_tokens"] for r in read_jsonl(tmp_path / "srv/traces.jsonl")}
    loc = {(r["problem_id"], r["sample_index"]): r["prompt_tokens"] for r in read_jsonl(tmp_path / "off/traces.jsonl")}
    assert srv == loc


@pytest.mark.slow
def test_unknown_served_model_and_server_down(server, tiny_model, tmp_path):
    with pytest.raises(CotdistillError, match=r"'other' is not served .* served: \['tiny'\]"):
        OpenAIServerTeacher(OpenAITeacher(base_url=server, model="other"))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(CotdistillError) as e:
        generate.run(cfg_for(tiny_model, tmp_path, {"backend": "openai", "base_url": dead, "model": "tiny"}))
    assert "is unreachable" in str(e.value) and "\n" not in str(e.value)


def test_retries_then_one_line_error_when_server_dies_mid_run(tmp_path):
    """A server that accepts /models and then fails every request: bounded retries, clear error."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls = {"post": 0}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = json.dumps({"data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            calls["post"] += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = GenerateConfig.model_validate({
            "source": {"kind": "hf", "path": str(ROOT / "data/arithmetic_test.jsonl"), "limit": 1},
            "teacher": {"backend": "openai", "base_url": f"http://127.0.0.1:{srv.server_port}/v1",
                        "model": "m", "max_retries": 2, "backoff_s": 0.01},
            "sampling": {"n": 1}, "output_dir": str(tmp_path), "progress": False})
        with pytest.raises(CotdistillError, match=r"failed after 3 attempts \(HTTP 503"):
            generate.run(cfg)
        assert calls["post"] == 3
    finally:
        srv.shutdown()


@pytest.mark.slow
def test_served_teacher_scores_and_grades_on_policy_rollouts(server, tiny_model, tiny_student, tmp_path):
    """The server's prompt logprobs equal a transformers forward pass of the teacher, and an on-policy run trains
    with the teacher behind the server only (nothing of it loaded in the trainer)."""
    import json

    import torch
    from test_train import cfg
    from transformers import AutoModelForCausalLM

    from cotdistill import train

    t = OpenAIServerTeacher(OpenAITeacher(base_url=server, model="tiny", tokenizer=str(tiny_model)))
    seq = list(range(20, 36))
    g = t.score([seq], [6], 4)[0]
    ref = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        lp = torch.log_softmax(ref(torch.tensor([seq])).logits[0], -1)
    want = lp[5:-1].gather(-1, torch.tensor(seq[6:]).unsqueeze(-1)).squeeze(-1)
    assert g["sampled_logprobs"] == pytest.approx(want.numpy(), rel=1e-3, abs=5e-3) and g["top_ids"].shape == (10, 4)
    teacher = {"backend": "openai", "base_url": server, "model": "tiny", "tokenizer": str(tiny_model), "api":
               "completions"}
    s = train.run(cfg(tiny_student, tmp_path, method="on_policy", teacher=teacher, max_steps=2,
                      on_policy={"max_new_tokens": 8}))
    rows = [json.loads(x) for x in (tmp_path / "out/rollouts.jsonl").read_text().splitlines()]
    assert s["steps"] == 2 and [r["teacher"] for r in rows] == ["tiny", "tiny"]
    no_tok = {k: v for k, v in teacher.items() if k not in ("tokenizer", "api")}
    with pytest.raises(ValueError, match="a served teacher must name its tokenizer"):
        cfg(tiny_student, tmp_path / "x", method="on_policy", teacher=no_tok, max_steps=1)


@pytest.mark.slow
def test_teacher_server_killed_mid_run_then_the_resumed_run_matches(server, tiny_model, tiny_student, tmp_path,
                                                                    monkeypatch, request):
    """SIGKILL of the real teacher server during step 3 of 4: retries, a one-line error, checkpoint-2 kept; a new
    server on the same address, the run resumed: rollouts prompt for prompt and final weights equal those of a
    run that never stopped."""
    import json

    import torch
    from safetensors.torch import load_file
    from test_train import cfg

    from cotdistill import train
    from cotdistill.teachers.openai_server import OpenAIServerTeacher as Served

    port = free_port()
    proc = start_server(tiny_model, port, tmp_path / "killed.log")
    request.addfinalizer(lambda: stop_server(proc))  # its EngineCore child outlives the SIGKILL of the server
    teacher = {"backend": "openai", "model": "tiny", "tokenizer": str(tiny_model), "max_retries": 2,
               "backoff_s": 0.2, "timeout_s": 30}
    kw = dict(method="on_policy", max_steps=4, save_steps=2, per_device_train_batch_size=2,
              on_policy={"max_new_tokens": 8})
    (tmp_path / "whole").mkdir()
    train.run(cfg(tiny_student, tmp_path / "whole", teacher={**teacher, "base_url": server}, **kw))
    calls = {"n": 0}
    real_score = Served.score

    def score(self, *a):
        calls["n"] += 1
        if calls["n"] == 3:  # step 3: the server is gone for good
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        return real_score(self, *a)

    monkeypatch.setattr(Served, "score", score)
    mine = {**teacher, "base_url": f"http://127.0.0.1:{port}/v1"}
    (tmp_path / "cut").mkdir()
    with pytest.raises(CotdistillError, match=r"failed after 3 attempts .*resumes from its last checkpoint"):
        train.run(cfg(tiny_student, tmp_path / "cut", teacher=mine, **kw))
    monkeypatch.setattr(Served, "score", real_score)
    again = start_server(tiny_model, port, tmp_path / "restarted.log")
    try:
        summary = train.run(cfg(tiny_student, tmp_path / "cut", teacher=mine, **kw))
    finally:
        stop_server(again)
    assert summary["resumed_from"].endswith("checkpoint-2")
    a, b = ([json.loads(x) for x in (tmp_path / d / "out/rollouts.jsonl").read_text().splitlines()]
            for d in ("whole", "cut"))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [(r["problem_ids"], r["completions"]) for r in a] == [(r["problem_ids"], r["completions"]) for r in b]
    wa, wb = (load_file(str(tmp_path / d / "out/final/model.safetensors")) for d in ("whole", "cut"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
