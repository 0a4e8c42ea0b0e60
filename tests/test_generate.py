"""Generation stage through a real vLLM engine (one per test session): records, lineage,
logprob side file, per-sample seeds, resume, shards and merge, bad input."""

import json

import numpy as np
import pytest
from conftest import ROOT, auto_engine_dtype, read_jsonl, teacher_dict, write_jsonl

from cotdistill import generate
from cotdistill.config import GenerateConfig
from cotdistill.errors import CotdistillError
from cotdistill.records import TokenLogprobs, Trace
from cotdistill.shards import merge
from cotdistill.teachers import derive_seed


def make_cfg(tiny_model, out, **over) -> GenerateConfig:
    d = {
        "source": {
            "kind": "hf",
            "path": str(ROOT / "data/arithmetic_test.jsonl"),
            "fields": {"id": "id"},
            "limit": 10,
        },
        "prompt": {"template": "math_boxed_think"},
        "teacher": teacher_dict(tiny_model),
        "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 24, "seed": 11},
        "output_dir": str(out),
        "progress": False,
        "flush_every": 4,
    }
    for k, v in over.items():
        node = d
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return GenerateConfig.model_validate(d)


def keys(path):
    return [(r["problem_id"], r["sample_index"]) for r in read_jsonl(path)]


def test_records_lineage_and_logprobs(tiny_model, vllm_teacher, tmp_path):
    cfg = make_cfg(tiny_model, tmp_path, **{"sampling.logprobs": 4})
    summary = generate.run(cfg, teacher=vllm_teacher)
    assert summary["traces"] == summary["traces_expected"] == 30 and summary["complete"]
    assert sum(summary["finish_reasons"].values()) == 30 and summary["completion_tokens"] > 0
    assert json.loads((tmp_path / "summary.json").read_text())["traces"] == 30
    assert (tmp_path / "config.yaml").exists() and len(read_jsonl(tmp_path / "problems.jsonl")) == 10
    traces = [Trace.model_validate(r) for r in read_jsonl(tmp_path / "traces.jsonl")]
    assert len({t.key for t in traces}) == 30
    t = traces[0]
    assert t.teacher.backend == "vllm" and t.teacher.tokenizer_hash == vllm_teacher.info.tokenizer_hash
    assert t.template.name == "math_boxed_think" and len(t.template.hash) == 16
    assert t.messages[0].role == "system" and t.sampling.n == 3 and t.sampling.logprobs == 4
    assert t.seed == derive_seed(11, t.problem_id, t.sample_index)
    assert t.teacher.dtype == auto_engine_dtype()  # what the engine ran
    assert t.finish_reason in {"stop", "length"} and t.prompt_tokens > 10

    lps = {lp.key: lp for lp in (TokenLogprobs.model_validate(r) for r in read_jsonl(tmp_path / "logprobs.jsonl"))}
    assert set(lps) == {t.key for t in traces}
    tok = vllm_teacher.tokenizer
    for tr in traces:
        lp = lps[tr.key]
        a = lp.arrays()
        assert lp.tokenizer_hash == tr.teacher.tokenizer_hash and lp.num_tokens == tr.completion_tokens
        assert a["top_ids"].shape == (tr.completion_tokens, 4)
        assert np.all(np.diff(a["top_logprobs"], axis=1) <= 1e-6)  # ranked
        assert np.all(a["sampled_logprobs"] <= a["top_logprobs"][:, 0] + 1e-4)
        in_top = a["top_ids"][:, 0] == a["token_ids"]
        np.testing.assert_allclose(a["sampled_logprobs"][in_top], a["top_logprobs"][in_top, 0], atol=1e-4)
        text = tok.decode(a["token_ids"].tolist(), skip_special_tokens=True)
        # vLLM holds back a trailing incomplete UTF-8 byte sequence; random weights produce some
        assert text.rstrip("\ufffd") == tr.completion.rstrip("\ufffd")


def test_seeds_make_traces_independent_of_sharding(tiny_model, vllm_teacher, tmp_path):
    whole = make_cfg(tiny_model, tmp_path / "whole")
    generate.run(whole, teacher=vllm_teacher)
    for i in range(2):
        generate.run(make_cfg(tiny_model, tmp_path / "sharded", **{"shard": {"index": i, "count": 2}}),
                     teacher=vllm_teacher)
    shard_sizes = [len(read_jsonl(tmp_path / "sharded" / f"traces-0000{i}-of-00002.jsonl")) for i in range(2)]
    assert sum(shard_sizes) == 30 and min(shard_sizes) > 0
    summary = merge(tmp_path / "sharded")
    assert summary["traces"] == 30 and summary["merged_shards"] == 2
    a = {(r["problem_id"], r["sample_index"]): r["completion"] for r in read_jsonl(tmp_path / "whole/traces.jsonl")}
    b = {(r["problem_id"], r["sample_index"]): r["completion"] for r in read_jsonl(tmp_path / "sharded/traces.jsonl")}
    assert a == b
    assert len(set(a.values())) > 5  # temperature 1: samples differ


def test_resume_after_torn_write_generates_only_missing(tiny_model, vllm_teacher, tmp_path):
    cfg = make_cfg(tiny_model, tmp_path, **{"sampling.logprobs": 2})
    generate.run(cfg, teacher=vllm_teacher)
    path = tmp_path / "traces.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    removed = {
        (json.loads(x)["problem_id"], json.loads(x)["sample_index"]): json.loads(x)["completion"] for x in lines[-5:]
    }
    path.write_text("".join(lines[:-5]) + lines[-5][: len(lines[-5]) // 2])  # 4 gone + 1 torn
    summary = generate.run(cfg, teacher=vllm_teacher)
    assert summary["resumed_from"] == 25 and summary["written_this_run"] == 5 and summary["traces"] == 30
    k = keys(path)
    assert len(k) == len(set(k)) == 30
    assert sorted(keys(tmp_path / "logprobs.jsonl")) == sorted(k)  # orphans dropped, no duplicates
    again = {(r["problem_id"], r["sample_index"]): r["completion"] for r in read_jsonl(path)}
    assert all(again[key] == text for key, text in removed.items())
    # a finished run re-run does nothing
    assert generate.run(cfg, teacher=vllm_teacher)["written_this_run"] == 0


def test_resume_refuses_a_different_config(tiny_model, vllm_teacher, tmp_path):
    generate.run(make_cfg(tiny_model, tmp_path, **{"source.limit": 2}), teacher=vllm_teacher)
    with pytest.raises(CotdistillError, match=r"different config \(differs in: sampling\)"):
        generate.run(make_cfg(tiny_model, tmp_path, **{"source.limit": 2, "sampling.temperature": 0.2}),
                     teacher=vllm_teacher)


def test_resume_accepts_a_moved_source_with_the_same_problems_and_refuses_other_problems(
        tiny_model, vllm_teacher, tmp_path, monkeypatch):
    import shutil

    src = tmp_path / "a.jsonl"
    shutil.copy(ROOT / "data/arithmetic_test.jsonl", src)
    generate.run(make_cfg(tiny_model, tmp_path / "out", **{"source.path": str(src), "source.limit": 2}),
                 teacher=vllm_teacher)
    moved = tmp_path / "b.jsonl"
    src.rename(moved)
    # the same problems from the new path: the finished run is found finished, and no engine is built
    monkeypatch.setattr("cotdistill.sampling.make_teacher", lambda *a, **k: pytest.fail("an engine was built"))
    summary = generate.run(make_cfg(tiny_model, tmp_path / "out", **{"source.path": str(moved), "source.limit": 2}),
                           teacher=None)
    assert summary["written_this_run"] == 0 and summary["traces"] == 6 and summary["complete"]
    assert str(moved) in (tmp_path / "out/config.yaml").read_text()
    # another path holding other problems is another run
    other = tmp_path / "c.jsonl"
    other.write_text("".join(moved.read_text().splitlines(keepends=True)[2:4]))
    with pytest.raises(CotdistillError, match=r"different config \(differs in: source\)"):
        generate.run(make_cfg(tiny_model, tmp_path / "out", **{"source.path": str(other), "source.limit": 2}),
                     teacher=vllm_teacher)


def test_resume_generates_added_problems_and_refuses_a_problem_edited_in_place(tiny_model, vllm_teacher, tmp_path):
    rows = (ROOT / "data/arithmetic_test.jsonl").read_text().splitlines(keepends=True)
    src = tmp_path / "p.jsonl"
    src.write_text("".join(rows[:2]))
    cfg = make_cfg(tiny_model, tmp_path / "out", **{"source.path": str(src), "source.limit": None})
    generate.run(cfg, teacher=vllm_teacher)
    src.write_text("".join(rows[:3]))  # one problem added: resuming generates its traces only
    summary = generate.run(cfg, teacher=vllm_teacher)
    assert summary["resumed_from"] == 6 and summary["written_this_run"] == 3 and summary["traces"] == 9
    edited = json.loads(rows[1]) | {"question": "Compute 1 + 1."}
    src.write_text(rows[0] + json.dumps(edited) + "\n" + rows[2])  # the same config, another question
    with pytest.raises(CotdistillError, match=r"problem 'arith-test-0001' changed \(question\) since .*traces.jsonl"):
        generate.run(cfg, teacher=vllm_teacher)
    src.write_text(rows[0] + rows[2])
    with pytest.raises(CotdistillError, match=r"problem 'arith-test-0001' is gone"):
        generate.run(cfg, teacher=vllm_teacher)
    assert len(read_jsonl(tmp_path / "out/traces.jsonl")) == 9  # nothing written by the refused runs


def test_resume_refuses_an_edited_template_of_the_same_name(tiny_model, vllm_teacher, tmp_path):
    import shutil

    import yaml

    tmpl = tmp_path / "mine.yaml"
    shutil.copy(ROOT / "prompts" / "arithmetic_cot.yaml", tmpl)
    out = tmp_path / "out"
    generate.run(make_cfg(tiny_model, out, **{"source.limit": 2, "prompt.template": str(tmpl)}), teacher=vllm_teacher)
    spec = yaml.safe_load(tmpl.read_text())
    spec["examples"] = [{"user": "Compute 1 + 1.", "assistant": "\\boxed{2}"}]  # a few-shot turn, same system/user
    tmpl.write_text(yaml.safe_dump(spec))
    with pytest.raises(CotdistillError, match=r"rendered with another version of template .*use a new output_dir"):
        generate.run(
            make_cfg(tiny_model, out, **{"source.limit": 2, "prompt.template": str(tmpl)}), teacher=vllm_teacher
        )


def test_merge_reports_missing_shards_and_traces(tiny_model, vllm_teacher, tmp_path):
    generate.run(make_cfg(tiny_model, tmp_path, shard={"index": 0, "count": 2}), teacher=vllm_teacher)
    with pytest.raises(CotdistillError, match=r"shards \[1\] of 2 never ran"):
        merge(tmp_path)
    generate.run(make_cfg(tiny_model, tmp_path, shard={"index": 1, "count": 2}), teacher=vllm_teacher)
    p = tmp_path / "traces-00001-of-00002.jsonl"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(CotdistillError, match=r"1 of 30 traces missing"):
        merge(tmp_path)
    generate.run(make_cfg(tiny_model, tmp_path, shard={"index": 1, "count": 2}), teacher=vllm_teacher)
    assert merge(tmp_path)["traces"] == 30


def test_merge_checks_configs_and_logprob_records(tiny_model, vllm_teacher, tmp_path):
    kw = {"source.limit": 4, "sampling.logprobs": 2}
    generate.run(make_cfg(tiny_model, tmp_path, shard={"index": 0, "count": 2}, **kw), teacher=vllm_teacher)
    generate.run(make_cfg(tiny_model, tmp_path / "other", shard={"index": 1, "count": 2}, **kw,
                          **{"sampling.temperature": 0.5}), teacher=vllm_teacher)
    for f in (tmp_path / "other").glob("*-00001-of-00002.*"):
        f.rename(tmp_path / f.name)
    with pytest.raises(
        CotdistillError, match=r"shard 1 was run with another config than shard 0 \(differs in: sampling\)"
    ):
        merge(tmp_path)
    for f in tmp_path.glob("*-00001-of-00002.*"):
        f.unlink()
    generate.run(make_cfg(tiny_model, tmp_path, shard={"index": 1, "count": 2}, **kw), teacher=vllm_teacher)
    lp = next(f for f in tmp_path.glob("logprobs-*-of-00002.jsonl") if f.read_text().strip())
    lines = lp.read_text().splitlines(keepends=True)
    lp.write_text("".join(lines + lines[:1]))
    with pytest.raises(CotdistillError, match="duplicated keys"):
        merge(tmp_path)
    lp.write_text("".join(lines[1:]))
    with pytest.raises(CotdistillError, match="traces and logprob records do not pair up"):
        merge(tmp_path)
    lp.write_text("".join(lines))
    assert merge(tmp_path)["traces"] == 12


def test_bad_input_fails_before_writing(tiny_model, tmp_path):
    tmpl = tmp_path / "t.yaml"
    tmpl.write_text("name: needs_style\nuser: '{{ question }} {{ style }}'\n")
    out = tmp_path / "out"
    with pytest.raises(CotdistillError, match="variable 'style' is missing"):
        generate.run(make_cfg(tiny_model, out, **{"prompt.template": str(tmpl)}))
    assert not out.exists()
    with pytest.raises(CotdistillError, match="model path '/no/such/model' does not exist"):
        generate.run(make_cfg(tiny_model, out, **{"teacher.model": "/no/such/model"}))


@pytest.mark.slow
def test_extra_teachers_write_their_own_samples_with_lineage(tiny_model, tiny_student, tmp_path):
    """Multi-teacher traces: teacher k writes sample indices k*n .. k*n + n - 1, each trace names its
    teacher, a killed run resumes inside the second teacher's share, and the filter counts per teacher.
    Through the CLI in a subprocess: two engines one after the other, as a user runs it (in this test
    process a second in-process engine would tear down the session engine's process groups)."""
    import os
    import subprocess
    import sys

    import yaml

    from cotdistill import filter as filter_stage
    from cotdistill.config import FilterConfig

    cfg = make_cfg(tiny_model, tmp_path / "gen", **{"source.limit": 4, "sampling.n": 2}).model_dump(mode="json")
    cfg["extra_teachers"] = [teacher_dict(tiny_student)]
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # in-process engines start faster

    def cli():
        p = subprocess.run([sys.executable, "-m", "cotdistill", "generate", str(tmp_path / "gen.yaml")], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads((tmp_path / "gen/summary.json").read_text())

    s = cli()
    assert s["traces"] == 16 and s["complete"] and s["teachers"] == 2
    by = {
        (r["problem_id"], r["sample_index"]): r["teacher"]["model"] for r in read_jsonl(tmp_path / "gen/traces.jsonl")
    }
    assert {i for (_, i), m in by.items() if m == str(tiny_model)} == {0, 1}
    assert {i for (_, i), m in by.items() if m == str(tiny_student)} == {2, 3}
    path = tmp_path / "gen/traces.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))  # the second teacher was killed before its last 3 traces
    again = cli()
    assert again["written_this_run"] == 3 and again["traces"] == 16
    k = keys(path)
    assert len(set(k)) == len(k) == 16
    rep = filter_stage.run(FilterConfig(generate_dir=str(tmp_path / "gen"), output_dir=str(tmp_path / "f"),
                                        verify_workers=1, progress=False, require_correct=False, format_check=False))
    report = json.loads((tmp_path / "f/filter_report.json").read_text())
    assert {m: c["traces"] for m, c in report["per_teacher"].items()} == {str(tiny_model): 8, str(tiny_student): 8}
    assert sum(c["kept"] for c in report["per_teacher"].values()) == rep["kept"]
    assert "## Traces per teacher" in (tmp_path / "f/README.md").read_text()


FP32_HERE = """
import json, platform, sys
from pathlib import Path
from cotdistill import env, generate
from cotdistill.config import GenerateConfig
cfg, out = json.loads(sys.argv[1]), Path(sys.argv[2])
asis = GenerateConfig.model_validate({**cfg, "output_dir": str(out / "asis")})
generate.run(asis)
platform.machine, env.cpu_has_fast_bf16 = (lambda: "x86_64"), (lambda: False)  # an AVX2-only x86 CPU
generate.run(GenerateConfig.model_validate({**cfg, "output_dir": str(out / "fp32")}))
"""


@pytest.mark.slow
def test_cpus_without_fast_bf16_serve_the_teacher_in_float32(tiny_model, tmp_path):
    """On an x86 CPU without AMX or AVX512-BF16 (the AVX2-only machines of our kind) vLLM's bf16 matmuls take torch's
    generic loop, several times slower than fp32 (scripts/bench_cpu_dtype.py): there ``dtype: auto`` starts a float32
    engine, and every trace records what its teacher ran in. Greedy, same problems: the same model, so the traces
    mostly agree with this machine's engine (bf16 where the CPU has fast bf16), only the rounding differs. In a process
    of its own: two in-process engines, one after the other."""
    import subprocess
    import sys

    cfg = make_cfg(tiny_model, tmp_path, **{"sampling.temperature": 0.0}).model_dump(mode="json")
    p = subprocess.run([sys.executable, "-c", FP32_HERE, json.dumps(cfg), str(tmp_path)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    fp32 = {(t["problem_id"], t["sample_index"]): t for t in read_jsonl(tmp_path / "fp32/traces.jsonl")}
    asis = {(t["problem_id"], t["sample_index"]): t for t in read_jsonl(tmp_path / "asis/traces.jsonl")}
    assert {t["teacher"]["dtype"] for t in fp32.values()} == {"float32"} and len(fp32) == 30
    assert {t["teacher"]["dtype"] for t in asis.values()} == {auto_engine_dtype()}
    assert fp32.keys() == asis.keys()
    same = [fp32[k]["completion"][:8] == asis[k]["completion"][:8] for k in fp32]
    assert sum(same) >= len(same) // 2


def test_a_problem_longer_than_the_context_is_skipped_and_named_and_the_rest_generated(tiny_model, vllm_teacher,
                                                                                      tmp_path):
    """One ~400-token problem among short ones, teacher context 256: the problem is skipped before any engine starts,
    listed in skipped.jsonl with its length, the run completes the others (a real engine); with too_long: refuse
    the run stops in one line naming it, before anything is written."""
    rows = [{"id": f"s{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)]
    rows.insert(1, {"id": "long", "question": "What is " + " + ".join("1" for _ in range(200)) + "?", "answer": "200"})
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    over = {"source.path": str(src), "teacher.max_model_len": 256, "sampling.n": 2}
    with pytest.raises(CotdistillError, match=r"source: 1 problem\(s\) too long: 'long' \(\d+ tokens\) cannot fit "
                                              r"teacher '.*' \(max_model_len 256\); shorten them, raise"):
        generate.run(make_cfg(tiny_model, tmp_path / "refused", too_long="refuse", **over))
    assert not (tmp_path / "refused").exists()
    # the session's engine (context 512) serves; the check reads the config's teacher (256). A second in-process
    # engine closed here would tear down vLLM's process-wide state under the session's one
    summary = generate.run(make_cfg(tiny_model, tmp_path / "out", **over), teacher=vllm_teacher)
    assert summary["skipped_too_long"] == 1 and summary["complete"] and summary["traces"] == 6
    assert {r["problem_id"] for r in read_jsonl(tmp_path / "out" / "traces.jsonl")} == {"s0", "s1", "s2"}
    (skip,) = read_jsonl(tmp_path / "out" / "skipped.jsonl")
    assert skip["problem_id"] == "long" and skip["prompt_tokens"] >= 256 and skip["limit"] == 256


def test_sharded_runs_merge_complete_when_a_problem_is_skipped(tiny_model, vllm_teacher, tmp_path):
    """A problem skipped as too long has no traces by design: the merge expects none for it and writes one
    skipped.jsonl from the shards' files."""
    rows = [{"id": f"s{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(4)]
    rows.append({"id": "long", "question": "What is " + " + ".join("1" for _ in range(200)) + "?", "answer": "200"})
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    for i in range(2):
        generate.run(make_cfg(tiny_model, tmp_path / "out", shard={"index": i, "count": 2}, **{
            "source.path": str(src), "teacher.max_model_len": 256, "sampling.n": 2}), teacher=vllm_teacher)
    summary = merge(tmp_path / "out")
    assert summary["complete"] and summary["traces"] == 8 and summary["skipped_too_long"] == 1
    assert [r["problem_id"] for r in read_jsonl(tmp_path / "out" / "skipped.jsonl")] == ["long"]
