"""Offline teacher: a ``vllm.LLM`` engine in this process.

Requests are enqueued with ``LLM.enqueue`` and the engine is stepped here (what ``LLM.generate``
does internally), so finished samples stream out for incremental, resumable writes while the
engine keeps continuous batching over the whole run. Prompts are rendered once through the
teacher tokenizer's chat template and passed as token ids.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cotdistill.chat import (
    chat_template_text,
    check_model_location,
    render_prompt_ids,
    tokenizer_hash,
    tokenizer_problem,
)
from cotdistill.config import SamplingConfig, VLLMTeacher
from cotdistill.env import (
    DEFAULT_CPU_KV_CACHE_BYTES,
    cuda_available,
    engine_dtype,
    engine_in_this_process,
    prepare_vllm_env,
)
from cotdistill.errors import CotdistillError, first_line
from cotdistill.records import TeacherInfo
from cotdistill.teachers.base import Job, Result, prompt_logprob_arrays
from cotdistill.teachers.weights import tie_source

WEIGHT_SYNC = "cotdistill.teachers.weights.WeightSync"
# files that decide how an engine tokenizes, renders and stops: equal across models for one engine to serve them
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json")


def engine_kwargs(cfg: VLLMTeacher, seed: int = 0) -> dict:
    kw = dict(
        model=cfg.model, tokenizer=cfg.tokenizer or cfg.model, revision=cfg.revision,
        dtype=engine_dtype(cfg.dtype), tensor_parallel_size=cfg.tensor_parallel_size,
        pipeline_parallel_size=cfg.pipeline_parallel_size, enforce_eager=cfg.enforce_eager,
        trust_remote_code=cfg.trust_remote_code, seed=seed,
    )
    if cfg.max_model_len is not None:
        kw["max_model_len"] = cfg.max_model_len
    if cfg.max_num_seqs is not None:
        kw["max_num_seqs"] = cfg.max_num_seqs
    if cfg.kv_cache_memory_bytes is not None:
        kw["kv_cache_memory_bytes"] = cfg.kv_cache_memory_bytes
    elif not cuda_available():
        kw["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_BYTES
    else:
        kw["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    if not cuda_available():
        # vLLM-CPU bug: a seeded request whose prompt is split by chunked prefill makes the model
        # runner rewind a CPU torch.Generator ("CPU Generator does not use offset") and the engine
        # dies. Unsplit prefills never rewind; per-sample seeds need that.
        kw["enable_chunked_prefill"] = False
        if cfg.max_model_len:
            kw["max_num_batched_tokens"] = max(4096, cfg.max_model_len)
    kw["worker_extension_cls"] = WEIGHT_SYNC  # so that eval can move the engine to the next model's weights
    kw.update(cfg.extra_engine_args)
    return kw


def reuse_key(cfg: VLLMTeacher) -> str | None:
    """Models with equal keys can share one engine, each model's weights reloaded in place (eval of many students):
    the same architecture (config.json but its name), tokenizer, chat template, generation config and engine
    settings, a local safetensors checkpoint vLLM reloads in place. None: this model needs an engine of its own."""
    path = Path(cfg.model)
    if not (path / "config.json").is_file() or (cfg.tokenizer and not Path(cfg.tokenizer).is_dir()) or \
            cfg.extra_engine_args.get("worker_extension_cls", WEIGHT_SYNC) != WEIGHT_SYNC:
        return None
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError:
        return None  # an engine of its own, whose start names the broken file in one line
    tie = tie_source(path, config)
    if tie is False or config.get("quantization_config"):
        return None
    config = {k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version")}
    tok = Path(cfg.tokenizer or cfg.model)
    files = {f: (tok / f).read_text(errors="replace") for f in TOKENIZER_FILES if (tok / f).is_file()}
    template = Path(cfg.chat_template).read_text() if cfg.chat_template else None
    engine = {k: v for k, v in engine_kwargs(cfg).items() if k not in ("model", "tokenizer", "revision")}
    blob = json.dumps([config, tie, files, template, engine], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def sampling_params(s: SamplingConfig, seed: int):
    from vllm import SamplingParams

    return SamplingParams(
        n=1, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
        seed=seed, stop=list(s.stop) or None, logprobs=s.logprobs,
    )


def logprob_arrays(token_ids, logprobs, k: int) -> dict[str, np.ndarray]:
    """vLLM per-token {id: Logprob(rank)} dicts -> dense top-k arrays (sampled token kept apart)."""
    t = len(token_ids)
    top_ids = np.full((t, k), -1, dtype=np.int32)
    top_lp = np.full((t, k), -np.inf, dtype=np.float32)
    sampled = np.empty(t, dtype=np.float32)
    for i, (tid, d) in enumerate(zip(token_ids, logprobs)):
        sampled[i] = d[tid].logprob
        for cand, lp in d.items():
            r = lp.rank
            if r is not None and 1 <= r <= k:
                top_ids[i, r - 1] = cand
                top_lp[i, r - 1] = lp.logprob
    return {"token_ids": np.asarray(token_ids, dtype=np.int32), "sampled_logprobs": sampled,
            "top_ids": top_ids, "top_logprobs": top_lp}


def check_servable(cfg: VLLMTeacher, field: str = "teacher") -> None:
    """A local model vLLM can serve: whole weights and config, and a tokenizer (vLLM's own message for a missing one is
    cut off mid-sentence), in one line naming ``field``; before an engine start (~20 s on CPU)."""
    check_model_location(cfg.model, f"{field}.model", model=True)
    if cfg.tokenizer:
        check_model_location(cfg.tokenizer, f"{field}.tokenizer")
    problem = tokenizer_problem(cfg.tokenizer or cfg.model)
    if problem:
        raise CotdistillError(f"{field}.{'tokenizer' if cfg.tokenizer else 'model'}: {problem}")


class VLLMOfflineTeacher:
    def __init__(self, cfg: VLLMTeacher, seed: int = 0, window: int = 2048):
        check_servable(cfg)
        template = chat_template_text(cfg.chat_template, "teacher.chat_template") if cfg.chat_template else None
        prepare_vllm_env()
        import vllm
        from vllm import LLM

        try:
            with engine_in_this_process():
                self.llm = LLM(**engine_kwargs(cfg, seed))
        except Exception as e:  # vLLM raises many types; keep the first line, say which knob
            raise CotdistillError(f"teacher.model '{cfg.model}': vLLM engine failed to start: {first_line(e)}") from e
        self.tokenizer = self.llm.get_tokenizer()
        if template:
            self.tokenizer.chat_template = template
        if not getattr(self.tokenizer, "chat_template", None):
            raise CotdistillError(
                f"teacher.model '{cfg.model}': tokenizer has no chat template; "
                "set teacher.chat_template to a Jinja file"
            )
        self.window = window
        self.info = TeacherInfo(
            backend="vllm", model=cfg.model, revision=cfg.revision,
            tokenizer=cfg.tokenizer or cfg.model, tokenizer_hash=tokenizer_hash(self.tokenizer),
            engine_version=vllm.__version__, dtype=str(self.llm.llm_engine.model_config.dtype).removeprefix("torch."),
        )

    def prompt_ids(self, job: Job) -> list[int]:
        return render_prompt_ids(self.tokenizer, job.messages)

    def generate(self, jobs: Iterable[Job], sampling: SamplingConfig) -> Iterator[tuple[Job, Result]]:
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        pending: dict[str, Job] = {}
        todo = iter(jobs)
        queue: deque[Job] = deque()
        rendered: dict[str, list[int]] = {}

        def refill():
            # keep at most `window` requests in the engine: bounded memory, full batches
            batch = []
            while len(pending) + len(batch) < self.window:
                job = next(todo, None)
                if job is None:
                    break
                batch.append(job)
            if not batch:
                return
            prompts = []
            for j in batch:  # n samples of a problem share one rendering
                ids = rendered.get(j.problem_id)
                if ids is None:
                    ids = rendered[j.problem_id] = self.prompt_ids(j)
                prompts.append(TokensPrompt(prompt_token_ids=ids))
            params = [sampling_params(sampling, j.seed) for j in batch]
            ids = self.llm.enqueue(prompts, params, use_tqdm=False)
            for rid, job in zip(ids, batch):
                # enqueue returns internal ids "<external>-<random>"; outputs carry the external id
                pending[rid.split("-", 1)[0]] = job

        refill()
        while pending:
            for out in engine.step():
                if not out.finished:
                    continue
                job = pending.pop(out.request_id)
                c = out.outputs[0]
                lp = None
                if sampling.logprobs:
                    lp = logprob_arrays(c.token_ids, c.logprobs, sampling.logprobs)
                queue.append((job, Result(completion=c.text, finish_reason=str(c.finish_reason),
                                          prompt_tokens=len(out.prompt_token_ids or ()),
                                          completion_tokens=len(c.token_ids), logprobs=lp)))
            if len(pending) < self.window // 2:
                refill()
            while queue:
                yield queue.popleft()

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[dict[str, np.ndarray]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in sequences], params, use_tqdm=False)
        res = []
        for i, (seq, start, out) in enumerate(zip(sequences, starts, outs)):
            plp = [None if d is None else {t: (v.logprob, v.rank) for t, v in d.items()} for d in out.prompt_logprobs]
            try:
                where = f"teacher '{self.info.model}' sequence {i}"
                res.append(prompt_logprob_arrays(list(seq), start, plp, k, where))
            except ValueError as e:
                raise CotdistillError(str(e)) from None
        return res

    def reload(self, cfg: VLLMTeacher) -> None:
        """Serve ``cfg.model`` from now on, in this engine: its weights loaded in place, cached prefixes (the old
        weights' keys and values) dropped. Only for a model whose ``reuse_key`` equals this engine's model's."""
        check_model_location(cfg.model, "teacher.model", model=True)
        path = Path(cfg.model)
        tie = tie_source(path, json.loads((path / "config.json").read_text()))
        self.llm.collective_rpc("load_checkpoint_dir", args=(str(path), tie or None))
        self.llm.reset_prefix_cache()
        self.info = self.info.model_copy(update={"model": cfg.model, "revision": cfg.revision,
                                                 "tokenizer": cfg.tokenizer or cfg.model})

    def close(self) -> None:
        shutdown_engine(getattr(self, "llm", None))
        self.llm = None


def shutdown_engine(llm) -> None:
    """Stop a ``vllm.LLM``'s engine core (and its process, where it has one); a dying engine's errors ignored."""
    if llm is None:
        return
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:
        pass
