"""Stage 3: distill the student. ``run(TrainConfig)`` dispatches on ``method``:

    sft       sequence-level KD: TRL SFTTrainer on the filtered traces     (train/sft.py)
    gkd       TRL GKDTrainer: generalized JSD, on-policy share lmbda       (train/gkd.py)
    distill   TRL DistillationTrainer: fully on-policy                     (train/gkd.py)
    logit_kd  KD from the teacher's cached top-k logprobs, no teacher      (train/logit_kd.py)
    kd        live teacher(s): soft targets at T, features, attention,
              relations, cosine; ensembles, T schedule, importance weights  (train/kd.py)
"""

from __future__ import annotations

from cotdistill.config import TrainConfig


def run(cfg: TrainConfig) -> dict:
    if cfg.method == "sft":
        from cotdistill.train import sft as m
    elif cfg.method in ("gkd", "distill"):
        from cotdistill.train import gkd as m
    elif cfg.method == "kd":
        from cotdistill.train import kd as m
    else:
        from cotdistill.train import logit_kd as m
    return m.run(cfg)
