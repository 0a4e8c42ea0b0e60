"""On-policy distillation with the teacher outside the trainer: the student samples completions for the training
prompts, a teacher backend (an in-process vLLM engine or an OpenAI-compatible vLLM server) scores every sampled
token with one prefill (``prompt_logprobs``), and the student learns from the per-token divergence:

- ``loss: reverse_kl`` (default): r_t = log p_s(y_t) - log p_t(y_t) on the sampled tokens, as a per-token reward
  (Thinking Machines' on-policy distillation); loss = sum_t r_t log p_s(y_t) / N (train/losses.py).
- ``loss: topk``: forward/reverse KL or JSD over the teacher's top-k + tail bucket at every rollout position.

The teacher is never loaded in the training process, so a 70B teacher behind a server costs the trainer nothing.
Rollouts are seeded by (seed, optimizer step, problem ids): a run resumed from a checkpoint draws the same prompts
and the same rollouts as one that was never stopped. ``rollouts.jsonl`` records, per step, which prompts were
rolled out, what the student wrote, which teacher graded it, the mean per-token reverse KL, the tokens the
teacher scored (prompt + rollout, one prefill each), and the time spent in rollout and teacher scoring. Teacher
and student must share the tokenizer (checked when the teacher reports its tokenizer): cross-tokenizer teachers
are not supported (their tokens do not align with the student's). The student rolls out with transformers
``generate``, or with ``use_vllm`` through its own vLLM engine, synced to the trainer's weights every step
(train/vllm_rollouts.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from transformers import Trainer

from cotdistill.chat import load_tokenizer, tokenizer_hash
from cotdistill.config import TrainConfig
from cotdistill.errors import CotdistillError
from cotdistill.train.common import load_student, stop_on_turn_end, training_args
from cotdistill.train.data import load_split
from cotdistill.train.losses import sampled_reverse_kl_loss, topk_divergence_loss
from cotdistill.train.teacher_mix import make_scorer

ROLLOUTS = "rollouts.jsonl"


def rollout_seed(seed: int, step: int, problem_ids: list[str]) -> int:
    h = hashlib.sha256(f"{seed}\x00{step}\x00{chr(0).join(problem_ids)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFFFFFFFFFFFFFF


def server_on_this_machine(cfg: TrainConfig) -> bool:
    """Whether a teacher that grades the rollouts is a server on this machine: one this run starts
    (``serve_teacher``), or a ``base_url`` that reaches this machine (the loopback, or its own LAN address or host
    name: a server the user or a benchmark started here)."""
    from urllib.parse import urlparse

    from cotdistill.config import OpenAITeacher
    from cotdistill.env import is_this_machine

    if cfg.on_policy.serve_teacher:
        return True
    teachers = [t.teacher for t in cfg.teachers] if cfg.teachers else [cfg.teacher]
    return any(isinstance(t, OpenAITeacher) and is_this_machine(urlparse(t.base_url).hostname or "")
               for t in teachers)


class OnPolicyTrainer(Trainer):
    def __init__(self, *args, scorer, opts, stop_ids: list[int], log_path: Path, teacher_name: str, engine=None,
                 local_server: bool = False, **kw):
        super().__init__(*args, **kw)
        self.scorer, self.opts, self.stop_ids, self.engine = scorer, opts, stop_ids, engine
        self.local_server = local_server
        self.overlap = scorer.info.backend == "openai"
        self.log_path, self.teacher_name = log_path, teacher_name

    def train(self, *args, **kw):
        """The teacher (an engine, or a server this run started) goes when training ends or fails: saving final/
        needs no teacher, and a failed run must not leave a server behind."""
        threads = torch.get_num_threads()
        if self.local_server and not torch.cuda.is_available():
            # a teacher server on this machine shares the CPU: half the cores each, or both spin-wait for the
            # other's (2 cores, the demo: a step 1.43 s with both threads here, 0.59 s with one)
            torch.set_num_threads(max(1, threads // 2))
        try:
            return super().train(*args, **kw)
        finally:
            torch.set_num_threads(threads)
            self.scorer.close()
            if self.engine is not None:
                self.engine.close()

    def _rollout(self, model, prompts: list[list[int]], problem_ids: list[str]) -> list[list[int]]:
        """The student's completions (the stop token included when it stopped), sampled with a seed fixed by the
        step and the prompts, without touching the trainer's random state; through the vLLM engine (weights synced
        first, once per optimizer step) each prompt with its own seed."""
        if self.engine is not None:
            step = self.state.global_step
            self.engine.sync(self.accelerator.unwrap_model(model), step)
            seeds = [rollout_seed(self.args.seed, step, [p]) for p in problem_ids]
            return self.engine.generate(prompts, seeds, self.opts.rollout_temperature, self.opts.max_new_tokens,
                                        self.stop_ids)
        pad = self.processing_class.pad_token_id
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        net = self.accelerator.unwrap_model(model)
        was_training = net.training
        net.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(rollout_seed(self.args.seed, self.state.global_step, problem_ids))
            out = net.generate(input_ids=ids.to(net.device), attention_mask=mask.to(net.device), do_sample=True,
                               temperature=self.opts.rollout_temperature, top_k=0, top_p=1.0,
                               max_new_tokens=self.opts.max_new_tokens, pad_token_id=pad, eos_token_id=self.stop_ids)
        net.train(was_training)
        comps = []
        for row in out[:, width:].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in self.stop_ids), len(row))
            comps.append(row[:cut])
        return comps

    def _batch(self, seqs: list[list[int]], starts: list[int], graded: list[dict]):
        """Right-padded inputs and, per trained position (the logits that predict a rollout token), the sampled
        token, its teacher logprob and the teacher's top-k."""
        pad, width, k = self.processing_class.pad_token_id, max(map(len, seqs)), self.opts.top_k
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        rows, cols, tok, t_lp, t_ids, t_top = [], [], [], [], [], []
        for b, (s, st, g) in enumerate(zip(seqs, starts, graded)):
            n = len(s) - st
            rows += [b] * n
            cols += list(range(st - 1, len(s) - 1))
            tok += s[st:]
            t_lp.append(torch.from_numpy(g["sampled_logprobs"]))
            t_ids.append(torch.from_numpy(g["top_ids"]).long()[:, :k])
            t_top.append(torch.from_numpy(g["top_logprobs"])[:, :k])
        return ids, mask, (torch.tensor(rows), torch.tensor(cols)), torch.tensor(tok), torch.cat(t_lp), \
            torch.cat(t_ids), torch.cat(t_top)

    def _rollout_and_grade(self, model, prompts, pids) -> tuple[list, list, list, list, list, float, float]:
        """Rollouts and their grades, (completions, sequences, starts, grades of the non-empty ones, the teachers
        that graded them, rollout s, teacher s). With ``overlap_chunks`` > 1 and a served teacher, the batch goes
        in chunks and the teacher grades chunk i over HTTP while the student writes chunk i + 1; teacher s is then
        the wait after the last rollout. Each chunk's rollouts are seeded by its own problem ids, so a setting
        always gives the same."""
        from concurrent.futures import ThreadPoolExecutor

        n = max(1, min(self.opts.overlap_chunks if self.overlap else 1, len(prompts)))
        bounds = [round(i * len(prompts) / n) for i in range(n + 1)]
        comps, futures, rollout_s = [], [], 0.0
        with ThreadPoolExecutor(1) as pool:
            for a, b in zip(bounds, bounds[1:]):
                t = time.perf_counter()
                part = self._rollout(model, prompts[a:b], pids[a:b])
                rollout_s += time.perf_counter() - t
                comps += part
                keep = [i for i in range(a, b) if comps[i]]  # an empty rollout has nothing to grade
                futures.append(pool.submit(self.scorer.grade, [pids[i] for i in keep],
                                           [prompts[i] + comps[i] for i in keep], [len(prompts[i]) for i in keep],
                                           self.opts.top_k) if keep else None)
            t = time.perf_counter()
            done = [f.result() for f in futures if f is not None]
            teacher_s = time.perf_counter() - t
        graded = [g for grades, _ in done for g in grades]
        graders = [n for _, names in done for n in names]
        seqs, starts = [p + c for p, c in zip(prompts, comps)], [len(p) for p in prompts]
        return comps, seqs, starts, graded, graders, rollout_s, teacher_s

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        prompts, pids = inputs["prompt_ids"], inputs["problem_id"]
        comps, seqs, starts, graded, graders, rollout_s, teacher_s = self._rollout_and_grade(model, prompts, pids)
        keep = [i for i, c in enumerate(comps) if c]
        if not keep:
            return torch.zeros((), requires_grad=True, device=model.device)
        ids, mask, where, tok, t_lp, t_ids, t_top = self._batch([seqs[i] for i in keep], [starts[i] for i in keep],
                                                                 graded)
        dev = model.device
        out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
        log_probs = torch.log_softmax(out.logits[where[0].to(dev), where[1].to(dev)].float(), -1)
        s_lp = log_probs.gather(-1, tok.to(dev).unsqueeze(-1)).squeeze(-1)
        rkl = (s_lp.detach().cpu() - t_lp).mean()
        if self.opts.loss == "reverse_kl":
            loss, _ = sampled_reverse_kl_loss(s_lp, t_lp.to(dev))
        else:
            loss, _ = topk_divergence_loss(log_probs, t_ids.to(dev), t_top.to(dev), self.opts.divergence,
                                           self.opts.beta, self.opts.temperature)
        self._record(pids, comps, graders, float(rkl), rollout_s, teacher_s, sum(len(seqs[i]) for i in keep))
        return (loss, out) if return_outputs else loss

    def _record(self, pids, comps, graders, rkl: float, rollout_s: float, teacher_s: float, scored: int) -> None:
        if not self.accelerator.is_main_process:
            return
        row = {"step": self.state.global_step + 1, "problem_ids": list(pids), "teacher": self.teacher_name,
               "graded_by": graders,
               "completion_tokens": [len(c) for c in comps], "reverse_kl": round(rkl, 6),
               "rollout_s": round(rollout_s, 4), "teacher_s": round(teacher_s, 4), "teacher_tokens": scored,
               "completions": [self.processing_class.decode(c) for c in comps]}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def prompt_rows(cfg: TrainConfig, tok) -> list[dict]:
    ds = load_split(cfg, "prompts")
    rows = []
    for r in ds:
        ids = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True,
                                      return_dict=True)["input_ids"]
        if len(ids) + cfg.on_policy.max_new_tokens <= cfg.max_length:
            rows.append({"prompt_ids": list(ids), "problem_id": r["problem_id"],
                         **({"problem_fields": r["problem_fields"]} if "problem_fields" in r else {})})
    if not rows:
        raise CotdistillError(f"preflight: no prompt of {cfg.dataset_dir}/prompts fits max_length {cfg.max_length} "
                              f"with max_new_tokens {cfg.on_policy.max_new_tokens}; raise max_length")
    return rows


def _trim_log(path: Path, output_dir: Path) -> None:
    """Resuming from checkpoint-S (the one train_and_save resumes from): the records of steps after S will be
    written again."""
    from transformers.trainer_utils import get_last_checkpoint

    if not path.exists():
        return
    ckpt = get_last_checkpoint(str(output_dir))
    last = int(Path(ckpt).name.rsplit("-", 1)[1]) if ckpt else 0
    keep = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= last]
    path.write_text("".join(x + "\n" for x in keep))


def build(cfg: TrainConfig):
    tok = load_tokenizer(cfg.student, "student", cfg.chat_template)
    rows = prompt_rows(cfg, tok)
    scorer = make_scorer(cfg, rows)
    try:
        return _assemble(cfg, tok, rows, scorer)
    except BaseException:
        scorer.close()  # nothing will train: the teacher goes now
        raise


def _assemble(cfg: TrainConfig, tok, rows: list[dict], scorer):
    import datasets
    from transformers import TrainingArguments

    for m in getattr(scorer, "members", [scorer]):
        t_hash = m.info.tokenizer_hash
        if t_hash is not None and t_hash != tokenizer_hash(tok):
            raise CotdistillError(f"preflight: the tokenizer of teacher '{m.info.model}' ({t_hash}) is not the "
                                  f"student's ({tokenizer_hash(tok)}); on-policy scoring needs one tokenizer")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / ROLLOUTS
    if cfg.resume:
        _trim_log(log_path, out)
    elif log_path.exists():
        log_path.unlink()
    model = load_student(cfg)
    stop_ids = stop_on_turn_end(model, tok)
    args = training_args(TrainingArguments, cfg, remove_unused_columns=False, train_sampling_strategy="random")
    use_vllm = cfg.on_policy.use_vllm if cfg.on_policy.use_vllm is not None else torch.cuda.is_available()
    engine = None
    if use_vllm:
        from cotdistill.train.vllm_rollouts import VLLMRollouts

        engine = VLLMRollouts(cfg, cfg.student)
    try:
        trainer = OnPolicyTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                  processing_class=tok, data_collator=lambda b: {k: [x[k] for x in b] for k in b[0]},
                                  scorer=scorer, opts=cfg.on_policy, stop_ids=stop_ids, log_path=log_path,
                                  teacher_name=scorer.info.model, engine=engine,
                                  local_server=server_on_this_machine(cfg))
    except BaseException:
        if engine is not None:
            engine.close()
        raise
    preflight = {"prompts": len(rows), "teacher": scorer.info.model, "teacher_backend": scorer.info.backend,
                 "loss": cfg.on_policy.loss, "rollouts": "vllm" if engine else "transformers"}
    if hasattr(scorer, "prompts_per_teacher"):
        preflight["prompts_per_teacher"] = scorer.prompts_per_teacher()
    return trainer, tok, preflight
