"""The teacher-logit cache (`cotdistill logits`): scoring the kept traces after the filter agrees with
what vLLM captured while generating; the in-pass conversion keeps exactly those records; training
streams either; memory does not grow with the cache; mismatched caches are refused."""

import json
import tracemalloc

import datasets
import numpy as np
import pytest

from cotdistill import logit_cache, logits, train
from cotdistill.config import LogitsConfig, TrainConfig
from cotdistill.errors import CotdistillError


@pytest.fixture(scope="module")
def generated(tiny_model, vllm_teacher, tmp_path_factory):
    """A real generation with top-4 logprobs, filtered (everything kept but duplicates)."""
    from test_generate import make_cfg

    from cotdistill import filter as filter_stage
    from cotdistill import generate
    from cotdistill.config import FilterConfig

    d = tmp_path_factory.mktemp("lg")
    generate.run(make_cfg(tiny_model, d / "gen", **{"source.limit": 6, "sampling.logprobs": 4,
                                                     "sampling.temperature": 0.8}), teacher=vllm_teacher)
    filter_stage.run(FilterConfig(generate_dir=str(d / "gen"), output_dir=str(d / "flt"), require_correct=False,
                                  require_stop=False, format_check=False, near_dup_threshold=None, verify_workers=1,
                                  progress=False))
    return d


def cache(tiny_model, d, out, **kw):
    cfg = LogitsConfig(teacher=str(tiny_model), filter_dir=str(d / "flt"), output_dir=str(out), top_k=4,
                       batch_size=5, rows_per_group=4, progress=False, **kw)
    return logits.run(cfg)


@pytest.mark.slow
def test_score_after_filter_matches_the_in_pass_capture(tiny_model, generated, tmp_path):
    score = cache(tiny_model, generated, tmp_path / "score", dtype="float32")  # bf16 is checked below
    inpass = cache(tiny_model, generated, tmp_path / "inpass", mode="in_pass",
                   logprobs=str(generated / "gen/logprobs.jsonl"))
    ds = datasets.load_from_disk(str(generated / "flt/sft"))
    assert score["traces"] == inpass["traces"] == len(ds) > 4 and score["bytes_per_token"] > 0
    rows_s = list(logit_cache.iter_cache(tmp_path / "score" / logit_cache.CACHE))
    rows_i = list(logit_cache.iter_cache(tmp_path / "inpass" / logit_cache.CACHE))
    assert [(r[0], r[1]) for r in rows_s] == [(r[0], r[1]) for r in rows_i] == list(
        zip(ds["problem_id"], ds["sample_index"]))  # the dataset's order, both modes
    compared = 0
    for s, i in zip(rows_s, rows_i):
        assert s[2][-1] == i[2][-1] and s[3].shape[1] == 4  # both end with the closing token
        assert (s[3][-1] >= 0).all()  # scoring also gives the closing token its distribution
        # scoring re-tokenizes the text; vLLM's sampled ids can differ (a random model emits stray UTF-8
        # bytes). Where the two sequences agree so far, the context is the same: so must the distribution
        limit = min(len(s[2]), len(i[2])) - 1  # in_pass has no entry for the appended closing token
        n = next((t for t in range(limit) if s[2][t] != i[2][t]), limit)
        if n:
            assert (s[3][:n, 0] == i[3][:n, 0]).mean() > 0.95
            same = s[3][:n, 0] == i[3][:n, 0]
            np.testing.assert_allclose(s[4][:n, 0][same], i[4][:n, 0][same], atol=0.02)  # float16, two engines
            np.testing.assert_allclose(s[4][:n, 1:][same], i[4][:n, 1:][same], atol=0.05)
            compared += n
    assert compared >= 20
    # bf16 (the default on GPUs and AMX CPUs): the same distributions within bf16's precision
    cache(tiny_model, generated, tmp_path / "bf16", dtype="bfloat16")
    rows_b = list(logit_cache.iter_cache(tmp_path / "bf16" / logit_cache.CACHE))
    assert json.loads((tmp_path / "bf16/cache.json").read_text())["device"] == "cpu bfloat16"
    top1 = np.concatenate([s[3][:, 0] == b[3][:, 0] for s, b in zip(rows_s, rows_b)])
    err = np.concatenate([np.abs(s[4][:, 0] - b[4][:, 0])[s[3][:, 0] == b[3][:, 0]] for s, b in zip(rows_s, rows_b)])
    assert top1.mean() > 0.95 and err.mean() < 0.05


@pytest.mark.slow
def test_logit_kd_trains_from_the_cache_and_refuses_a_mismatched_one(tiny_model, tiny_student, generated, tmp_path):
    cache(tiny_model, generated, tmp_path / "score")
    base = dict(method="logit_kd", student=str(tiny_student), dataset_dir=str(generated / "flt"),
                logprobs=str(tmp_path / "score"), output_dir=str(tmp_path / "kd"), max_steps=3, logging_steps=1,
                per_device_train_batch_size=4, max_length=256, progress=False)
    s = train.run(TrainConfig.model_validate(base))
    assert s["steps"] == 3 and s["preflight"]["top_k"] == 4 and s["preflight"]["examples"] > 4
    assert (tmp_path / "kd/kd_examples.arrow").exists() and np.isfinite(s["train_loss"])
    meta = json.loads((tmp_path / "score/cache.json").read_text())
    (tmp_path / "score/cache.json").write_text(json.dumps({**meta, "tokenizer_hash": "0" * 16}))
    with pytest.raises(CotdistillError, match="cached logprobs come from tokenizer 0000000000000000"):
        train.run(TrainConfig.model_validate(base))
    (tmp_path / "score/cache.json").write_text(json.dumps({**meta, "traces": meta["traces"] + 1}))
    with pytest.raises(CotdistillError, match="built from another filter output: rebuild it"):
        train.run(TrainConfig.model_validate(base))
    (tmp_path / "score/cache.json").unlink()
    with pytest.raises(CotdistillError, match="cache.json not found; build the cache with `cotdistill logits`"):
        train.run(TrainConfig.model_validate(base))


@pytest.mark.slow
def test_in_pass_needs_a_record_for_every_kept_trace(tiny_model, generated, tmp_path):
    rows = (generated / "gen/logprobs.jsonl").read_text().splitlines(keepends=True)
    ds = datasets.load_from_disk(str(generated / "flt/sft"))
    first = f"{ds[0]['problem_id']}#{ds[0]['sample_index']}"
    kept = [r for r in rows if f"{json.loads(r)['problem_id']}#{json.loads(r)['sample_index']}" != first]
    (tmp_path / "lp.jsonl").write_text("".join(kept))
    with pytest.raises(CotdistillError, match=f"no logprob record for kept trace {first}"):
        cache(tiny_model, generated, tmp_path / "c", mode="in_pass", logprobs=str(tmp_path / "lp.jsonl"))
    assert not (tmp_path / "c" / logit_cache.CACHE).exists() and not (tmp_path / "c" / logit_cache.META).exists()
    with pytest.raises(CotdistillError, match="holds top-4 logprobs, top_k is 8"):
        logits.run(
            LogitsConfig(
                teacher=str(tiny_model),
                filter_dir=str(generated / "flt"),
                output_dir=str(tmp_path / "d"),
                mode="in_pass",
                logprobs=str(generated / "gen/logprobs.jsonl"),
                top_k=8,
                progress=False,
            )
        )


def synthetic(tok, tmp_path, n: int, k: int = 8, length: int = 48):
    """n kept traces whose completions are random token strings, and their cache (random top-k)."""
    rng = np.random.default_rng(0)
    special = set(tok.all_special_ids)
    vocab = np.array([i for i in range(len(tok)) if i not in special and tok.decode([i]).strip().isalnum()])
    closing = logits.closing_token(tok)
    rows, writer = [], logit_cache.CacheWriter(tmp_path / f"c{n}" / logit_cache.CACHE, 256)
    (tmp_path / f"c{n}").mkdir(exist_ok=True)
    for i in range(n):
        text = tok.decode(rng.choice(vocab, length).tolist())  # plain ASCII: round-trips through the tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        comp = ids + [closing]
        rows.append({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": text}],
                     "problem_id": f"p{i:06d}", "sample_index": 0})
        writer.add(f"p{i:06d}", 0, comp, rng.integers(0, len(vocab), (len(comp), k)),
                   -rng.random((len(comp), k)) * 5)
    writer.close()
    (tmp_path / f"c{n}" / logit_cache.META).write_text(json.dumps(
        {"tokenizer_hash": __import__("cotdistill.chat", fromlist=["x"]).tokenizer_hash(tok), "top_k": k,
         "traces": n, "tokens": writer.tokens}))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / f"d{n}" / "sft"))
    return tmp_path / f"d{n}", tmp_path / f"c{n}"


def test_building_examples_does_not_grow_with_the_cache(tiny_student, tmp_path):
    """Python memory while joining traces with their cache: 10x the traces, about the same peak (the
    examples go to a memory-mapped Arrow file). The old builder held every top-k list: 10x."""
    from cotdistill.chat import load_tokenizer
    from cotdistill.train.logit_kd import build_examples

    tok = load_tokenizer(str(tiny_student), "student")
    peaks = {}
    for n in (300, 3000):
        d, c = synthetic(tok, tmp_path, n)
        cfg = TrainConfig(method="logit_kd", student=str(tiny_student), dataset_dir=str(d), logprobs=str(c),
                          output_dir=str(tmp_path / "o"), max_length=512)
        ds = datasets.load_from_disk(str(d / "sft"))
        tracemalloc.start()
        count, dropped, k = build_examples(cfg, tok, ds, tmp_path / f"ex{n}.arrow")
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (count, dropped, k) == (n, 0, 8)
        built = datasets.Dataset.from_file(str(tmp_path / f"ex{n}.arrow"))
        assert len(built) == n and built[n - 1]["problem_id"] == f"p{n - 1:06d}"
    assert peaks[3000] < 1.6 * peaks[300], peaks  # measured 2026-11-25: 1.02x; holding the top-k lists: 2.1x


def test_traces_longer_than_the_teachers_context_are_skipped_or_refused_before_it_loads(tiny_student, tmp_path):
    """A filter output with two traces longer than the scoring teacher's positions: by default they are skipped
    (skipped.jsonl, counted in cache.json) and the rest scored; training joins the cache without them. With
    too_long: refuse the run stops before anything is written, naming them."""
    import shutil

    from cotdistill.chat import load_tokenizer
    from cotdistill.train.logit_kd import build_examples

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_student, teacher)
    cfg = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 64}))
    tok = load_tokenizer(str(teacher), "teacher")
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": " ".join(["7"] * (80 if i in (1, 4) else 3))}],
             "problem_id": f"p{i}", "sample_index": 0} for i in range(6)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "flt" / "sft"))
    base = dict(teacher=str(teacher), filter_dir=str(tmp_path / "flt"), top_k=4, progress=False)
    with pytest.raises(CotdistillError, match=r"^filter_dir: 2 trace\(s\) longer than teacher .* \(64 positions\): "
                                              r"p1#0 \(\d+ tokens\), p4#0 \(\d+ tokens\); set too_long: skip"):
        logits.run(LogitsConfig(**base, output_dir=str(tmp_path / "refused"), too_long="refuse"))
    assert not (tmp_path / "refused").exists()
    meta = logits.run(LogitsConfig(**base, output_dir=str(tmp_path / "c")))
    assert (meta["traces"], meta["skipped"]) == (4, 2)
    skipped = [json.loads(x) for x in (tmp_path / "c" / logit_cache.SKIPPED).read_text().splitlines()]
    assert [(s["problem_id"], s["limit"], s["reason"]) for s in skipped] == [("p1", 64, "too_long"),
                                                                            ("p4", 64, "too_long")]
    assert all(s["tokens"] > 64 for s in skipped)
    assert [r[0] for r in logit_cache.iter_cache(tmp_path / "c" / logit_cache.CACHE)] == ["p0", "p2", "p3", "p5"]
    tcfg = TrainConfig(method="logit_kd", student=str(tiny_student), dataset_dir=str(tmp_path / "flt"),
                       logprobs=str(tmp_path / "c"), output_dir=str(tmp_path / "o"), max_length=512)
    ds = datasets.load_from_disk(str(tmp_path / "flt" / "sft"))
    assert build_examples(tcfg, tok, ds, tmp_path / "ex.arrow") == (4, 0, 4)
    built = datasets.Dataset.from_file(str(tmp_path / "ex.arrow"))
    assert built["problem_id"] == ["p0", "p2", "p3", "p5"]
    # a cache rebuilt with a longer context leaves no stale skipped.jsonl behind
    (teacher / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 4096}))
    assert logits.run(LogitsConfig(**base, output_dir=str(tmp_path / "c")))["skipped"] == 0
    assert not (tmp_path / "c" / logit_cache.SKIPPED).exists()
