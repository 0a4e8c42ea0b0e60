"""Where each stage's files live and how a later stage reads them (a leaf module: it imports no stage).

generate's output folder, per shard (``shard.count`` > 1 adds ``-IIIII-of-NNNNN``): config.yaml, traces.jsonl,
logprobs.jsonl, summary.json, and the shared problems.jsonl; Ray replicas report in replicas/shard-IIIII.json.
filter's output folder holds Hugging Face datasets (sft/, prompts/) that training loads.
"""

from __future__ import annotations

import hashlib
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


def load_filter_split(folder: str | Path, name: str, field: str):
    """A split (sft/, prompts/) of a `cotdistill filter` output; a missing or empty one is a one-line error."""
    import datasets

    path = Path(folder) / name
    if not path.exists():
        raise CotdistillError(f"{field}: {path} not found; point {field} at a `cotdistill filter` output")
    # in memory: the trainers' tokenising maps would otherwise write cache-*.arrow files into this folder, another
    # stage's output that may be read-only or read by other runs at the same time
    ds = datasets.load_from_disk(str(path), keep_in_memory=True)
    if len(ds) == 0:
        raise CotdistillError(f"{path}: the dataset is empty (the filter kept nothing); check its README.md funnel")
    return ds
