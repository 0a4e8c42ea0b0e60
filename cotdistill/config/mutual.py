"""mutual's option block (deep mutual learning, train/mutual.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from cotdistill.config.common import StrictModel


class MutualOptions(StrictModel):
    """Deep mutual learning (Zhang et al. 2018): ``peers`` students train together; each learns from the labels
    and from the others' soft outputs, (1 - alpha) CE_k + alpha T^2 mean_{l != k} KL(p_l,T || p_k,T), with the
    peers' outputs as fixed targets in each step; with ``teacher``, a fixed teacher's KL(q_T || p_k,T) is added
    at teacher_weight. final/ holds the first student; the others are saved to peers/peer<k>/."""

    peers: int = Field(default=2, ge=2, le=8, description="students trained together (this one included)")
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the mutual term; 1 - alpha on CE")
    temperature: float = Field(default=1.0, gt=0)
    reinit_peers: bool = Field(
        default=True, description="the other peers start from fresh weights (seed + k) of the student's "
        "architecture, as in the paper; false: from the student's own weights (a pretrained student)")
    peer_models: list[str] = Field(
        default_factory=list, description="the other peers' starting checkpoints, one per peer (peers - 1 of them), "
        "instead of reinit_peers; a run fills it from a student's peers_from")
    teacher_weight: float = Field(default=0.0, ge=0, description="with teacher: weight of its soft-target term")

    @model_validator(mode="after")
    def _one_model_per_peer(self):
        if self.peer_models and len(self.peer_models) != self.peers - 1:
            raise ValueError(f"mutual.peer_models: {len(self.peer_models)} given for {self.peers - 1} other peer(s); "
                             f"give one per peer or none")
        return self
