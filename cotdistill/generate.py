"""Stage 1: the teacher answers problems, n samples each, written as append-only trace records.

    cotdistill generate data/configs/generate_arithmetic.yaml sampling.n=8
    python -c "from cotdistill.generate import run; ..."   # run(GenerateConfig) -> summary

Output directory (shard files carry a ``-IIIII-of-NNNNN`` suffix when ``shard.count > 1``):
    config.yaml     the resolved config          problems.jsonl  every problem of the source
    traces.jsonl    one Trace per line           logprobs.jsonl  TokenLogprobs (when asked)
    summary.json    counts, tokens, tokens/s, finish reasons
Re-running the same command resumes: keys (problem id, sample index) already on disk are skipped.
The engine (render, sample, append, resume) is cotdistill/sampling.py, shared with the eval stage; replicas on
a Ray cluster are cotdistill/distributed.py, and their merge cotdistill/shards.py.
"""

from __future__ import annotations

from cotdistill import distributed
from cotdistill.config import GenerateConfig
from cotdistill.sampling import LazyTeacher, generate_shard
from cotdistill.teachers import Teacher


def run(cfg: GenerateConfig, teacher: Teacher | LazyTeacher | None = None) -> dict:
    """Generate the missing traces of this shard. ``teacher``: reuse an already built backend
    (e.g. one vLLM engine across several runs), or a LazyTeacher that builds one only if traces are missing;
    by default one is built from ``cfg.teacher``.
    With ``cfg.distributed``: every shard on a Ray cluster, then the merge."""
    if cfg.distributed is not None:
        return distributed.run(cfg, run)
    return generate_shard(cfg, teacher)
