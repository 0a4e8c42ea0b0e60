"""KD with live teachers: one trainer, many terms, composed by config weights.

    loss = (1 - alpha) * CE + alpha * T(t)^2 * D(q_T || p_T)          soft targets (Hinton), D = fwd/rev KL or JSD
         + features.weight  * sum_pairs ||h_t(l) - W_l h_s(l')||^2/d  FitNets (or cosine), W_l learned if widths differ
         + attention.weight * sum_pairs MSE(head-mean maps)            TinyBERT attention transfer (eager attention)
         + relation.weight  * MSE(pairwise cosine of pooled states)    RKD
         + cosine           * (1 - cos(h_t, W h_s)) on the last layer  DistilBERT's cosine-embedding term

q is the (weighted) mixture of every teacher's tempered distribution (``teachers``: an ensemble);
the other terms read the first teacher. T(t) follows ``kd.schedule`` when given; ``kd.importance``
weights examples by the student's loss or the teacher's entropy. Terms are pure functions
(train/losses.py). Teachers are frozen in eval mode and must share the student's tokenizer (every
term compares the models token by token). The projections W are trained with the student, saved in
each checkpoint (``kd_projections.pt``, so a resumed run continues them) and not in the student.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from transformers import Trainer

from cotdistill.chat import assistant_end_token, end_of_turn_ids, load_tokenizer
from cotdistill.config import TrainConfig, chunk_size
from cotdistill.errors import CotdistillError
from cotdistill.lm_head import check_head, head_fn
from cotdistill.train import losses as L
from cotdistill.train.common import (
    TrainsAlongside,
    chunk_for,
    device_defaults,
    global_token_loss,
    load_student,
    training_args,
)
from cotdistill.train.data import LengthGuard, check_same_vocab, example_name, load_split, pad_collator

PROJECTIONS = "kd_projections.pt"


def teacher_specs(cfg: TrainConfig) -> list[tuple[str, float]]:
    return [(t.model, t.weight) for t in cfg.teachers] if cfg.teachers else [(cfg.teacher, 1.0)]


class LiveKDTrainer(TrainsAlongside, Trainer):
    """Logs each term's mean per token and T as kd/<term>; the feature projections train with the student and
    resume with it (TrainsAlongside)."""

    alongside_file, log_prefix = PROJECTIONS, "kd"

    def __init__(self, *args, teachers, teacher_weights, cfg: TrainConfig, pairs, projections, **kw):
        super().__init__(*args, **kw)
        self.teachers, self.teacher_weights, self.cfg = teachers, teacher_weights, cfg
        self.chunk = chunk_for(self, chunk_size(cfg.loss_chunk_tokens))
        if self.chunk:
            for m, what in (
                (self.accelerator.unwrap_model(self.model), "student"),
                *((t, "teacher") for t in teachers),
            ):
                check_head(m, what)
        self.vocab_rows = [m.get_output_embeddings().weight.size(0) for m in
                           (self.accelerator.unwrap_model(self.model), *teachers)]
        self.pairs, self.projections = pairs, projections.to(self.args.device)
        self.alongside = self.projections
        for t in self.teachers:
            t.to(self.args.device)
        self._logged: dict[str, list[float]] = {}

    # ---- the loss
    def temperature(self) -> float:
        s = self.cfg.kd.schedule
        return L.temperature_at(self.state.global_step, s.t_max, s.decay, s.floor) if s else self.cfg.kd.temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        c = self.cfg
        want_h = bool(c.features or c.relation or c.cosine)
        want_a = c.attention is not None
        kw = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                  output_hidden_states=want_h or bool(self.chunk), output_attentions=want_a)
        if self.chunk:  # only the last position's logits; the rest chunk by chunk from the final hidden states
            kw["logits_to_keep"] = 1
        out = model(**kw)
        with torch.no_grad():
            t_outs = [t(**kw) for t in self.teachers]
        check_outputs(out, t_outs[0], want_h, want_a)
        labels = inputs["labels"][:, 1:]
        trained = labels != -100
        n = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else trained.sum(),
                            dtype=torch.float32, device=labels.device).clamp(min=1)
        temp = self.temperature()
        ce_sum, kd_sum, ent_sum = (self._chunked_terms if self.chunk else self._full_terms)(
            model, out, t_outs, labels, trained, temp)
        terms = {"ce": ce_sum / n}
        if kd_sum is not None:
            terms["kd"] = temp * temp * kd_sum / n
        loss = (1 - c.kd.alpha) * terms["ce"] + c.kd.alpha * terms.get("kd", 0)
        if c.kd.confidence_penalty:  # the student's mean entropy per trained token, rewarded
            terms["student_entropy"] = ent_sum / n
            loss = loss - c.kd.confidence_penalty * terms["student_entropy"]
        share = trained.sum() / n  # per-token means weigh this micro-batch like the summed terms do
        tok_mask = inputs["labels"] != -100  # the trained tokens' own positions
        hs, ht = (out.hidden_states, t_outs[0].hidden_states) if want_h else (None, None)
        if c.features:
            f = sum(L.feature_loss(self._project(i, hs[s]), ht[t], tok_mask, c.features.loss)
                    for i, (s, t) in enumerate(self.pairs["features"]))
            terms["feature"] = f * share
            loss = loss + c.features.weight * terms["feature"]
        if c.attention:
            a = sum(L.attention_loss(out.attentions[s - 1], t_outs[0].attentions[t - 1], inputs["attention_mask"])
                    for s, t in self.pairs["attention"])
            terms["attention"] = a * share
            loss = loss + c.attention.weight * terms["attention"]
        if c.relation:
            r = L.relation_loss(L.pooled(hs[-1], tok_mask), L.pooled(ht[-1], tok_mask))
            terms["relation"] = r * share
            loss = loss + c.relation.weight * terms["relation"]
        if c.cosine:
            e = L.feature_loss(self._project(len(self.pairs["features"]), hs[-1]), ht[-1], tok_mask, "cosine")
            terms["cosine"] = e * share
            loss = loss + c.cosine * terms["cosine"]
        for k, val in terms.items():
            self._logged.setdefault(k, []).append(float(val.detach()) / float(share.detach().clamp(min=1e-9)))
        self._logged.setdefault("temperature", []).append(temp)
        loss = global_token_loss(self, loss, num_items_in_batch)
        return (loss, out) if return_outputs else loss

    def _teacher_weights(self, gold_lp: list[torch.Tensor], example: torch.Tensor, n_examples: int):
        """Fixed weights, or with ``kd.selection: gold_likelihood`` per-example weights from each teacher's mean
        log-likelihood of the gold tokens (gold_lp: [N] per teacher over the trained tokens; example: [N] the
        example of each token): [K, B]."""
        counts = torch.zeros(n_examples, device=example.device).index_add_(0, example, torch.ones_like(gold_lp[0]))
        scores = torch.stack([torch.zeros(n_examples, device=example.device).index_add_(0, example, g.float())
                              for g in gold_lp]) / counts.clamp(min=1)
        w = L.selective_weights(scores, self.teacher_weights, self.cfg.kd.selection_tau)
        self._logged.setdefault("teacher_weight_max", []).append(float(w.max(0).values.mean()))
        return w

    def _full_terms(self, model, out, t_outs, labels, trained, temp):
        """(weighted CE sum, weighted divergence sum or None, student entropy sum or None) from the full [B, L, V]
        logits."""
        c = self.cfg
        v = min(out.logits.size(-1), *(o.logits.size(-1) for o in t_outs))  # padding rows past the tokenizer
        logits = out.logits[:, :-1, :v].float()
        ce_tok = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none") * trained
        weights = None
        if c.kd.importance != "none":
            weights = L.importance_weights(self._per_example(ce_tok, t_outs, trained, v), c.kd.importance)
        ce_sum = (ce_tok * (weights.unsqueeze(1) if weights is not None else 1)).sum()
        ent = L.student_entropy(torch.log_softmax(logits, -1))[trained].sum() if c.kd.confidence_penalty else None
        if c.kd.alpha == 0:
            return ce_sum, None, ent
        t_logits = [o.logits[:, :-1, :v] for o in t_outs]
        tw = self.teacher_weights
        if c.kd.selection == "gold_likelihood":
            with torch.no_grad():
                example = torch.arange(trained.size(0), device=trained.device).unsqueeze(1).expand_as(trained)[trained]
                gold = [torch.log_softmax(z.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                        [trained] for z in t_logits]
                tw = self._teacher_weights(gold, example, trained.size(0)).unsqueeze(-1)  # [K, B, 1]
        log_q = L.smooth_targets(L.ensemble_log_probs(t_logits, tw, temp), c.kd.label_smoothing)
        kd = L.soft_target_loss(logits, log_q, trained, temp, c.kd.divergence, c.kd.beta, weights, 1) / (temp * temp)
        return ce_sum, kd, ent

    def _chunked_terms(self, model, out, t_outs, labels, trained, temp):
        """The same sums, ``self.chunk`` trained tokens at a time (L.token_chunks): memory O(chunk x V)."""
        c = self.cfg
        s_head = head_fn(self.accelerator.unwrap_model(model))
        t_heads = [head_fn(t) for t in self.teachers]
        v = min(self.vocab_rows)
        h_s = out.hidden_states[-1][:, :-1][trained]
        h_ts = [o.hidden_states[-1][:, :-1][trained] for o in t_outs]
        lab = labels[trained]
        example = torch.arange(trained.size(0), device=trained.device).unsqueeze(1).expand_as(trained)[trained]
        w_tok = torch.as_tensor(self.teacher_weights, dtype=torch.float32, device=h_s.device).expand(h_s.size(0), -1)
        if c.kd.selection == "gold_likelihood" and c.kd.alpha > 0:
            def gold(lab_c, *hts):
                with torch.no_grad():
                    return tuple(torch.log_softmax(head(ht)[:, :v].float(), -1).gather(-1, lab_c.unsqueeze(-1))
                                 .squeeze(-1) for head, ht in zip(t_heads, hts))
            w_tok = self._teacher_weights(list(L.token_chunks(gold, [lab, *h_ts], self.chunk)), example,
                                          trained.size(0))[:, example].T  # [N, K]

        def per_token(h, lab_c, w_c, *hts):
            with torch.autocast(h.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
                z_s = s_head(h)[:, :v]
                with torch.no_grad():
                    z_ts = [head(ht)[:, :v] for head, ht in zip(t_heads, hts)]
            return L.soft_target_per_token(z_s, z_ts, lab_c, w_c.T, temp, c.kd.divergence, c.kd.beta,
                                           c.kd.label_smoothing)

        ce_tok, d_tok, ent_tok, h_tok = L.token_chunks(per_token, [h_s, lab, w_tok, *h_ts], self.chunk)
        w_ex = 1
        if c.kd.importance != "none":
            stat = ce_tok.detach() if c.kd.importance == "student_loss" else ent_tok
            per_ex = torch.zeros(trained.size(0), device=stat.device).index_add_(0, example, stat.float())
            weights = L.importance_weights(per_ex / trained.sum(1).clamp(min=1), c.kd.importance)
            w_ex = weights[example]
        return ((ce_tok * w_ex).sum(), (d_tok * w_ex).sum() if c.kd.alpha > 0 else None,
                h_tok.sum() if c.kd.confidence_penalty else None)

    def _per_example(self, ce_tok, t_outs, trained, v):
        counts = trained.sum(1).clamp(min=1)
        if self.cfg.kd.importance == "student_loss":
            return ce_tok.detach().sum(1) / counts
        with torch.no_grad():
            lq = L.ensemble_log_probs([o.logits[:, :-1, :v] for o in t_outs], self.teacher_weights, 1.0)
            ent = -(lq.exp() * lq).sum(-1) * trained
        return ent.sum(1) / counts

    def _project(self, i: int, h):
        # compute_loss runs outside autocast: bf16 hidden states (a bf16 teacher's, or a model's without
        # accelerate's output conversion) meet the fp32 projection W here
        p = self.projections[i] if i < len(self.projections) else None
        return p(h.to(p.weight.dtype)) if p is not None and not isinstance(p, torch.nn.Identity) else h


def check_outputs(out, t_out, want_h: bool, want_a: bool) -> None:
    if want_h and (out.hidden_states is None or t_out.hidden_states is None):
        raise CotdistillError("features/relation/cosine: the student or teacher returns no hidden states "
                              "(output_hidden_states); these terms need a model that exposes them")
    if want_a and (not out.attentions or not t_out.attentions or out.attentions[0] is None
                   or t_out.attentions[0] is None):
        raise CotdistillError("attention: the student or teacher returns no attention maps; attention transfer "
                              "needs attn_implementation 'eager' (leave attn_implementation unset)")


def build_examples(cfg: TrainConfig, tok, ds) -> tuple[list[dict], int]:
    """Prompt (the student's chat template with its generation prompt) + the trace's completion + the
    closing end-of-turn token; loss on the completion and the closing token."""
    closing = assistant_end_token(tok)
    closing = tok.eos_token_id if closing is None else closing
    eot = end_of_turn_ids(tok)
    examples, guard = [], LengthGuard(ds, cfg.max_length, cfg.max_truncated_share)
    for i, row in enumerate(ds):
        msgs = row["messages"]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise CotdistillError(f"{cfg.dataset_dir}/sft: {example_name(ds, i)}: the last message is not the "
                                  f"assistant's; re-run `cotdistill filter`")
        prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        comp = tok(msgs[-1]["content"], add_special_tokens=False)["input_ids"]
        if not comp or comp[-1] not in eot:
            comp = comp + [closing]
        ids = list(prompt) + comp
        if not guard.fits(i, len(ids)):
            continue
        examples.append({"input_ids": ids, "labels": [-100] * len(prompt) + comp, "length": len(ids)})
    return examples, guard.check()


def _depth_width(model) -> tuple[int, int]:
    text = model.config.get_text_config()
    return text.num_hidden_layers, text.hidden_size


def build(cfg: TrainConfig):
    import datasets
    from transformers import AutoModelForCausalLM, TrainingArguments

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok = load_tokenizer(cfg.student, "student", cfg.chat_template)
    specs = teacher_specs(cfg)
    for name, _ in specs:
        check_same_vocab(tok, load_tokenizer(name, "teacher"), "method kd")
    dtype = torch.bfloat16 if device_defaults(cfg)["bf16"] else torch.float32  # teachers are frozen: bf16 is safe
    attn = {"attn_implementation": "eager"} if cfg.attention else (
        {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {})
    model = load_student(cfg, attn.get("attn_implementation"))
    teachers = []
    for name, _ in specs:
        t = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **attn).eval()
        t.requires_grad_(False)
        teachers.append(t)
    (ls, ds_), (lt, dt) = _depth_width(model), _depth_width(teachers[0])
    pairs: dict[str, list] = {}
    for term in ("features", "attention"):  # attention maps are head-averaged: any head counts compare
        block = getattr(cfg, term)
        try:
            pairs[term] = L.layer_map(ls, lt, block.layer_map) if block else []
        except ValueError as e:
            raise CotdistillError(f"{term}.{e}") from None
    need = len(pairs["features"]) + (1 if cfg.cosine else 0)
    with torch.random.fork_rng(devices=[]):  # the seed's own projections, whatever ran before in this process
        torch.manual_seed(cfg.seed)
        projections = torch.nn.ModuleList(
            [torch.nn.Linear(ds_, dt, bias=False) if ds_ != dt else torch.nn.Identity() for _ in range(need)])
    examples, dropped = build_examples(cfg, tok, load_split(cfg, "sft"))
    args = training_args(TrainingArguments, cfg, remove_unused_columns=False,
                         train_sampling_strategy="group_by_length" if cfg.length_grouped else "random")
    trainer = LiveKDTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(examples),
                            processing_class=tok, data_collator=pad_collator(tok.pad_token_id), teachers=teachers,
                            teacher_weights=[w for _, w in specs], cfg=cfg, pairs=pairs, projections=projections)
    if trainer.accelerator.num_processes > 1 and any(True for _ in projections.parameters()):
        raise CotdistillError(f"method kd: the learned {ds_} -> {dt} feature/cosine projections are not synchronised "
                              f"across processes; train this student in one process, or map layers of equal width")
    preflight = {"examples": len(examples), "dropped_too_long": dropped, "teachers": [n for n, _ in specs],
                 "layer_pairs": {k: v for k, v in pairs.items() if v},
                 "projections": sum(p.numel() for p in projections.parameters()),
                 "trained_tokens": sum(sum(1 for x in e["labels"] if x != -100) for e in examples)}
    return trainer, tok, preflight

