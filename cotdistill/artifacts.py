"""Where each stage's files live and how a later stage reads them (a leaf module: it imports no stage).

generate's output folder, per shard (``shard.count`` > 1 adds ``-IIIII-of-NNNNN``): config.yaml, traces.jsonl,
logprobs.jsonl, summary.json, and the shared problems.jsonl; Ray replicas report in replicas/shard-IIIII.json.
filter's output folder holds Hugging Face datasets (sft/, prompts/) that training loads.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

from cotdistill.config import ShardConfig
from cotdistill.errors import CotdistillError
from cotdistill.store import iter_jsonl

SHARD_CONFIG = re.compile(r"config-(\d{5})-of-(\d{5})\.yaml$")  # a shard's resolved config in generate's folder


def shard_of(problem_id: str, count: int) -> int:
    """The shard a problem belongs to: a hash of its id, so it never moves when others are added."""
    return int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "little") % count


def shard_suffix(shard: ShardConfig) -> str:
    return "" if shard.count == 1 else f"-{shard.index:05d}-of-{shard.count:05d}"


def output_paths(out: Path, shard: ShardConfig) -> dict[str, Path]:
    sfx = shard_suffix(shard)
    return {"config": out / f"config{sfx}.yaml", "traces": out / f"traces{sfx}.jsonl",
            "logprobs": out / f"logprobs{sfx}.jsonl", "summary": out / f"summary{sfx}.json",
            "problems": out / "problems.jsonl", "skipped": out / f"skipped{sfx}.jsonl"}


def trace_summary(traces_path: Path, problems: int, expected: int) -> dict:
    """Counts over a traces file: traces, tokens, finish reasons (generate's summary.json)."""
    reasons, prompt_toks, compl_toks, n = Counter(), 0, 0, 0
    if traces_path.exists():
        for _, obj in iter_jsonl(traces_path):
            n += 1
            reasons[obj["finish_reason"]] += 1
            prompt_toks += obj["prompt_tokens"]
            compl_toks += obj["completion_tokens"]
    return {"problems": problems, "traces_expected": expected, "traces": n,
            "prompt_tokens": prompt_toks, "completion_tokens": compl_toks,
            "finish_reasons": dict(reasons)}



def replica_file(out: Path, index: int) -> Path:
    return out / "replicas" / f"shard-{index:05d}.json"


IN_MEMORY_MAX_BYTES = 1 << 30  # a split up to this size is read into memory; a larger one is linked (or copied)


def load_filter_split(folder: str | Path, name: str, field: str, workdir: str | Path | None = None):
    """A split (sft/, prompts/) of a `cotdistill filter` output; a missing or empty one is a one-line error.

    The folder is another stage's output, maybe read-only or read by other runs at once, so nothing may be written
    into it, and a memory-mapped dataset's ``map`` (the trainers' tokenising) writes its cache-*.arrow files next to
    the data. A split of up to IN_MEMORY_MAX_BYTES is therefore read into memory (RAM about its Arrow files' size);
    a larger one, given a ``workdir`` (a trainer's own output folder), is hard-linked (copied across file systems)
    into ``workdir/.dataset/NAME.rankR`` and memory-mapped from there, so its caches land in the trainer's folder
    (the filter swaps in a new folder rather than rewriting files, so a link never changes under a trainer); without
    a ``workdir`` (a reader that never maps) it is memory-mapped in place."""
    import datasets

    path = Path(folder) / name
    if not path.exists():
        raise CotdistillError(f"{field}: {path} not found; point {field} at a `cotdistill filter` output")
    size = sum(f.stat().st_size for f in path.glob("*.arrow"))
    if size > IN_MEMORY_MAX_BYTES and workdir is None:  # a reader that never maps (logits): memory-mapped in place
        ds = datasets.load_from_disk(str(path))
    elif size > IN_MEMORY_MAX_BYTES:
        rank = os.environ.get("RANK", "0")  # one copy per process: ranks of a distributed run never share one
        ds = datasets.load_from_disk(str(_linked_copy(path, Path(workdir) / ".dataset" / f"{name}.rank{rank}")))
    else:
        ds = datasets.load_from_disk(str(path), keep_in_memory=True)
    if len(ds) == 0:
        raise CotdistillError(f"{path}: the dataset is empty (the filter kept nothing); check its README.md funnel")
    return ds


def _linked_copy(src: Path, dst: Path) -> Path:
    """``src``'s data files (not its cache-*.arrow) in ``dst``: hard links where the file system allows, else copies;
    rebuilt each time (a re-filtered split is never read stale)."""
    import shutil

    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("cache-"):
            try:
                os.link(f, dst / f.name)
            except OSError:  # another file system, or links refused (protected_hardlinks on a file not ours)
                shutil.copy2(f, dst / f.name)
    return dst
