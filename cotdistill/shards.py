"""Merge the shard files of a generation run and check that nothing is missing or doubled.

    # N workers (processes, nodes, a Ray job), each:  cotdistill generate cfg.yaml shard.index=$I shard.count=$N
    cotdistill merge OUTPUT_DIR

Completeness is checked against ``problems.jsonl`` x ``sampling.n`` (x teachers) from the resolved
configs (adaptive sampling: every shard's summary says its rounds finished);
the merged ``traces.jsonl``/``logprobs.jsonl`` are written atomically, in problem order.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.artifacts import SHARD_CONFIG, output_paths, shard_of, trace_summary
from cotdistill.config import GenerateConfig, ShardConfig
from cotdistill.errors import CotdistillError
from cotdistill.loading import load_config
from cotdistill.sources import load_problem_file
from cotdistill.store import iter_jsonl, write_atomic


def _collect(path: Path, idx: int, count: int, order: dict, n: int, into: dict, dupes: list, strays: list):
    """Records of one shard file into ``into`` by (problem order, sample); strays (outside the shard,
    the problem set or the sample count) and duplicates are listed. Yields each record kept."""
    for lineno, obj in iter_jsonl(path):
        pid, si = obj["problem_id"], obj["sample_index"]
        if pid not in order or shard_of(pid, count) != idx or si >= n:
            strays.append(f"{path.name}:{lineno}")
            continue
        key = (order[pid], si)
        if key in into:
            dupes.append(f"{pid}#{si}")
        into[key] = json.dumps(obj, ensure_ascii=False)
        yield obj


def _finished(out: Path, idx: int, count: int) -> bool:
    path = output_paths(out, ShardConfig(index=idx, count=count))["summary"]
    return path.exists() and bool(json.loads(path.read_text()).get("complete"))


def _shard_configs(out: Path) -> tuple[int, dict[int, GenerateConfig]]:
    """(shard count, config by shard index): every shard ran, all with one count and one config."""
    found = sorted(p for p in out.glob("config-*-of-*.yaml") if SHARD_CONFIG.search(p.name))
    if not found:
        raise CotdistillError(f"{out}: no shard configs (config-IIIII-of-NNNNN.yaml); nothing to merge")
    counts = {int(SHARD_CONFIG.search(p.name).group(2)) for p in found}
    if len(counts) != 1:
        raise CotdistillError(
            f"{out}: shard files from runs with different shard counts {sorted(counts)}; clean the directory"
        )
    count = counts.pop()
    cfgs = {int(SHARD_CONFIG.search(p.name).group(1)): load_config(GenerateConfig, p) for p in found}
    missing_shards = sorted(set(range(count)) - set(cfgs))
    if missing_shards:
        raise CotdistillError(
            f"{out}: shards {missing_shards} of {count} never ran; run them with shard.index=I shard.count={count}"
        )

    def same(c):
        return c.model_dump(mode="json", exclude={"shard", "output_dir", "progress", "flush_every"})

    ref = same(cfgs[0])
    for idx, c in sorted(cfgs.items()):
        diff = [k for k, v in same(c).items() if v != ref.get(k)]
        if diff:
            raise CotdistillError(f"{out}: shard {idx} was run with another config than shard 0 (differs in: "
                                  f"{', '.join(diff)}); they are not one run: re-run it with the same settings")
    return count, cfgs


def _read_shards(out: Path, count: int, cfgs: dict, order: dict, n: int) -> tuple[dict, dict]:
    """Every shard's traces and logprob records by (problem order, sample index); overlaps and strays, or two
    template versions, are errors."""
    by_key: dict[tuple[int, int], str] = {}
    lp_by_key: dict[tuple[int, int], str] = {}
    dupes, strays, lp_dupes, hashes = [], [], [], set()
    for idx in range(count):
        paths = output_paths(out, ShardConfig(index=idx, count=count))
        if not paths["traces"].exists():
            raise CotdistillError(f"{paths['traces']}: missing; re-run shard {idx}")
        for obj in _collect(paths["traces"], idx, count, order, n, by_key, dupes, strays):
            hashes.add(obj.get("template", {}).get("hash"))
        if cfgs[idx].sampling.logprobs and paths["logprobs"].exists():
            for _ in _collect(paths["logprobs"], idx, count, order, n, lp_by_key, lp_dupes, strays):
                pass
    if len(hashes - {None}) > 1:
        raise CotdistillError(f"{out}: the shards' traces were rendered with different template versions "
                              f"({sorted(hashes - {None})}); re-run the shards with one template")
    dupes += lp_dupes
    if strays or dupes:
        what = (f"{len(dupes)} duplicated keys (e.g. {dupes[:3]})" if dupes else "") + \
               (f" {len(strays)} records outside their shard or problem set (e.g. {strays[:3]})" if strays else "")
        raise CotdistillError(f"{out}: shards overlap: {what.strip()}; shards were run with different settings")
    return by_key, lp_by_key


def _skipped(out: Path) -> set[str]:
    """Problem ids the shards skipped as longer than the teacher's context, from every skipped*.jsonl."""
    return {obj["problem_id"] for f in sorted(out.glob("skipped*.jsonl")) for _, obj in iter_jsonl(f)}


def _check_complete(out: Path, cfg: GenerateConfig, count: int, problems: list, n: int, by_key: dict,
                    lp_by_key: dict) -> set:
    """The keys the run should have (every problem x sample, or what adaptive rounds chose), all present and,
    with logprobs, each paired with its record. Returns the expected keys."""
    skipped = _skipped(out)  # problems longer than the teacher's context: no traces by design (skipped*.jsonl)
    expected = {(i, s) for i in range(len(problems)) for s in range(n) if problems[i].id not in skipped}
    if cfg.sampling.until_verified:  # adaptive: how many samples a problem needs is known to its shard only
        unfinished = [idx for idx in range(count) if not _finished(out, idx, count)]
        if unfinished:
            raise CotdistillError(f"{out}: shards {unfinished} did not finish their adaptive sampling rounds; re-run "
                                  f"them to resume")
        expected = set(by_key)
    missing = sorted(expected - set(by_key))
    if missing:
        ex = [f"{problems[i].id}#{s}" for i, s in missing[:3]]
        raise CotdistillError(
            f"{out}: {len(missing)} of {len(expected)} traces missing (e.g. {ex}); re-run the shards to resume them"
        )
    if cfg.sampling.logprobs and set(lp_by_key) != set(by_key):
        gap = sorted(set(by_key) ^ set(lp_by_key))
        raise CotdistillError(f"{out}: {len(gap)} traces and logprob records do not pair up (e.g. "
                              f"{[f'{problems[i].id}#{s}' for i, s in gap[:3]]}); re-run those shards to resume them")
    return expected


def merge(output_dir: str | Path) -> dict:
    out = Path(output_dir)
    count, cfgs = _shard_configs(out)
    n = cfgs[0].sampling.n * (1 + len(cfgs[0].extra_teachers))  # sample indices per problem (extra teachers: k*n..)
    problems = load_problem_file(out / "problems.jsonl")
    order = {p.id: i for i, p in enumerate(problems)}
    by_key, lp_by_key = _read_shards(out, count, cfgs, order, n)
    expected = _check_complete(out, cfgs[0], count, problems, n, by_key, lp_by_key)
    write_atomic(out / "traces.jsonl", "".join(by_key[k] + "\n" for k in sorted(by_key)))
    if lp_by_key:
        write_atomic(out / "logprobs.jsonl", "".join(lp_by_key[k] + "\n" for k in sorted(lp_by_key)))
    summary = trace_summary(out / "traces.jsonl", len(problems), len(expected))
    parts = sorted(out.glob("skipped-*.jsonl"))
    if parts:  # the shards' skipped problems in one file, as an unsharded run writes it
        write_atomic(out / "skipped.jsonl", "".join(f.read_text() for f in parts))
    summary.update({"merged_shards": count, "complete": True, "skipped_too_long": len(_skipped(out))})
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
