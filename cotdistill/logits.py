"""Teacher top-k logprobs for the kept traces only, in a columnar cache that training streams.

    cotdistill logits CONFIG.yaml [key=value ...]          # LogitsConfig; in a run: the `logits` stage

Only the traces the filter kept need soft targets (a quarter of them in the demo), so by default
(``mode: score``) the teacher scores them after the filter: one batched forward pass per batch of kept
sequences (transformers, on the GPU when there is one), top-k of the log-softmax at every completion
position, the closing end-of-turn token included. ``mode: in_pass`` instead keeps the logprobs
vLLM captured during generation (``generate.sampling.logprobs``) for the kept traces.

Cache (``OUTPUT_DIR/cache.parquet``), one row per kept trace, row groups of ``rows_per_group``:
    problem_id string, sample_index int32, token_ids list<int32> (the completion tokens, the closing
    token included), top_ids list<int32> (T x k, row-major), top_logprobs list<float16> (T x k)
and ``cache.json``: tokenizer hash, k, mode, teacher, counts, bytes per token. float16 keeps a logprob
within 1e-3 relative (about 0.01 nats at -10); -inf (padding) is stored as -65504.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from cotdistill.config import LogitsConfig, chunk_size
from cotdistill.env import machine
from cotdistill.lm_head import check_head, final_hidden, head_fn
from cotdistill.errors import CotdistillError, first_line

CACHE, META = "cache.parquet", "cache.json"
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
        self.buf.append({"problem_id": problem_id, "sample_index": int(sample_index),
                         "token_ids": np.asarray(token_ids, dtype=np.int32), "top_ids": np.asarray(top_ids, np.int32).ravel(),
                         "top_logprobs": lp.ravel()})
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


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    if not path.exists():
        raise CotdistillError(f"{path} not found; build the cache with `cotdistill logits` (or the run's logits stage)")
    return json.loads(path.read_text())


def _kept(cfg: LogitsConfig):
    from cotdistill.train.common import load_filter_split

    return load_filter_split(cfg.filter_dir, "sft", "filter_dir")


def _closing(tok) -> int:
    from cotdistill.train.common import assistant_end_token

    c = assistant_end_token(tok)
    return tok.eos_token_id if c is None else c


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16 (Sapphire Rapids and later, Zen 4+): bf16 matmuls several times faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def _score(cfg: LogitsConfig, ds, writer: CacheWriter, tok, bar) -> str:
    """Batched teacher forward over prompt + completion + closing token; top-k at completion positions.
    Windows of traces are sorted by length (little padding) and written back in dataset order."""
    import torch
    from transformers import AutoModelForCausalLM

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    auto = torch.bfloat16 if device.startswith("cuda") or cpu_has_fast_bf16() else torch.float32
    dtype = {"auto": auto, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.teacher, dtype=dtype).to(device).eval()
    except Exception as e:
        raise CotdistillError(f"teacher: cannot load '{cfg.teacher}' with transformers: {first_line(e)}") from None
    closing, k, window = _closing(tok), cfg.top_k, cfg.batch_size * 32
    step = chunk_size(cfg.chunk_tokens)
    if step:
        check_head(model, "teacher")
        head = head_fn(model)
    with torch.inference_mode():
        for w in range(0, len(ds), window):
            rows = ds[w:w + window]
            seqs = []
            for j, (msgs, pid, si) in enumerate(zip(rows["messages"], rows["problem_id"], rows["sample_index"])):
                prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"]
                comp = tok(msgs[-1]["content"], add_special_tokens=False)["input_ids"] + [closing]
                seqs.append((len(prompt) + len(comp), j, list(prompt), comp))
            seqs.sort(key=lambda x: x[0])
            done: dict[int, tuple] = {}
            for b in range(0, len(seqs), cfg.batch_size):
                chunk = seqs[b:b + cfg.batch_size]
                n = max(x[0] for x in chunk)
                ids = torch.full((len(chunk), n), tok.pad_token_id, dtype=torch.long)
                att = torch.zeros((len(chunk), n), dtype=torch.long)
                for r, (m, _, p, c) in enumerate(chunk):
                    ids[r, :m] = torch.tensor(p + c)
                    att[r, :m] = 1
                if step:  # logits of `step` positions at a time: memory O(step x V), not O(batch x length x V)
                    _, hidden = final_hidden(model, input_ids=ids.to(device), attention_mask=att.to(device))
                else:
                    logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits
                for r, (m, j, p, c) in enumerate(chunk):
                    # position t predicts token t + 1: completion tokens are predicted at len(p) - 1 .. m - 2
                    if step:
                        parts = [torch.log_softmax(head(hidden[r, a:min(a + step, m - 1)]).float(), -1).topk(k, -1)
                                 for a in range(len(p) - 1, m - 1, step)]
                        top_lp, top_ids = torch.cat([x[0] for x in parts]), torch.cat([x[1] for x in parts])
                    else:
                        top_lp, top_ids = torch.log_softmax(logits[r, len(p) - 1:m - 1].float(), -1).topk(k, dim=-1)
                    done[j] = (c, top_ids.cpu().numpy(), top_lp.cpu().numpy())
                bar.update(len(chunk))
            for j in range(len(seqs)):
                writer.add(rows["problem_id"][j], rows["sample_index"][j], *done.pop(j))
    return f"{device} {str(dtype).removeprefix('torch.')}"


def in_pass_rows(path: Path, ds, tok, top_k: int | None = None):
    """The kept traces' records of generate's logprobs.jsonl, streamed in dataset order (an index of
    byte offsets, then one seek per trace: memory holds offsets, not logprobs), as iter_cache rows;
    the first ``top_k`` of each record's entries (all when None)."""
    import numpy as np

    from cotdistill.records import TokenLogprobs, trace_key
    from cotdistill.train.common import end_of_turn_ids

    path = Path(path)
    if not path.is_file():
        raise CotdistillError(f"logprobs: {path} not found; generate with sampling.logprobs=K, or use mode=score")
    keys = ds.select_columns(["problem_id", "sample_index"]).to_dict()
    wanted = {trace_key(p, s) for p, s in zip(keys["problem_id"], keys["sample_index"])}
    offsets: dict[str, int] = {}
    with open(path, "rb") as f:
        pos = 0
        for line in f:
            if line.endswith(b"\n") and line.strip():
                head = json.loads(line)
                key = trace_key(head["problem_id"], head["sample_index"])
                if key in wanted:
                    offsets[key] = pos
            pos += len(line)
    closing, eot_ids = _closing(tok), end_of_turn_ids(tok)
    with open(path, "rb") as f:
        for pid, si in zip(keys["problem_id"], keys["sample_index"]):
            key = trace_key(pid, si)
            if key not in offsets:
                missing = sum(1 for p, s in zip(keys["problem_id"], keys["sample_index"]) if trace_key(p, s) not in offsets)
                raise CotdistillError(f"{path}: no logprob record for kept trace {key} ({missing} kept traces have none); "
                                      f"it was generated without logprobs: build the cache with mode=score")
            f.seek(offsets[key])
            rec = TokenLogprobs.model_validate_json(f.readline())
            k = top_k or rec.top_k
            if rec.top_k < k:
                raise CotdistillError(f"{path}: {key} holds top-{rec.top_k} logprobs, top_k is {k}; lower top_k or "
                                      f"generate with sampling.logprobs={k}")
            a = rec.arrays()
            comp, tids, tlp = a["token_ids"], a["top_ids"][:, :k], a["top_logprobs"][:, :k]
            if not len(comp) or int(comp[-1]) not in eot_ids:  # the closing token: no teacher entry (padded)
                comp = np.append(comp, closing).astype(np.int32)
                tids = np.vstack([tids, np.full((1, k), -1, np.int32)])
                tlp = np.vstack([tlp, np.full((1, k), -np.inf, np.float32)])
            yield pid, si, comp, tids, tlp, rec.tokenizer_hash


def _in_pass(cfg: LogitsConfig, ds, writer: CacheWriter, tok, bar) -> None:
    for pid, si, comp, tids, tlp, _ in in_pass_rows(Path(cfg.logprobs), ds, tok, cfg.top_k):
        writer.add(pid, si, comp, tids, tlp)
        bar.update(1)


def run(cfg: LogitsConfig) -> dict:
    from tqdm.auto import tqdm

    from cotdistill.loading import save_resolved
    from cotdistill.store import write_atomic
    from cotdistill.teachers.base import tokenizer_hash
    from cotdistill.train.common import load_tokenizer

    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    ds = _kept(cfg)
    tok = load_tokenizer(cfg.tokenizer or cfg.teacher, "teacher")
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # a half-rebuilt cache is never read as whole
    save_resolved(cfg, out / "config.yaml")
    writer = CacheWriter(out / CACHE, cfg.rows_per_group)
    bar = tqdm(total=len(ds), desc=f"logits ({cfg.mode})", unit="trace", disable=not cfg.progress, dynamic_ncols=True)
    device = None
    try:
        if cfg.mode == "score":
            device = _score(cfg, ds, writer, tok, bar)
        else:
            _in_pass(cfg, ds, writer, tok, bar)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    size = (out / CACHE).stat().st_size
    meta = {"mode": cfg.mode, "teacher": cfg.teacher, "device": device, "tokenizer_hash": tokenizer_hash(tok),
            "top_k": cfg.top_k, "traces": writer.rows, "tokens": writer.tokens, "bytes": size,
            "bytes_per_token": round(size / max(1, writer.tokens), 1), "wall_s": round(wall, 3),
            "tokens_per_s": round(writer.tokens / wall, 1) if wall > 0 else None, "machine": machine()}
    write_atomic(out / META, json.dumps(meta, indent=2) + "\n")
    return meta
