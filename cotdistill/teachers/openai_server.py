"""Teacher behind an OpenAI-compatible endpoint (a vLLM server, or any compatible service).

One HTTP request per (problem, sample) with its own seed; bounded concurrency; per-request
timeout; retries with exponential backoff on connection errors, timeouts, 429 and 5xx. The event
loop runs in a worker thread and hands finished samples to the caller through a queue, so the
caller writes them as they arrive. Logprob capture asks vLLM for token ids
(``return_tokens_as_token_ids``); an endpoint that cannot return them is refused clearly.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from cotdistill.chat import load_tokenizer, render_prompt_ids, tokenizer_hash
from cotdistill.config import OpenAITeacher, SamplingConfig
from cotdistill.errors import CotdistillError
from cotdistill.records import TeacherInfo
from cotdistill.teachers.base import Job, Result, prompt_logprob_arrays

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_DONE = object()


def _token_id(tok: str, where: str) -> int:
    if not tok.startswith("token_id:"):
        raise CotdistillError(
            f"{where}: the server returned token strings, not ids; top-k logprob capture needs a vLLM server "
            f"(return_tokens_as_token_ids) or sampling.logprobs unset"
        )
    return int(tok.split(":", 1)[1])


def _chat_logprobs(content: list[dict], k: int, where: str) -> dict[str, np.ndarray]:
    t = len(content)
    ids = np.empty(t, np.int32)
    sampled = np.empty(t, np.float32)
    top_ids = np.full((t, k), -1, np.int32)
    top_lp = np.full((t, k), -np.inf, np.float32)
    for i, item in enumerate(content):
        ids[i] = _token_id(item["token"], where)
        sampled[i] = item["logprob"]
        # vLLM lists the sampled token first; rank the alternatives ourselves, unique ids only
        alts: dict[int, float] = {}
        for alt in item.get("top_logprobs") or []:
            alts.setdefault(_token_id(alt["token"], where), max(alt["logprob"], -1e30))
        for j, (tid, lpv) in enumerate(sorted(alts.items(), key=lambda kv: -kv[1])[:k]):
            top_ids[i, j] = tid
            top_lp[i, j] = lpv
    return {"token_ids": ids, "sampled_logprobs": sampled, "top_ids": top_ids, "top_logprobs": top_lp}


def _completion_logprobs(lp: dict, k: int, where: str) -> dict[str, np.ndarray]:
    content = [
        {"token": tok, "logprob": lpv,
         "top_logprobs": sorted(({"token": a, "logprob": b} for a, b in (tops or {}).items()),
                                key=lambda x: -x["logprob"])}
        for tok, lpv, tops in zip(lp["tokens"], lp["token_logprobs"], lp.get("top_logprobs") or [])
    ]
    return _chat_logprobs(content, k, where)


class OpenAIServerTeacher:
    def __init__(self, cfg: OpenAITeacher, need_tokenizer: bool = False):
        import httpx

        self.cfg = cfg
        self.base = cfg.base_url.rstrip("/")
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "EMPTY"
        if cfg.api_key_env and not key:
            raise CotdistillError(f"teacher.api_key_env: environment variable '{cfg.api_key_env}' is not set")
        self.headers = {"Authorization": f"Bearer {key}"}
        self.tokenizer = None
        if cfg.tokenizer:
            self.tokenizer = load_tokenizer(cfg.tokenizer, "teacher.tokenizer", need_pad=False)
        elif need_tokenizer:
            raise CotdistillError(
                "teacher.tokenizer: logprob capture over a server needs the teacher's tokenizer (path or hub id) to "
                    "record its identity"
            )
        try:
            r = httpx.get(f"{self.base}/models", headers=self.headers, timeout=10.0)
        except httpx.HTTPError as e:
            raise CotdistillError(
                f"teacher.base_url: server {self.base} is unreachable ({type(e).__name__}: {e}); start it "
                f"(python -m vllm.entrypoints.openai.api_server --model ...) or fix teacher.base_url"
            ) from None
        if r.status_code != 200:
            raise CotdistillError(
                f"teacher.base_url: GET {self.base}/models answered HTTP {r.status_code}: {r.text[:200]}"
            )
        served = [m.get("id") for m in r.json().get("data", [])]
        if served and cfg.model not in served:
            raise CotdistillError(f"teacher.model: '{cfg.model}' is not served at {self.base}; served: {served}")
        version = None
        try:
            v = httpx.get(self.base.rsplit("/v1", 1)[0] + "/version", timeout=5.0)
            version = v.json().get("version") if v.status_code == 200 else None
        except Exception:
            pass
        self.info = TeacherInfo(
            backend="openai", model=cfg.model, tokenizer=cfg.tokenizer,
            tokenizer_hash=tokenizer_hash(self.tokenizer) if self.tokenizer is not None else None,
            engine_version=version,
        )

    # ------------------------------------------------------------------ request building
    def _payload(self, job: Job, s: SamplingConfig) -> tuple[str, dict]:
        body: dict = {"model": self.cfg.model, "n": 1, "temperature": s.temperature, "top_p": s.top_p,
                      "max_tokens": s.max_tokens, "seed": job.seed}
        if s.top_k != -1:
            body["top_k"] = s.top_k
        if s.stop:
            body["stop"] = list(s.stop)
        if self.cfg.api == "chat":
            body["messages"] = [m.model_dump() for m in job.messages]
            if s.logprobs:
                body.update(logprobs=True, top_logprobs=s.logprobs, return_tokens_as_token_ids=True)
            return "/chat/completions", body
        body["prompt"] = render_prompt_ids(self.tokenizer, job.messages)
        if s.logprobs:
            body.update(logprobs=s.logprobs, return_tokens_as_token_ids=True)
        return "/completions", body

    def _parse(self, job: Job, data: dict, s: SamplingConfig) -> Result:
        where = f"teacher.base_url {self.base} (problem '{job.problem_id}' sample {job.sample_index})"
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            if self.cfg.api == "chat":
                msg = choice["message"]
                text = msg.get("content") or ""
                reasoning = msg.get("reasoning_content") or msg.get("reasoning")
                if reasoning:  # servers with a reasoning parser split the <think> part off
                    text = f"<think>\n{reasoning}\n</think>\n{text}"
                lp = (choice.get("logprobs") or {}).get("content") if s.logprobs else None
                arrays = _chat_logprobs(lp, s.logprobs, where) if lp is not None else None
            else:
                text = choice["text"]
                arrays = _completion_logprobs(choice["logprobs"], s.logprobs, where) if s.logprobs else None
            if s.logprobs and arrays is None:
                raise CotdistillError(f"{where}: the response carries no logprobs although sampling.logprobs is set")
            return Result(completion=text, finish_reason=str(choice.get("finish_reason")),
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)), logprobs=arrays)
        except (KeyError, IndexError, TypeError) as e:
            raise CotdistillError(f"{where}: malformed response ({type(e).__name__}: {e})") from None

    async def _post(self, client, route: str, body: dict, refused, exhausted) -> dict:
        """POST with bounded retries and exponential backoff on transport errors and retryable statuses; the
        response's JSON, or a one-line error: ``refused(last)`` at once for other statuses, ``exhausted(last)``
        after the last attempt."""
        import httpx

        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                r = await client.post(self.base + route, json=body, headers=self.headers)
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        raise CotdistillError(refused(f"HTTP 200 whose body is not JSON: {r.text[:200]}")) from None
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code not in _RETRY_STATUS:
                    raise CotdistillError(refused(last))
            except httpx.TransportError as e:  # connect errors, timeouts, dropped connections
                last = f"{type(e).__name__}: {e}"
            if attempt < self.cfg.max_retries:
                await asyncio.sleep(self.cfg.backoff_s * (2 ** attempt) * (0.5 + random.random()))
        raise CotdistillError(exhausted(last))

    async def _one(self, client, sem, job: Job, s: SamplingConfig) -> tuple[Job, Result]:
        route, body = self._payload(job, s)
        async with sem:
            data = await self._post(
                client, route, body,
                lambda last: f"teacher server {self.base}{route} refused problem '{job.problem_id}': {last}",
                lambda last: f"teacher server {self.base}{route}: problem '{job.problem_id}' sample "
                             f"{job.sample_index} failed after {self.cfg.max_retries + 1} attempts ({last}); records "
                             f"so far are saved, re-run to resume")
        return job, self._parse(job, data, s)

    async def _run(self, jobs: Iterable[Job], s: SamplingConfig, out: queue.Queue) -> None:
        import httpx

        sem = asyncio.Semaphore(self.cfg.max_concurrency)
        limits = httpx.Limits(max_connections=self.cfg.max_concurrency)
        async with httpx.AsyncClient(timeout=self.cfg.timeout_s, limits=limits) as client:
            tasks: set[asyncio.Task] = set()
            for job in jobs:
                if len(tasks) >= 2 * self.cfg.max_concurrency:  # bounded in-flight task objects
                    done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        out.put(t.result())
                tasks.add(asyncio.create_task(self._one(client, sem, job, s)))
            for t in asyncio.as_completed(tasks):
                out.put(await t)

    def generate(self, jobs: Iterable[Job], sampling: SamplingConfig) -> Iterator[tuple[Job, Result]]:
        out: queue.Queue = queue.Queue()

        def worker():
            try:
                asyncio.run(self._run(jobs, sampling, out))
            except BaseException as e:  # handed to the caller's thread
                out.put(e)
            out.put(_DONE)

        th = threading.Thread(target=worker, daemon=True)
        th.start()
        while True:
            item = out.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                th.join()
                raise item
            yield item
        th.join()

    async def _score_one(self, client, sem, i: int, seq: list[int], start: int, k: int) -> dict[str, np.ndarray]:
        body = {"model": self.cfg.model, "prompt": list(seq), "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": k}
        where = f"teacher server {self.base}/completions (scoring sequence {i})"
        async with sem:
            data = await self._post(
                client, "/completions", body, lambda last: f"{where}: refused: {last}",
                lambda last: f"{where}: failed after {self.cfg.max_retries + 1} attempts ({last}); the run stops "
                             f"here and resumes from its last checkpoint")
        try:
            plp = [None if d is None else {int(t): (v["logprob"], v.get("rank")) for t, v in d.items()}
                   for d in data["choices"][0]["prompt_logprobs"]]
            return prompt_logprob_arrays(list(seq), start, plp, k, where)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise CotdistillError(f"{where}: malformed response ({type(e).__name__}: {e}); the server must be "
                                  f"vLLM's (prompt_logprobs)") from None

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[dict[str, np.ndarray]]:
        import httpx

        async def run():
            sem = asyncio.Semaphore(self.cfg.max_concurrency)
            async with httpx.AsyncClient(timeout=self.cfg.timeout_s) as client:
                return await asyncio.gather(*(self._score_one(client, sem, i, s, st, k)
                                              for i, (s, st) in enumerate(zip(sequences, starts))))

        return list(asyncio.run(run()))

    def close(self) -> None:
        pass
