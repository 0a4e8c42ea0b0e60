"""Stage 3: distill the student. ``run(TrainConfig)`` dispatches on ``method``:

    sft       sequence-level KD: TRL SFTTrainer on the filtered traces     (train/sft.py)
    gkd       TRL GKDTrainer: generalized JSD, on-policy share lmbda       (train/gkd.py)
    distill   TRL DistillationTrainer: fully on-policy                     (train/gkd.py)
    logit_kd  KD from the teacher's cached top-k logprobs, no teacher      (train/logit_kd.py)
    kd        live teacher(s): soft targets at T, features, attention,
              relations, cosine; ensembles, T schedule, importance weights  (train/kd.py)
    on_policy student rollouts graded token by token by a teacher outside
              the trainer (in-process vLLM engine or a vLLM server)      (train/on_policy.py)
    mutual    deep mutual learning: peers trained together, each from
              the others' soft outputs, teacher optional                  (train/mutual.py)
"""

from __future__ import annotations

from cotdistill.config import TrainConfig, optional_dependency_problems
from cotdistill.errors import CotdistillError


def check_dependencies(cfg: TrainConfig, where: str = "train") -> None:
    """Refuse, before any work, a config that needs a package this environment lacks (tracking, flash-attn)."""
    missing = optional_dependency_problems(cfg.report_to, cfg.attn_implementation, bool(cfg.use_liger_kernel))
    if missing:
        raise CotdistillError(f"{where}: {missing[0]}")


def run(cfg: TrainConfig) -> dict:
    """Build the method's trainer (each method module's ``build``), train, save ``final/`` and the summary. The
    method modules import TRL and torch, so only the one asked for is imported."""
    check_dependencies(cfg)
    if cfg.method == "sft":
        from cotdistill.train import sft as m
    elif cfg.method in ("gkd", "distill"):
        from cotdistill.train import gkd as m
    elif cfg.method == "kd":
        from cotdistill.train import kd as m
    elif cfg.method == "on_policy":
        from cotdistill.train import on_policy as m
    elif cfg.method == "mutual":
        from cotdistill.train import mutual as m
    else:
        from cotdistill.train import logit_kd as m
    from cotdistill.train.common import fit

    return fit(m.build, cfg)
