"""Deep mutual learning (method ``mutual``): ``mutual.peers`` students trained together on the filtered traces, no
fixed teacher needed. Each step, every peer k minimises

    (1 - alpha) * CE_k + alpha * T^2 * mean_{l != k} KL(p_l,T || p_k,T)   [+ teacher_weight * T^2 * KL(q_T || p_k,T)]

per trained token, the other peers' distributions taken as fixed targets (no gradient through them), summed over
the peers and stepped by one optimizer (the simultaneous form of Zhang et al.'s alternating updates). The first
peer is the run's student and is saved to final/; the others to peers/peer<k>/ (and in every checkpoint, so a
resumed run continues all of them). Logged per step: ``mutual/ce`` (mean over peers), ``mutual/kl``, and
``mutual/agreement``, the share of trained tokens on which every peer's argmax is the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer

from cotdistill.chat import load_tokenizer
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError
from cotdistill.train import losses as L
from cotdistill.train.common import TrainsAlongside, global_token_loss, load_student, training_args
from cotdistill.train.data import check_same_vocab, load_split, pad_collator
from cotdistill.train.kd import build_examples

PEERS = "mutual_peers.pt"


class MutualTrainer(TrainsAlongside, Trainer):
    alongside_file, log_prefix = PEERS, "mutual"

    def __init__(self, *args, peers: list, teacher, cfg: TrainConfig, **kw):
        super().__init__(*args, **kw)
        self.cfg, self.teacher = cfg, teacher
        self.peers = self.alongside = torch.nn.ModuleList(peers).to(self.args.device)
        if teacher is not None:
            teacher.to(self.args.device)
        self._logged: dict[str, list[float]] = {}

    def _forward(self, m, kw):
        # compute_loss runs outside autocast: the peers (not wrapped by accelerate) and the teacher get it here
        with torch.autocast(self.args.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
            return m(**kw).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        o = self.cfg.mutual
        kw = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        out = model(**kw)
        logits = [out.logits] + [self._forward(p, kw) for p in self.peers]
        labels = inputs["labels"][:, 1:]
        trained = labels != -100
        n = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else trained.sum(),
                            dtype=torch.float32, device=labels.device).clamp(min=1)
        v = min(z.size(-1) for z in logits)
        z = [x[:, :-1, :v].float()[trained] for x in logits]  # [N, V] per peer, the trained positions
        lab, t = labels[trained], o.temperature
        log_p = [torch.log_softmax(x / t, -1) for x in z]
        q_teacher = None
        if self.teacher is not None:
            with torch.no_grad():
                q_teacher = torch.log_softmax(self._forward(self.teacher, kw)[:, :-1, :v].float()[trained] / t, -1)
        loss, ce_all, kl_all = 0.0, [], []
        for k in range(len(z)):
            ce = F.cross_entropy(z[k], lab, reduction="sum") / n
            kl = torch.stack([L.divergence(log_p[j].detach(), log_p[k]) for j in range(len(z)) if j != k]).mean(0)
            kl = t * t * kl.sum() / n
            loss = loss + (1 - o.alpha) * ce + o.alpha * kl
            if q_teacher is not None:
                loss = loss + o.teacher_weight * t * t * L.divergence(q_teacher, log_p[k]).sum() / n
            ce_all.append(float(ce.detach()))
            kl_all.append(float(kl.detach()))
        share = float(trained.sum() / n)
        with torch.no_grad():
            top = torch.stack([x.argmax(-1) for x in z])
            agree = float((top == top[0]).all(0).float().mean()) if top.numel() else 1.0
        for key, val in (("ce", sum(ce_all) / len(ce_all)), ("kl", sum(kl_all) / len(kl_all)), ("agreement", agree)):
            self._logged.setdefault(key, []).append(val / (share if key != "agreement" and share else 1))
        loss = global_token_loss(self, loss, num_items_in_batch)
        return (loss, out) if return_outputs else loss

    # ---- the peers train with the student (one optimizer), are checkpointed with it (TrainsAlongside), saved last
    def alongside_groups(self, params: list) -> list[dict]:
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.args.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

    def train(self, *args, **kw):
        result = super().train(*args, **kw)
        if self.is_world_process_zero():
            for k, p in enumerate(self.peers, start=1):
                p.save_pretrained(str(Path(self.args.output_dir) / "peers" / f"peer{k}"))
                self.processing_class.save_pretrained(str(Path(self.args.output_dir) / "peers" / f"peer{k}"))
        return result


def _peer(cfg: TrainConfig, k: int, student):
    """Peer k: its own checkpoint (``peer_models``), the student's architecture initialised afresh from seed + k,
    or (``reinit_peers`` off) the student's own checkpoint loaded again."""
    if cfg.mutual.peer_models:
        return load_student(cfg.model_copy(update={"student": cfg.mutual.peer_models[k - 1]}))
    if not cfg.mutual.reinit_peers:
        return load_student(cfg)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(cfg.seed + 1000 * k)
    return AutoModelForCausalLM.from_config(student.config).float()


def build(cfg: TrainConfig):
    import datasets
    from transformers import AutoModelForCausalLM, TrainingArguments

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cfg.lora is not None or cfg.qat is not None:
        raise CotdistillError("method mutual: lora and qat are not supported for the peers; drop them")
    tok = load_tokenizer(cfg.student, "student", cfg.chat_template)
    model = load_student(cfg)
    peers = [_peer(cfg, k, model) for k in range(1, cfg.mutual.peers)]
    teacher = None
    if cfg.teacher and cfg.mutual.teacher_weight:
        check_same_vocab(tok, load_tokenizer(cfg.teacher, "teacher"), "method mutual")
        teacher = AutoModelForCausalLM.from_pretrained(cfg.teacher, dtype=torch.float32).eval().requires_grad_(False)
    examples, dropped = build_examples(cfg, tok, load_split(cfg, "sft"))
    args = training_args(TrainingArguments, cfg, remove_unused_columns=False,
                         train_sampling_strategy="group_by_length" if cfg.length_grouped else "random")
    trainer = MutualTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(examples),
                            processing_class=tok, data_collator=pad_collator(tok.pad_token_id), peers=peers,
                            teacher=teacher, cfg=cfg)
    if trainer.accelerator.num_processes > 1:
        raise CotdistillError("method mutual: the peers are not synchronised across processes; train in one process")
    preflight = {"examples": len(examples), "dropped_too_long": dropped, "peers": cfg.mutual.peers,
                 "teacher": cfg.teacher, "trained_tokens": sum(sum(1 for x in e["labels"] if x != -100)
                                                               for e in examples)}
    return trainer, tok, preflight
