"""Generation on a Ray cluster: ``generate.distributed`` in a config.

One Ray actor per replica; each builds its own vLLM engine (with the resources the block asks for)
and runs ``generate.run`` on one shard (``shard.index = i, shard.count = replicas``), so each replica
has the single-process run's exactly-once resume: append-only records, a torn last line repaired,
keys already on disk skipped. A replica that dies (node lost, OOM, SIGKILL) is restarted by Ray up to
``max_restarts`` times and its pending call retried: the new process resumes the shard from its
files. The stage ends with the checked merge (``cotdistill.shards.merge``: nothing missing, nothing
doubled). Every replica writes ``replicas/shard-IIIII.json`` (pid, host, attempt) next to its files.

The output directory must be one path every node can read and write (a shared filesystem mounted at
the same place): shards are files there. Relative paths in the config resolve against the driver's
working directory, which replicas switch to.

GPU cluster recipe::

    ray start --head --port=6379                       # on the head node
    ray start --address=HEAD_IP:6379                   # on every other node
    cotdistill generate cfg.yaml distributed.address=auto distributed.replicas=16 \\
        distributed.gpus_per_replica=1                 # from any node, cotdistill installed on all
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from cotdistill.artifacts import SHARD_CONFIG, output_paths, replica_file, shard_of
from cotdistill.config import GenerateConfig, ShardConfig
from cotdistill.errors import CotdistillError, first_line
from cotdistill.shards import merge
from cotdistill.sources import load_problems
from cotdistill.store import write_atomic

# a killed replica takes its engine with it (no orphaned engine-core process holding memory)
DEFAULT_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}


def shard_config(cfg: GenerateConfig, index: int) -> GenerateConfig:
    return cfg.model_copy(update={"distributed": None, "progress": False,
                                  "shard": ShardConfig(index=index, count=cfg.distributed.replicas)})


class Replica:
    """One vLLM replica owning one shard (a Ray actor; plain class so tests can call it in-process)."""

    def __init__(self, cfg_json: str, index: int, cwd: str, work: Callable[[GenerateConfig], dict]):
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.cfg = GenerateConfig.model_validate_json(cfg_json)
        self.index, self.work = index, work
        path = replica_file(Path(self.cfg.output_dir), index)
        attempt = json.loads(path.read_text()).get("attempt", 0) + 1 if path.exists() else 1

        try:
            import ray

            node = ray.get_runtime_context().get_node_id()
        except Exception:  # called outside Ray (tests, debugging)
            node = None
        write_atomic(path, json.dumps({"shard": index, "pid": os.getpid(), "host": socket.gethostname(), "node": node,
                                       "attempt": attempt, "started": time.time()}) + "\n")
        self.attempt = attempt

    def run(self) -> dict:
        summary = self.work(self.cfg)
        summary["attempt"] = self.attempt
        return summary


class _LineCounter:
    """Lines appended to the shards' trace files since the last call (reads only new bytes)."""

    def __init__(self, paths: list[Path]):
        self.paths, self.offsets = paths, [0] * len(paths)

    def new_lines(self) -> int:
        n = 0
        for i, p in enumerate(self.paths):
            try:
                size = p.stat().st_size
            except OSError:
                continue
            if size < self.offsets[i]:  # a torn tail was repaired on resume: count from the start again
                self.offsets[i] = 0
            if size > self.offsets[i]:
                with open(p, "rb") as f:
                    f.seek(self.offsets[i])
                    chunk = f.read(size - self.offsets[i])
                last = chunk.rfind(b"\n") + 1
                n += chunk[:last].count(b"\n")
                self.offsets[i] += last
        return n


def _check_directory(cfg: GenerateConfig, out: Path) -> None:
    if (out / "config.yaml").exists() and not list(out.glob("config-*-of-*.yaml")):
        raise CotdistillError(f"{out}: holds a single-process generation run; resume it without distributed, or use "
                              f"a new output_dir")
    names = [p.name for p in out.glob("config-*-of-*.yaml")]
    counts = {int(m.group(2)) for m in map(SHARD_CONFIG.search, names) if m}
    if counts and counts != {cfg.distributed.replicas}:
        raise CotdistillError(
            f"{out}: holds shards of a run with {sorted(counts)} replicas, this one has "
            f"{cfg.distributed.replicas}; set distributed.replicas={min(counts)} to resume it, or use "
            f"a new output_dir"
        )


def _init_ray(d) -> bool:
    """Connect to (or start) the cluster; True when this call started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    env = {**DEFAULT_ENV, **d.env}
    try:
        if d.address is None:
            ray.init(num_cpus=d.local_cpus or max(1, int(round(d.replicas * max(d.cpus_per_replica, 1)))),
                     num_gpus=None, include_dashboard=False, _node_ip_address="127.0.0.1",
                     runtime_env={"env_vars": env}, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=d.address, runtime_env={"env_vars": env}, log_to_driver=False, configure_logging=False)
    except Exception as e:  # ConnectionError, RuntimeError: no cluster at that address
        where = "a local Ray cluster" if d.address is None else f"the Ray cluster at '{d.address}'"
        raise CotdistillError(
            f"distributed: cannot start or reach {where}: {first_line(e)}; start one with `ray start "
            f"--head` and set distributed.address=auto"
        ) from None
    return True


def _plan_shards(cfg: GenerateConfig, out: Path) -> tuple[list[Path], int]:
    """(each replica's traces file, traces expected); a source with fewer problem shards than replicas is refused
    before any cluster starts, as is a bad source."""
    d = cfg.distributed
    problems = load_problems(cfg.source)
    expected = len(problems) * cfg.sampling.n * (1 + len(cfg.extra_teachers))
    sizes = [sum(1 for p in problems if shard_of(p.id, d.replicas) == i) for i in range(d.replicas)]
    if any(s == 0 for s in sizes):
        raise CotdistillError(f"distributed.replicas {d.replicas} is more than the shards with problems "
                              f"({sum(1 for s in sizes if s)} of {len(problems)} problems); lower it")
    return [output_paths(out, ShardConfig(index=i, count=d.replicas))["traces"] for i in range(d.replicas)], expected


def _wait_for(ray, pending: dict, counter: _LineCounter, bar, cfg: GenerateConfig) -> dict[int, dict]:
    """Each replica's summary as it finishes; the bar follows the lines appended to the shards' files."""
    out, summaries = Path(cfg.output_dir), {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
        bar.update(counter.new_lines())
        for ref in ready:
            i = pending.pop(ref)
            try:
                summaries[i] = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise CotdistillError(
                    f"distributed: replica {i} failed after {cfg.distributed.max_restarts} restarts: {first_line(e)}; "
                    f"its records are kept: re-run the same command to resume (see {replica_file(out, i)})"
                ) from None
    bar.update(counter.new_lines())
    return summaries


def run(cfg: GenerateConfig, work: Callable[[GenerateConfig], dict]) -> dict:
    """Generate every shard on the cluster, then merge; re-running resumes every shard. ``work`` generates one
    shard in its replica (``generate.run``, passed in so that this module does not import the stage)."""
    try:
        import ray
    except ImportError:
        raise CotdistillError("distributed: Ray is not installed; pip install 'ray>=2.40' (or drop the distributed "
                              "block)") from None
    d, out = cfg.distributed, Path(cfg.output_dir)
    _check_directory(cfg, out)
    paths, expected = _plan_shards(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    started = _init_ray(d)
    t0 = time.perf_counter()
    try:
        actor = ray.remote(num_cpus=d.cpus_per_replica, num_gpus=d.gpus_per_replica, max_restarts=d.max_restarts,
                           max_task_retries=d.max_restarts)(Replica)
        cwd = os.getcwd()
        replicas = [actor.remote(shard_config(cfg, i).model_dump_json(), i, cwd, work) for i in range(d.replicas)]
        bar = tqdm(total=None if cfg.sampling.until_verified else expected, desc=f"generate ({d.replicas} replicas)",
                   unit="trace", disable=not cfg.progress, dynamic_ncols=True)
        try:
            summaries = _wait_for(ray, {r.run.remote(): i for i, r in enumerate(replicas)}, _LineCounter(paths),
                                  bar, cfg)
        finally:
            bar.close()
            for r in replicas:
                ray.kill(r)
    finally:
        if started:
            ray.shutdown()
    return _merged(cfg, summaries, time.perf_counter() - t0)


def _merged(cfg: GenerateConfig, summaries: dict[int, dict], wall_s: float) -> dict:
    """Every shard finished: merge them, and add what the cluster did (restarts, throughput, per shard)."""
    d, out = cfg.distributed, Path(cfg.output_dir)
    incomplete = [i for i, s in sorted(summaries.items()) if not s.get("complete")]
    if incomplete:
        raise CotdistillError(
            f"distributed: shards {incomplete} did not finish; re-run the same command to resume them"
        )
    summary = merge(out)
    tokens = sum(s.get("this_run_completion_tokens", 0) for s in summaries.values())
    summary["distributed"] = {
        "replicas": d.replicas, "address": d.address or "local", "wall_s": round(wall_s, 3),
        "restarts": {i: s["attempt"] - 1 for i, s in sorted(summaries.items()) if s["attempt"] > 1},
        "completion_tokens_per_s": round(tokens / max(1e-9, wall_s), 1),
        "shards": {i: {"traces": s["traces"], "written_this_run": s["written_this_run"], "attempt": s["attempt"]}
                   for i, s in sorted(summaries.items())},
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
