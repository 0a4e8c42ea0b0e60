"""Generation on a real local Ray cluster (`generate.distributed`): two vLLM replicas of the tiny
teacher give exactly the single-process run's traces; a replica killed with SIGKILL mid-run is
restarted by Ray and resumes its shard, 0 records lost, 0 duplicated; a cluster of two node processes
started with `ray start` is joined by address. Marked ray (and slow): subprocess CLI runs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, read_jsonl, teacher_dict

from cotdistill import generate
from cotdistill.config import GenerateConfig
from cotdistill.errors import CotdistillError

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ray = pytest.importorskip("ray")


def config(tiny_model, out, **distributed) -> dict:
    return {
        "source": {"kind": "hf", "path": str(ROOT / "data/digit_chain_train.jsonl"), "fields": {"id": "id"},
                   "limit": 60},
        "prompt": {"template": "arithmetic_cot"},
        # a small batch keeps each replica busy for seconds: long enough to be killed mid-run
        "teacher": teacher_dict(tiny_model, max_num_seqs=4),
        "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 40, "seed": 5, "logprobs": 2},
        "output_dir": str(out), "progress": False, "flush_every": 4,
        "distributed": {"replicas": 2, "cpus_per_replica": 1, **distributed},
    }


def cli(cfg: dict, path: Path, **extra_env) -> subprocess.Popen:
    path.write_text(yaml.safe_dump(cfg))
    env = {**{k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}, **extra_env}
    return subprocess.Popen([sys.executable, "-m", "cotdistill", "generate", str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 420) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{"):])


def by_key(path: Path) -> dict:
    rows = read_jsonl(path)
    keys = [(r["problem_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated records"
    return dict(zip(keys, rows))


@pytest.fixture(scope="module")
def reference(tiny_model, vllm_teacher, tmp_path_factory):
    """The same config generated in one process, without Ray."""
    out = tmp_path_factory.mktemp("single")
    cfg = config(tiny_model, out)
    cfg.pop("distributed")
    generate.run(GenerateConfig.model_validate(cfg), teacher=vllm_teacher)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_replica_0_mid_run(proc: subprocess.Popen, out: Path) -> tuple[dict, int]:
    """SIGKILL replica 0 once its shard holds some records; (its replica file before, records it had)."""
    shard0, info = out / "traces-00000-of-00002.jsonl", out / "replicas/shard-00000.json"
    deadline = time.time() + 300
    while not (shard0.exists() and shard0.read_text().count("\n") >= 8):  # mid-run: some records on disk
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "replica 0 wrote nothing"
        time.sleep(0.05)
    first = json.loads(info.read_text())
    os.kill(first["pid"], signal.SIGKILL)
    return first, shard0.read_text().count("\n")


def test_two_node_cluster_replica_killed_mid_run_is_restarted_and_nothing_is_lost_or_doubled(tiny_model, reference,
                                                                                            tmp_path):
    """`ray start --head` plus a second node process, each with one CPU, joined by address: one replica lands on
    each; replica 0 is SIGKILLed mid-run, Ray restarts it and it resumes its shard: the traces are the
    single-process run's, none lost or doubled. Re-running the finished run on a local cluster this command starts
    itself (no address) resumes nothing. One test: each cluster and its replicas' engines take tens of seconds."""
    bin_ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    # a throwaway cluster on 127.0.0.1: no token (Ray 2.5x+ asks one of every process joining a `ray start` cluster)
    env = {
        **{k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"},
        "RAY_AUTH_MODE": "disabled",
    }
    out = tmp_path / "gen"
    try:
        subprocess.run([bin_ray, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                       check=True, capture_output=True, env=env, timeout=120)
        subprocess.run([bin_ray, "start", "--address", f"127.0.0.1:{port}", *common], check=True,
                       capture_output=True, env=env, timeout=120)
        proc = cli(config(tiny_model, out, address=f"127.0.0.1:{port}"), tmp_path / "gen.yaml",
                   RAY_AUTH_MODE="disabled")
        first, killed_at = kill_replica_0_mid_run(proc, out)
        summary = finish(proc)
    finally:
        subprocess.run([bin_ray, "stop", "--force"], capture_output=True, env=env, timeout=120)

    assert summary["distributed"]["address"] == f"127.0.0.1:{port}"
    # both ran at once, each on a node with one CPU: on two nodes
    other = json.loads((out / "replicas/shard-00001.json").read_text())
    assert None not in (first["node"], other["node"]) and first["node"] != other["node"]
    assert killed_at < 120, "replica 0 had finished before the kill"  # its shard holds 30 problems x 4
    again = json.loads((out / "replicas/shard-00000.json").read_text())
    assert again["attempt"] == 2 and again["pid"] != first["pid"]
    assert summary["distributed"]["restarts"] == {"0": 1} and summary["distributed"]["shards"]["0"]["attempt"] == 2
    assert summary["traces"] == summary["traces_expected"] == 240 and summary["complete"]
    got, want = by_key(out / "traces.jsonl"), by_key(reference / "traces.jsonl")
    assert set(got) == set(want)
    assert {k: r["completion"] for k, r in got.items()} == {k: r["completion"] for k, r in want.items()}
    lp_got, lp_want = by_key(out / "logprobs.jsonl"), by_key(reference / "logprobs.jsonl")
    assert set(lp_got) == set(got) and all(lp_got[k]["token_ids"] == lp_want[k]["token_ids"] for k in lp_got)
    # re-running the finished run (a local cluster started by the command) resumes nothing and changes nothing
    again = finish(cli(config(tiny_model, out), tmp_path / "gen.yaml"))
    assert again["distributed"]["address"] == "local"
    assert [s["written_this_run"] for s in again["distributed"]["shards"].values()] == [0, 0]
    assert by_key(out / "traces.jsonl").keys() == got.keys()


def test_directory_of_another_run_is_refused(tiny_model, tmp_path):
    from cotdistill.distributed import run

    out = tmp_path / "gen"
    out.mkdir()
    (out / "config-00000-of-00003.yaml").write_text("x")
    with pytest.raises(CotdistillError, match=r"shards of a run with \[3\] replicas.*distributed.replicas=3"):
        run(GenerateConfig.model_validate(config(tiny_model, out)), generate.run)
    (out / "config-00000-of-00003.yaml").unlink()
    (out / "config.yaml").write_text("x")
    with pytest.raises(CotdistillError, match="single-process generation run; resume it without distributed"):
        run(GenerateConfig.model_validate(config(tiny_model, out)), generate.run)


def test_config_errors_are_one_line(tiny_model, tmp_path):
    cfg = config(tiny_model, tmp_path)
    with pytest.raises(ValueError, match="the Ray replicas are the shards"):
        GenerateConfig.model_validate({**cfg, "shard": {"index": 0, "count": 2}})
    with pytest.raises(ValueError, match="gpus_per_replica 1.0 is less than the 2 GPUs"):
        GenerateConfig.model_validate({**cfg, "teacher": teacher_dict(tiny_model, tensor_parallel_size=2),
                                       "distributed": {"gpus_per_replica": 1}})
