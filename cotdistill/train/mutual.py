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
from cotdistill.config import TrainConfig, chunk_size
from cotdistill.errors import CotdistillError
from cotdistill.lm_head import check_head, final_hidden, head_fn
from cotdistill.train import losses as L
from cotdistill.train.common import TrainsAlongside, chunk_for, global_token_loss, load_student, training_args
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
        self.chunk = chunk_for(self, chunk_size(cfg.loss_chunk_tokens))
        if self.chunk:
            for m, what in ((self.accelerator.unwrap_model(self.model), "student"), *((p, "peer") for p in peers),
                            *(((teacher, "teacher"),) if teacher is not None else ())):
                check_head(m, what)

    def _hidden(self, m, kw):
        with torch.autocast(self.args.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
            return final_hidden(m, **kw)

    def _chunked_terms(self, model, kw, trained, lab, t):
        """Per trained token, every peer's CE, its mean KL from the other peers and its teacher KL, and whether all
        peers' argmax agree, ``self.chunk`` tokens at a time from the final hidden states: no [B, L, V] tensor."""
        out, h0 = self._hidden(model, kw)
        hidden = [h0] + [self._hidden(p, kw)[1] for p in self.peers]
        heads = [head_fn(self.accelerator.unwrap_model(model))] + [head_fn(p) for p in self.peers]
        hs = [h[:, :-1][trained] for h in hidden]
        th, t_head = None, head_fn(self.teacher) if self.teacher is not None else None
        if self.teacher is not None:
            with torch.no_grad():
                th = self._hidden(self.teacher, kw)[1][:, :-1][trained]
        v = min(self.accelerator.unwrap_model(m).get_output_embeddings().weight.shape[0]
                for m in [model, *self.peers])
        k_peers = len(hs)

        def per_token(lab, *hs_chunk):
            with torch.autocast(lab.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
                z = [head(h)[:, :v].float() for head, h in zip(heads, hs_chunk[:k_peers])]
                q = None
                if th is not None:
                    with torch.no_grad():
                        q = torch.log_softmax(t_head(hs_chunk[k_peers])[:, :v].float() / t, -1)
            log_p = [torch.log_softmax(x / t, -1) for x in z]
            cols = [F.cross_entropy(x, lab, reduction="none") for x in z]
            cols += [torch.stack([L.divergence(log_p[j].detach(), log_p[k]) for j in range(k_peers) if j != k]).mean(0)
                     for k in range(k_peers)]
            cols += [L.divergence(q, lp) for lp in log_p] if q is not None else []
            top = torch.stack([x.argmax(-1) for x in z])
            return (*cols, (top == top[0]).all(0).float())

        cols = L.token_chunks(per_token, [lab, *hs, *([th] if th is not None else [])], self.chunk)
        return out, cols[:k_peers], cols[k_peers:2 * k_peers], cols[2 * k_peers:-1], cols[-1]

    def _forward(self, m, kw):
        # compute_loss runs outside autocast: the peers (not wrapped by accelerate) and the teacher get it here
        with torch.autocast(self.args.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
            return m(**kw).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.chunk:
            return self._compute_chunked(model, inputs, return_outputs, num_items_in_batch)
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

    def _compute_chunked(self, model, inputs, return_outputs, num_items_in_batch):
        o = self.cfg.mutual
        kw = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        labels = inputs["labels"][:, 1:]
        trained = labels != -100
        n = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else trained.sum(),
                            dtype=torch.float32, device=labels.device).clamp(min=1)
        t = o.temperature
        out, ces, kls, tkls, agree = self._chunked_terms(model, kw, trained, labels[trained], t)
        loss, ce_all, kl_all = 0.0, [], []
        for k in range(len(ces)):
            ce, kl = ces[k].sum() / n, t * t * kls[k].sum() / n
            loss = loss + (1 - o.alpha) * ce + o.alpha * kl
            if tkls:
                loss = loss + o.teacher_weight * t * t * tkls[k].sum() / n
            ce_all.append(float(ce.detach()))
            kl_all.append(float(kl.detach()))
        share = float(trained.sum() / n)
        agreement = float(agree.mean()) if agree.numel() else 1.0
        for key, val in (("ce", sum(ce_all) / len(ce_all)), ("kl", sum(kl_all) / len(kl_all)),
                         ("agreement", agreement)):
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
