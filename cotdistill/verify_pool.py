"""Run verification in worker processes with a hard per-item time limit, and audit JSONL files.

    cotdistill verify INPUT.jsonl --output OUTPUT.jsonl [--workers 2] [--timeout 10]

Each input line needs ``completion`` and ``gold`` (optional ``rg_task``/``rg_entry`` select the
reasoning-gym scorer; a gold letter A-J is multiple choice, and optional ``choices`` lets an answer name
an option by its text); every other field is kept. Output lines add ``extracted``, ``correct``
(true/false/null) and ``verify_reason``. Workers run math-verify in their main thread (its
timeouts use signals); a worker that overruns the hard limit is killed and replaced, and that item
gets ``correct: null, verify_reason: "timeout"``. The output file is written atomically.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING

from cotdistill import verify
from cotdistill.errors import CotdistillError, first_line
from cotdistill.records import Verdict
from cotdistill.store import iter_jsonl

if TYPE_CHECKING:
    from cotdistill.records import Problem


def _worker(conn) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        idx, item = msg
        t = time.perf_counter()
        try:
            v = verify.verify_completion(
                item["completion"], item.get("gold"), item.get("rg_task"), item.get("rg_entry"), item.get("choices"),
                item.get("tests")
            )
        except Exception as e:  # a verifier crash on one item is "cannot tell", not a dead run, and says why
            v = Verdict(extracted=None, correct=None, reason="error", detail=f"{type(e).__name__}: {first_line(e)}")
        fmt = None
        if item.get("format") is not None:  # the filter's format check, under the same per-item limit
            try:
                fmt = verify.check_format(item["completion"], *item["format"])
            except Exception as e:
                fmt = f"format check failed: {type(e).__name__}: {first_line(e)}"
        conn.send((idx, v.model_dump(), time.perf_counter() - t, fmt))


def _code_budget(item: dict) -> float:
    """A code problem's programs run one sandboxed process per test: the item gets their time on top (counted after
    decoding, so APPS's tests given as one JSON string count test by test)."""
    tests = item.get("tests")
    if tests is None:
        return 0.0
    from cotdistill.code_verify import normalise_tests
    from cotdistill.sandbox import Limits

    try:
        n = len(normalise_tests(tests))
    except ValueError:
        n = 1
    return n * (Limits().wall_s + 1.0)


class VerifyPool:
    """``workers`` processes; ``imap`` yields (index, Verdict, seconds) as items finish."""

    def __init__(self, workers: int = 0, timeout_s: float = 10.0):
        self.n = workers or max(1, os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("fork")
        self._procs: list[list] = [self._spawn() for _ in range(self.n)]
        self.formats: dict[int, str | None] = {}  # item index -> check_format's answer, for items that asked

    def _spawn(self) -> list:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_worker, args=(child,), daemon=True)
        p.start()
        child.close()
        return [p, parent, None, 0.0, self.timeout_s]  # process, pipe, current index, start time, time limit

    def imap(self, items: Iterable[dict]) -> Iterator[tuple[int, Verdict, float]]:
        todo = deque(enumerate(items))
        busy = 0
        while todo or busy:
            for slot in self._procs:
                if slot[2] is None and todo:
                    idx, item = todo.popleft()
                    slot[1].send((idx, item))
                    slot[2], slot[3] = idx, time.monotonic()
                    slot[4] = self.timeout_s + _code_budget(item)
                    busy += 1
            ready = wait([s[1] for s in self._procs if s[2] is not None], timeout=0.05)
            for i, slot in enumerate(self._procs):
                if slot[2] is not None and slot[1] in ready:
                    try:
                        idx, v, dt, self.formats[slot[2]] = slot[1].recv()
                    except (EOFError, OSError):  # the worker died (the OOM killer, a signal): this item's error only
                        idx, dt = slot[2], time.monotonic() - slot[3]
                        slot[0].join()
                        code = slot[0].exitcode
                        self._procs[i] = self._spawn()
                        v = Verdict(extracted=None, correct=None, reason="error",
                                    detail=f"the verify worker died (exit code {code}; out of memory?)").model_dump()
                        self.formats[idx] = "the verify worker died on this trace"
                    slot[2] = None
                    busy -= 1
                    yield idx, Verdict(**v), dt
            now = time.monotonic()
            for i, slot in enumerate(self._procs):
                if slot[2] is not None and now - slot[3] > slot[4]:
                    idx, dt = slot[2], now - slot[3]
                    slot[0].kill()
                    slot[0].join()
                    self._procs[i] = self._spawn()
                    busy -= 1
                    self.formats[idx] = "verification ran past its time limit"
                    yield idx, Verdict(extracted=None, correct=None, reason="timeout"), dt

    def close(self) -> None:
        for p, conn, *_ in self._procs:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
        self._procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def verify_pairs(pairs: list[tuple[str, Problem]], workers: int = 0, timeout_s: float = 10.0,
                 progress: bool = False, desc: str = "verify") -> list[Verdict]:
    """Verdicts for (completion, problem) pairs, in order; reasoning-gym problems use their scorer."""
    return verify_and_check(pairs, None, workers, timeout_s, progress, desc)[0]


def verify_and_check(pairs: list[tuple[str, Problem]], formats: list[tuple[bool, str]] | None, workers: int = 0,
                     timeout_s: float = 10.0, progress: bool = False,
                     desc: str = "verify") -> tuple[list[Verdict], list[str | None]]:
    """Verdicts, and with ``formats`` ((think, answer_format) per pair) each completion's format problem (None:
    well-formed), both computed in the pool under one per-item limit: a hostile trace costs its budget, no more."""
    from tqdm.auto import tqdm

    items = []
    for i, (completion, p) in enumerate(pairs):
        rg = p.metadata.get("rg_task")
        items.append({"completion": completion, "gold": p.answer, "rg_task": rg,
                      "rg_entry": p.metadata.get("rg_entry") if rg else None, "choices": p.metadata.get("choices"),
                      "tests": p.metadata.get("tests"), "format": formats[i] if formats else None})
    out: list[Verdict | None] = [None] * len(items)
    with VerifyPool(workers, timeout_s) as pool:
        for idx, v, _ in tqdm(pool.imap(items), total=len(items), desc=desc, disable=not progress):
            out[idx] = v
        fmts = [pool.formats.get(i) for i in range(len(items))]
    return out, fmts


def audit_file(input_path: str | Path, output_path: str | Path, workers: int = 0,
               timeout_s: float = 10.0, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    src, dst = Path(input_path), Path(output_path)
    if not src.is_file():
        raise CotdistillError(f"{src}: input file not found")
    rows = []
    for lineno, obj in iter_jsonl(src, skip_torn_tail=False):
        for field in ("completion", "gold"):
            if field not in obj:
                raise CotdistillError(
                    f"{src}: line {lineno}: missing field '{field}'; each line needs 'completion' and 'gold'"
                )
        if not isinstance(obj["completion"], str):
            raise CotdistillError(f"{src}: line {lineno}: field 'completion' must be a string")
        if obj["gold"] is not None and not isinstance(obj["gold"], str | int | float):
            raise CotdistillError(f"{src}: line {lineno}: field 'gold' must be a string, a number or null")
        if obj["gold"] is not None:
            obj["gold"] = str(obj["gold"])
        rows.append(obj)
    if not rows:
        raise CotdistillError(f"{src}: no records to verify")
    verdicts: list[Verdict | None] = [None] * len(rows)
    worst, t0 = 0.0, time.perf_counter()
    with VerifyPool(workers, timeout_s) as pool, tqdm(total=len(rows), desc="verify", disable=not progress) as bar:
        for idx, v, dt in pool.imap(rows):
            verdicts[idx] = v
            worst = max(worst, dt)
            bar.update(1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(tmp, "w") as f:
        for row, v in zip(rows, verdicts):
            f.write(json.dumps({**row, "extracted": v.extracted, "correct": v.correct,
                                "verify_reason": v.reason}, ensure_ascii=False) + "\n")
    os.replace(tmp, dst)
    counts = Counter("correct" if v.correct else "cannot_tell" if v.correct is None else "incorrect" for v in verdicts)
    return {"records": len(rows), **{k: counts.get(k, 0) for k in ("correct", "incorrect", "cannot_tell")},
            "reasons": dict(Counter(v.reason for v in verdicts)), "wall_s": round(time.perf_counter() - t0, 3),
            "worst_item_s": round(worst, 3), "output": str(dst)}
