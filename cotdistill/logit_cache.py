"""The teacher-logprob cache that the logits stage writes and logit_kd training reads (a leaf module).

``cache.parquet``, one row per kept trace: problem_id, sample_index, token_ids (the completion, its closing
token included), top_ids and top_logprobs (T x k, row-major; float16, -inf stored as LP_FLOOR); ``cache.json``:
tokenizer hash, k, mode, teacher, counts. ``in_pass_rows`` reads the same rows from generate's logprobs.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.chat import assistant_end_token, end_of_turn_ids
from cotdistill.errors import CotdistillError
from cotdistill.records import TokenLogprobs, trace_key
from cotdistill.store import iter_jsonl

CACHE, META, SKIPPED = "cache.parquet", "cache.json", "skipped.jsonl"
LP_FLOOR = -65504.0  # float16's lowest finite value: stands for -inf (a padded top-k slot)


def schema():
    import pyarrow as pa

    return pa.schema([("problem_id", pa.string()), ("sample_index", pa.int32()), ("token_ids", pa.list_(pa.int32())),
                      ("top_ids", pa.list_(pa.int32())), ("top_logprobs", pa.list_(pa.float16()))])


class CacheWriter:
    """Rows buffered into parquet row groups; the file appears under its name only when closed whole."""

    def __init__(self, path: Path, rows_per_group: int):
        import pyarrow.parquet as pq

        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(str(self.tmp), schema(), compression="zstd")
        self.rows_per_group, self.buf = rows_per_group, []
        self.rows = self.tokens = 0

    def add(self, problem_id: str, sample_index: int, token_ids, top_ids, top_lp) -> None:
        import numpy as np

        lp = np.maximum(np.asarray(top_lp, dtype=np.float32), LP_FLOOR).astype(np.float16)
        self.buf.append(
            {
                "problem_id": problem_id,
                "sample_index": int(sample_index),
                "token_ids": np.asarray(token_ids, dtype=np.int32),
                "top_ids": np.asarray(top_ids, np.int32).ravel(),
                "top_logprobs": lp.ravel(),
            }
        )
        self.rows += 1
        self.tokens += len(token_ids)
        if len(self.buf) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.buf:
            self.writer.write_table(pa.Table.from_pylist(self.buf, schema=schema()))
            self.buf = []

    def close(self) -> None:
        import os

        self.flush()
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def iter_cache(path: Path, batch_rows: int = 256):
    """(problem_id, sample_index, token_ids int32[T], top_ids int32[T, k], top_lp float32[T, k]) per row,
    one row group slice at a time (memory does not grow with the cache)."""
    import numpy as np
    import pyarrow.parquet as pq

    meta = read_meta(path.parent)
    k = meta["top_k"]
    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=batch_rows):
        cols = batch.to_pydict()
        for pid, si, tids, tops, lps in zip(cols["problem_id"], cols["sample_index"], cols["token_ids"],
                                            cols["top_ids"], cols["top_logprobs"]):
            t = len(tids)
            yield (pid, si, np.asarray(tids, np.int32), np.asarray(tops, np.int32).reshape(t, k),
                   np.asarray(lps, np.float32).reshape(t, k))


def read_skipped(folder: Path) -> set[tuple[str, int]]:
    """(problem_id, sample_index) of the kept traces the logits stage left out as longer than the teacher's
    context (its skipped.jsonl)."""
    path = Path(folder) / SKIPPED
    if not path.is_file():
        raise CotdistillError(f"{path} not found, but {Path(folder) / META} counts skipped traces; rebuild the cache "
                              f"(cotdistill logits)")
    out = set()
    for lineno, r in iter_jsonl(path, skip_torn_tail=False):
        if "problem_id" not in r or "sample_index" not in r:
            raise CotdistillError(f"{path}: line {lineno}: not a skipped-trace record; rebuild the cache "
                                  f"(cotdistill logits)")
        out.add((r["problem_id"], int(r["sample_index"])))
    return out


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    if not path.exists():
        raise CotdistillError(
            f"{path} not found; build the cache with `cotdistill logits` (or the run's logits stage)"
        )
    return json.loads(path.read_text())


def closing_token(tok) -> int:
    c = assistant_end_token(tok)
    return tok.eos_token_id if c is None else c


def in_pass_rows(path: Path, ds, tok, top_k: int | None = None):
    """The kept traces' records of generate's logprobs.jsonl, streamed in dataset order (an index of
    byte offsets, then one seek per trace: memory holds offsets, not logprobs), as iter_cache rows;
    the first ``top_k`` of each record's entries (all when None). The index is read at the call, so a missing
    file, a bad line or a kept trace without a record is a one-line error before anything is written."""
    path = Path(path)
    if not path.is_file():
        raise CotdistillError(f"logprobs: {path} not found; generate with sampling.logprobs=K, or use mode=score")
    keys = ds.select_columns(["problem_id", "sample_index"]).to_dict()
    wanted = {trace_key(p, s) for p, s in zip(keys["problem_id"], keys["sample_index"])}
    offsets: dict[str, tuple[int, int]] = {}  # key -> (byte offset, line number)
    with open(path, "rb") as f:
        pos = 0
        for lineno, line in enumerate(f, start=1):
            if line.endswith(b"\n") and line.strip():
                try:
                    head = json.loads(line)
                    key = trace_key(head["problem_id"], head["sample_index"])
                except (ValueError, KeyError, TypeError) as e:
                    what = f"no field {e}" if isinstance(e, KeyError) else "not a JSON object"
                    raise CotdistillError(f"{path}: line {lineno}: {what}; a generate logprobs.jsonl line holds "
                                          f"problem_id, sample_index and the token logprobs") from None
                if key in wanted:
                    _record(head, path, lineno, top_k)  # every kept trace's record whole, before any write
                    offsets[key] = (pos, lineno)
            pos += len(line)
    missing = [trace_key(p, s) for p, s in zip(keys["problem_id"], keys["sample_index"])
               if trace_key(p, s) not in offsets]
    if missing:
        raise CotdistillError(
            f"{path}: no logprob record for kept trace {missing[0]} ({len(missing)} kept traces have none); "
            f"it was generated without logprobs: build the cache with mode=score"
        )
    return _in_pass_records(path, keys, offsets, tok, top_k)


def _record(obj, path: Path, lineno: int, top_k: int | None) -> TokenLogprobs:
    """One logprobs.jsonl line as a record holding at least ``top_k`` entries, or a one-line error naming it."""
    from pydantic import ValidationError

    try:
        rec = TokenLogprobs.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise CotdistillError(f"{path}: line {lineno}: {field}: {err['msg']}; the file is not a generate "
                              f"logprobs.jsonl, or was damaged") from None
    if top_k and rec.top_k < top_k:
        raise CotdistillError(f"{path}: {trace_key(rec.problem_id, rec.sample_index)} holds top-{rec.top_k} "
                              f"logprobs, top_k is {top_k}; lower top_k or generate with sampling.logprobs={top_k}")
    return rec


def _in_pass_records(path: Path, keys: dict, offsets: dict, tok, top_k: int | None):
    import numpy as np

    closing, eot_ids = closing_token(tok), end_of_turn_ids(tok)
    with open(path, "rb") as f:
        for pid, si in zip(keys["problem_id"], keys["sample_index"]):
            at, _ = offsets[trace_key(pid, si)]
            f.seek(at)
            rec = TokenLogprobs.model_construct(**json.loads(f.readline()))  # validated by the index pass
            k = top_k or rec.top_k
            a = rec.arrays()
            comp, tids, tlp = a["token_ids"], a["top_ids"][:, :k], a["top_logprobs"][:, :k]
            if not len(comp) or int(comp[-1]) not in eot_ids:  # the closing token: no teacher entry (padded)
                comp = np.append(comp, closing).astype(np.int32)
                tids = np.vstack([tids, np.full((1, k), -1, np.int32)])
                tlp = np.vstack([tlp, np.full((1, k), -np.inf, np.float32)])
            yield pid, si, comp, tids, tlp, rec.tokenizer_hash
