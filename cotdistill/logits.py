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
and ``cache.json``: tokenizer hash, k, mode, teacher, counts, bytes per token. A kept trace longer than the
scoring teacher's context (its config's max_position_embeddings) is found before the teacher loads and skipped,
listed in ``skipped.jsonl`` (training leaves it out), or the run refused (``too_long: refuse``). float16 keeps a
logprob within 1e-3 relative (about 0.01 nats at -10); -inf (padding) is stored as -65504.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cotdistill.artifacts import load_filter_split
from cotdistill.chat import load_tokenizer, tokenizer_hash
from cotdistill.config import LogitsConfig, chunk_size
from cotdistill.context import model_context, too_long_traces
from cotdistill.env import cpu_has_fast_bf16, machine
from cotdistill.errors import CotdistillError, first_line
from cotdistill.lm_head import check_head, final_hidden, head_fn
from cotdistill.loading import save_resolved
from cotdistill.logit_cache import CACHE, META, SKIPPED, CacheWriter, closing_token, in_pass_rows
from cotdistill.store import write_atomic


def _kept(cfg: LogitsConfig):
    return load_filter_split(cfg.filter_dir, "sft", "filter_dir")


def _score(cfg: LogitsConfig, ds, writer: CacheWriter, tok, bar, skip: dict[int, dict]) -> str:
    """Batched teacher forward over prompt + completion + closing token; top-k at completion positions.
    Windows of traces are sorted by length (little padding) and written back in dataset order; rows in ``skip``
    (longer than the teacher's context) are left out."""
    import torch
    from transformers import AutoModelForCausalLM

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    auto = torch.bfloat16 if device.startswith("cuda") or cpu_has_fast_bf16() else torch.float32
    dtype = {"auto": auto, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.teacher, dtype=dtype).to(device).eval()
    except Exception as e:
        raise CotdistillError(f"teacher: cannot load '{cfg.teacher}' with transformers: {first_line(e)}") from None
    closing, k, window = closing_token(tok), cfg.top_k, cfg.batch_size * 32
    step = chunk_size(cfg.chunk_tokens)
    if step:
        check_head(model, "teacher")
        head = head_fn(model)
    with torch.inference_mode():
        for w in range(0, len(ds), window):
            rows = ds[w:w + window]
            seqs = []
            for j, msgs in enumerate(rows["messages"]):
                if w + j in skip:
                    continue
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
            for j in sorted(done):
                writer.add(rows["problem_id"][j], rows["sample_index"][j], *done.pop(j))
    return f"{device} {str(dtype).removeprefix('torch.')}"


def _named(over: dict[int, dict], n: int = 3) -> str:
    shown = ", ".join(f"{v['problem_id']}#{v['sample_index']} ({v.get('tokens', v.get('chars'))} "
                      f"{'tokens' if 'tokens' in v else 'characters'})" for v in list(over.values())[:n])
    return shown + (f" and {len(over) - n} more" if len(over) > n else "")


def _over_context(cfg: LogitsConfig, ds, tok) -> dict[int, dict]:
    """Kept traces the scoring teacher cannot take whole (prompt + completion + closing token > its positions),
    found before the teacher loads: skipped (``too_long: skip``, the default) or the run refused, naming them.
    in_pass reads what the generating engine already scored: nothing to check."""
    limit = model_context(cfg.teacher) if cfg.mode == "score" else None
    if limit is None:
        return {}
    over = too_long_traces(ds, tok, limit, cfg.teacher)
    if over and cfg.too_long == "refuse":
        raise CotdistillError(f"filter_dir: {len(over)} trace(s) longer than teacher '{cfg.teacher}' takes ({limit} "
                              f"positions): {_named(over)}; set too_long: skip to score the others, or use a teacher "
                              f"with a longer context")
    return over


def _in_pass(records, writer: CacheWriter, bar) -> None:
    for pid, si, comp, tids, tlp, _ in records:
        writer.add(pid, si, comp, tids, tlp)
        bar.update(1)


def run(cfg: LogitsConfig) -> dict:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    ds = _kept(cfg)
    tok = load_tokenizer(cfg.tokenizer or cfg.teacher, "teacher")
    skip = _over_context(cfg, ds, tok)
    # in_pass: the logprobs file's index (every kept trace has a record) is read before anything is written
    records = in_pass_rows(Path(cfg.logprobs), ds, tok, cfg.top_k) if cfg.mode == "in_pass" else None
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # a half-rebuilt cache is never read as whole
    save_resolved(cfg, out / "config.yaml")
    if skip:
        write_atomic(out / SKIPPED, "".join(json.dumps({**v, "reason": "too_long"}) + "\n" for v in skip.values()))
        print(f"logits: warning: skipped {len(skip)} trace(s) longer than teacher '{cfg.teacher}' takes "
              f"({next(iter(skip.values()))['limit']} positions): {_named(skip)}; listed in {out / SKIPPED}; "
              f"training leaves them out", file=sys.stderr)
    else:
        (out / SKIPPED).unlink(missing_ok=True)
    writer = CacheWriter(out / CACHE, cfg.rows_per_group)
    bar = tqdm(total=len(ds) - len(skip), desc=f"logits ({cfg.mode})", unit="trace", disable=not cfg.progress,
               dynamic_ncols=True)
    device = None
    try:
        if cfg.mode == "score":
            device = _score(cfg, ds, writer, tok, bar, skip)
        else:
            _in_pass(records, writer, bar)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    size = (out / CACHE).stat().st_size
    meta = {"mode": cfg.mode, "teacher": cfg.teacher, "device": device, "tokenizer_hash": tokenizer_hash(tok),
            "top_k": cfg.top_k, "traces": writer.rows, "skipped": len(skip), "tokens": writer.tokens, "bytes": size,
            "bytes_per_token": round(size / max(1, writer.tokens), 1), "wall_s": round(wall, 3),
            "tokens_per_s": round(writer.tokens / wall, 1) if wall > 0 else None, "machine": machine()}
    write_atomic(out / META, json.dumps(meta, indent=2) + "\n")
    return meta
