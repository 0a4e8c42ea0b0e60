"""Model-location checks: hub ids pass through to the loaders, missing local paths fail early."""

import pytest
from conftest import own_address

from cotdistill.chat import check_model_location
from cotdistill.errors import CotdistillError
from cotdistill.teachers.base import derive_seed


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-0.5B-Instruct", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "gpt2",
                                  "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_hub_ids_are_not_taken_for_paths(name, hub_answers):
    check_model_location(name, "teacher.model")  # no error: the loader will resolve it


@pytest.fixture
def hub_answers(monkeypatch):
    """Online, and the hub's host taken as reachable (this machine has no route to it)."""
    from huggingface_hub import constants

    from cotdistill import chat

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setitem(chat._HUB_REACH, constants.ENDPOINT, None)


def test_a_hub_id_that_cannot_be_fetched_is_one_line_at_once(monkeypatch, tmp_path):
    """Not cached, and offline or the hub unreachable: one line naming the id, the cache and the cause, in well
    under the loaders' minute of retries; a cached id passes either way."""
    import time

    from cotdistill import chat

    monkeypatch.setattr(chat, "_HUB_REACH", {})
    monkeypatch.chdir(tmp_path)  # no runs/ here: 'runs/x' has the shape of a hub id
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CotdistillError, match=r"^teacher.model: 'runs/x' is not a folder here .* nor in the hub "
                                              r"cache .*HF_HUB_OFFLINE is set; give a local model folder"):
        check_model_location("runs/x", "teacher.model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens, refused at once
    t0 = time.perf_counter()
    with pytest.raises(CotdistillError, match=r"^student: 'runs/x' is not a folder here .*the hub cannot be reached "
                                              r"\(127.0.0.1: .*\); give a local model folder"):
        check_model_location("runs/x", "student", model=True)
    assert time.perf_counter() - t0 < 10
    assert "http://127.0.0.1:9" not in chat._HUB_REACH  # a failure is not remembered: the next stage asks again
    (tmp_path / "cache" / "models--runs--x").mkdir(parents=True)
    check_model_location("runs/x", "teacher.model")  # cached: the loaders resolve it offline


@pytest.mark.parametrize("name", ["/no/such/model", "./missing", "../missing", "runs/a/missing", "~/nope"])
def test_missing_local_paths_fail_in_one_line(name):
    with pytest.raises(CotdistillError, match=f"teacher.model: model path '{name}' does not exist"):
        check_model_location(name, "teacher.model")


def test_existing_directory_is_accepted(tmp_path):
    check_model_location(str(tmp_path), "teacher.model")


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "p1", 0) == derive_seed(0, "p1", 0)
    assert len({derive_seed(0, "p1", i) for i in range(100)}) == 100
    assert derive_seed(1, "p1", 0) != derive_seed(0, "p1", 0)


def test_a_truncated_safetensors_file_is_named_before_any_engine_starts(tiny_model, tmp_path):
    """An interrupted download leaves model.safetensors shorter than its header says: one line naming the file,
    from its header alone, instead of vLLM's "engine failed to start" a minute later."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    check_model_location(str(model), "teacher.model")  # whole: accepted
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    cut = r"the tensors end at byte .* but the file has .* bytes \(truncated\); download or copy the model again"
    with pytest.raises(CotdistillError, match=r"teacher.model: .*model.safetensors: " + cut):
        check_model_location(str(model), "teacher.model")
    weights.write_bytes(data[:100])
    with pytest.raises(CotdistillError, match=r"model.safetensors: the header says .* \(truncated\)"):
        check_model_location(str(model), "student")


def test_engine_reuse_key_separates_what_one_engine_cannot_serve(tmp_path):
    """Eval shares an engine between models whose reuse_key is equal: the same architecture, tokenizer, generation
    config and engine settings; weights, names and seeds may differ. Anything else gets an engine of its own."""
    import json
    import shutil

    from cotdistill.config import VLLMTeacher
    from cotdistill.teachers.vllm_offline import reuse_key
    from cotdistill.teachers.weights import tie_source
    from cotdistill.tiny import build_tiny_model

    def model(name, **kw):
        return build_tiny_model(tmp_path / name, hidden=64, heads=2, layers=1, intermediate=64, **kw)

    key = lambda p, **kw: reuse_key(VLLMTeacher(model=str(p), **kw))  # noqa: E731
    a, b, wide = model("a", seed=1), model("b", seed=2), build_tiny_model(tmp_path / "wide", hidden=64, heads=2,
                                                                         layers=1, intermediate=128)
    assert key(a) is not None and key(a) == key(b) and key(a) != key(wide)
    assert key(a) != key(a, max_model_len=256) and key(a, max_model_len=256) == key(b, max_model_len=256)
    assert tie_source(a, json.loads((a / "config.json").read_text())) == "model.embed_tokens.weight"  # tied head

    shutil.copytree(b, tmp_path / "stops")
    gen = json.loads((tmp_path / "stops/generation_config.json").read_text())
    (tmp_path / "stops/generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [1, 2]}))
    assert key(tmp_path / "stops") != key(a)  # another stop token: another engine

    shutil.copytree(b, tmp_path / "quant")
    cfg = json.loads((tmp_path / "quant/config.json").read_text())
    (tmp_path / "quant/config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "x"}}))
    assert key(tmp_path / "quant") is None
    shutil.copytree(b, tmp_path / "bin")
    (tmp_path / "bin/model.safetensors").unlink()
    assert key(tmp_path / "bin") is None  # no safetensors: nothing to reload in place
    assert reuse_key(VLLMTeacher(model="Qwen/Qwen2.5-0.5B")) is None  # a hub id: its own engine
    shutil.copytree(b, tmp_path / "broken")
    (tmp_path / "broken/config.json").write_text("{not json")
    assert key(tmp_path / "broken") is None  # no traceback here: its own engine start reports the file


ENGINE_HERE = """
import json, os, sys, torch
from cotdistill.config import VLLMTeacher
from cotdistill.lifecycle import descendants
from cotdistill.teachers.vllm_offline import VLLMOfflineTeacher
from vllm import envs
t = VLLMOfflineTeacher(VLLMTeacher(model=sys.argv[1], max_model_len=128, kv_cache_memory_bytes=1 << 26,
                                   enforce_eager=True))
children = [open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace") for p in descendants(os.getpid())]
torch.set_num_threads(1)
out = {"engine_children": [c for c in children if "VLLM" in c or "EngineCore" in c],
       "threads": torch.get_num_threads(), "env_left": "VLLM_ENABLE_V1_MULTIPROCESSING" in os.environ,
       "cached": envs._is_envs_cache_enabled()}
t.close()
print("RESULT", json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("preset", [None, "0"])
def test_cpu_engines_start_in_this_process_and_leave_nothing_changed(tiny_model, preset):
    """On CPU the offline engine runs in the calling process (twice the demo's generation throughput on 2 cores),
    and leaves the process as it found it: no variable telling later engines (the on_policy rollout engine, a
    served teacher's server) to do the same, no cached vLLM environment, a working torch.set_num_threads (vLLM's CPU
    worker replaces it with a no-op; on_policy halves the trainer's threads beside a served teacher)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    if preset is not None:  # the user's own choice (the tests', bench_generate's) stays, and torch's threads work
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = preset
    p = subprocess.run([sys.executable, "-c", ENGINE_HERE, str(tiny_model)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert out == {"engine_children": [], "threads": 1, "env_left": preset is not None, "cached": False}


@pytest.mark.parametrize("arch,fast_bf16,cuda,asked,expected", [
    ("x86_64", False, False, "auto", "float32"),      # AVX2-only CPU: bf16 matmuls take torch's generic loop
    ("x86_64", True, False, "auto", "auto"),          # AMX / AVX512-BF16: vLLM's bf16
    ("x86_64", False, True, "auto", "auto"),          # a GPU serves whatever the CPU is
    ("aarch64", False, False, "auto", "auto"),        # other CPUs: vLLM's choice
    ("x86_64", False, False, "bfloat16", "bfloat16"),  # an explicit dtype is kept
    ("x86_64", True, False, "float16", "float16"),
])
def test_auto_engine_dtype_is_float32_on_x86_cpus_without_fast_bf16(monkeypatch, arch, fast_bf16, cuda, asked,
                                                                     expected):
    import platform

    from cotdistill import env
    from cotdistill.config import VLLMTeacher
    from cotdistill.teachers.served import server_command
    from cotdistill.teachers.vllm_offline import engine_kwargs

    monkeypatch.setattr(platform, "machine", lambda: arch)
    monkeypatch.setattr(env, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.setattr(env, "cuda_available", lambda: cuda)
    assert env.engine_dtype(asked) == expected
    cfg = VLLMTeacher(model="Qwen/Qwen2.5-0.5B-Instruct", dtype=asked)
    assert engine_kwargs(cfg)["dtype"] == expected  # the offline engine, eval's and payoff's
    cmd = server_command(cfg, 8000)
    assert cmd[cmd.index("--dtype") + 1] == expected  # servers we start (served teacher, on_policy)


def test_fast_bf16_detection_reads_this_cpus_flags():
    from cotdistill.env import cpu_has_fast_bf16, machine

    m = machine()
    assert cpu_has_fast_bf16() == (m["amx"] or m["avx512_bf16"])


def test_is_this_machine_knows_the_loopback_its_own_addresses_and_names():
    """A teacher server's base_url reaches this machine through the loopback, its host name or one of its
    interface addresses; documentation-range addresses and names that do not resolve are elsewhere."""
    import socket

    from cotdistill.env import is_this_machine

    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0", socket.gethostname()):
        assert is_this_machine(host), host
    own = own_address()
    if own is not None:
        assert is_this_machine(own)
    for host in ("198.51.100.7", "203.0.113.9", "no-such-host.invalid", ""):
        assert not is_this_machine(host), host


def test_a_folder_that_is_not_a_model_is_named_before_any_engine_starts(tiny_model, tmp_path):
    """An empty folder, a folder without config.json, config.json without weights, and a file given as the model:
    one line each naming what is missing (they reached vLLM and failed there after ~20 s). A tokenizer-only folder
    still passes where only a tokenizer is asked for."""
    import shutil

    (tmp_path / "empty").mkdir()
    with pytest.raises(CotdistillError, match=r"teacher.model: '.*empty' is an empty folder, not a model; give the"):
        check_model_location(str(tmp_path / "empty"), "teacher.model", model=True)
    tok = tmp_path / "tok"
    shutil.copytree(tiny_model, tok)
    (tok / "config.json").unlink()
    (tok / "model.safetensors").unlink()
    check_model_location(str(tok), "teacher.tokenizer")  # a tokenizer folder is enough for a tokenizer
    with pytest.raises(CotdistillError, match=r"student: '.*tok' is a folder without config.json, not a model"):
        check_model_location(str(tok), "student", model=True)
    shutil.copy(tiny_model / "config.json", tok / "config.json")
    with pytest.raises(CotdistillError, match=r"'.*tok' has config.json but no weights \(\*.safetensors or \*.bin\)"):
        check_model_location(str(tok), "student", model=True)
    with pytest.raises(CotdistillError, match=r"'.*config.json' is a file, not a model folder"):
        check_model_location(str(tok / "config.json"), "teacher.model", model=True)
    check_model_location(str(tiny_model), "teacher.model", model=True)  # a whole model passes


def test_dir_slash_name_under_an_existing_folder_is_a_path(tmp_path, monkeypatch, hub_answers):
    """'runs/tiny-teacher' from a folder that has runs/ is a local path that does not exist, at once; 'org/name'
    with no folder 'org' here is still a hub id."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(CotdistillError, match="teacher.model: model path 'runs/tiny-teacher' does not exist"):
        check_model_location("runs/tiny-teacher", "teacher.model")
    check_model_location("Qwen/Qwen2.5-0.5B-Instruct", "teacher.model")


def test_a_model_folder_without_a_tokenizer_is_one_whole_line(tiny_model, tmp_path):
    """transformers' own error was cut off mid-sentence by the one-line rule ("... from one of:")."""
    import shutil

    from cotdistill.chat import load_tokenizer

    student = tmp_path / "student"
    student.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / f, student / f)
    with pytest.raises(CotdistillError, match=r"^student: '.*student' has no tokenizer \(none of tokenizer.json, "
                                              r".*\); save the tokenizer of the model it came from into it"):
        load_tokenizer(str(student), "student")
