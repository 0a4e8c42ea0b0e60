"""`cotdistill run`: the plan of stages, skip / re-enter / changed-config rules, the answers-only
set, the distillation table and its targets. The full pipeline runs in test_run_e2e.py (slow)."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT, read_jsonl, write_jsonl
from cotdistill.config import RunConfig, load_config
from cotdistill.errors import CotdistillError
from cotdistill.run import Plan, distillation_table, run

DEMO = ROOT / "data" / "configs" / "run_demo.yaml"


def demo(tmp_path, *overrides) -> RunConfig:
    return load_config(RunConfig, DEMO, [f"output_dir={tmp_path / 'run'}", *overrides])


def test_demo_config_plans_every_stage_in_order(tmp_path):
    plan = Plan(demo(tmp_path))
    assert plan.order == ["student_init", "generate", "filter", "unfiltered", "answers_only", "train:sft_filtered",
                          "train:logit_kd", "train:sft_unfiltered", "train:answers_only", "eval", "report"]
    data, kd = plan.students["logit_kd"]
    assert data == "filtered" and kd.method == "logit_kd" and kd.logprobs.endswith("generate/logprobs.jsonl")
    assert kd.student.endswith("student_init/model") and kd.max_steps == 1200  # the YAML merge key carried over
    assert plan.students["answers_only"][1].dataset_dir.endswith("answers_only")
    assert plan.configs["unfiltered"].require_correct is False and plan.configs["filter"].require_correct is True


def test_fingerprints_follow_inputs(tmp_path):
    a = Plan(demo(tmp_path))
    b = Plan(demo(tmp_path, "generate.sampling.temperature=0.7"))
    assert a.fps["student_init"] == b.fps["student_init"]
    for stage in ("generate", "filter", "train:sft_filtered", "eval", "report"):  # downstream of generate
        assert a.fps[stage] != b.fps[stage], stage
    c = Plan(demo(tmp_path, "students.0.train.learning_rate=0.001"))
    assert c.fps["train:sft_filtered"] != a.fps["train:sft_filtered"]
    assert c.fps["train:logit_kd"] == a.fps["train:logit_kd"] and c.fps["filter"] == a.fps["filter"]


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(CotdistillError, match=r"run_demo.yaml: students\[1\].train.learning_rate: Input should be greater than 0"):
        demo(tmp_path, "students.1.train.learning_rate=-1")
    with pytest.raises(CotdistillError, match="unknown key 'filter.bogus'"):
        demo(tmp_path, "filter.bogus=1")
    with pytest.raises(CotdistillError, match="'teacher' names the teacher"):
        demo(tmp_path, "students.0.name=teacher")
    with pytest.raises(CotdistillError, match="benchmark 'gsm8k' is not one of"):
        demo(tmp_path, "benchmark=gsm8k")


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(CotdistillError, match="unknown stage 'trian'.*student_init, generate"):
        run(demo(tmp_path), skip=["trian"])


def _fake_generation(root, problems):
    """What the generate stage leaves behind, enough for the answers_only stage to read."""
    gen = root / "generate"
    gen.mkdir(parents=True)
    write_jsonl(gen / "problems.jsonl", [p | {"source": "hf:test"} for p in problems])
    return gen


def test_skip_reenter_and_changed_config(tmp_path, capsys):
    cfg = demo(tmp_path)
    root = tmp_path / "run"
    _fake_generation(root, [{"id": "p1", "question": "Last digit of 1+2, left to right.", "answer": "3"},
                            {"id": "p2", "question": "Twice 3?", "answer": "Double 3.\n#### 6"},  # GSM8K-style gold
                            {"id": "p3", "question": "no gold here", "answer": None}])
    only = ["student_init", "generate", "filter", "unfiltered", "train", "eval", "report"]
    out = run(cfg, skip=only)
    rows = read_jsonl(root / "answers_only" / "sft.jsonl")
    assert [r["problem_id"] for r in rows] == ["p1", "p2"]  # no gold, no example
    assert rows[0]["messages"] == [{"role": "user", "content": "Last digit of 1+2, left to right."},
                                   {"role": "assistant", "content": "\\boxed{3}"}]
    marker = json.loads((root / "answers_only" / "stage.json").read_text())
    assert marker["summary"]["examples"] == 2 and set(out["stage_seconds"]) == {"answers_only"}
    assert json.loads((root / "run.json").read_text())["stage_seconds"] == out["stage_seconds"]

    (root / "answers_only" / "sft.jsonl").write_text("edited\n")
    run(cfg, skip=only)  # done: skipped, output untouched
    assert (root / "answers_only" / "sft.jsonl").read_text() == "edited\n"
    assert "answers_only: done earlier" in capsys.readouterr().err

    changed = demo(tmp_path, "generate.prompt.template=gsm8k")
    with pytest.raises(CotdistillError, match="stage 'answers_only' was run with a different config.*--from answers_only"):
        run(changed, skip=only)
    run(changed, from_stage="answers_only", skip=only)  # re-entered: rebuilt with the new template
    rows = read_jsonl(root / "answers_only" / "sft.jsonl")
    assert rows[0]["messages"][-1]["content"] == "#### 3" and len(rows[0]["messages"]) == 3  # gsm8k has a system turn
    assert rows[1]["messages"][-1]["content"] == "#### 6"  # the final answer only, not the gold's worked solution
    import datasets

    assert datasets.load_from_disk(str(root / "answers_only" / "sft")).num_rows == 2


def test_answers_only_needs_gold(tmp_path):
    root = tmp_path / "run"
    _fake_generation(root, [{"id": "p1", "question": "q", "answer": None}])
    with pytest.raises(CotdistillError, match="no problem has a gold answer"):
        run(demo(tmp_path), skip=["student_init", "generate", "filter", "unfiltered", "train", "eval", "report"])
    assert not (root / "answers_only" / "stage.json").exists()


def _results(accs: dict[str, float]) -> dict:
    roles = {"teacher": "teacher", "answers_only": "baseline", "sft_unfiltered": "baseline"}
    return {"models": {n: {"role": roles.get(n, "student"),
                           "scores": {"digit_chain": {"pass@1": {"value": a, "ci95": [a - 0.02, a + 0.02]}}}}
                       for n, a in accs.items()}}


def test_distillation_table_and_targets(tmp_path):
    plan = Plan(demo(tmp_path))
    d = distillation_table(plan, _results({"teacher": 0.9, "sft_filtered": 0.88, "logit_kd": 0.86,
                                           "sft_unfiltered": 0.8, "answers_only": 0.2}))
    assert d["best_distilled"] == "sft_filtered" and d["teacher_accuracy"] == 0.9
    assert d["models"]["sft_filtered"]["retention"] == pytest.approx(0.9778, abs=1e-4)
    assert d["models"]["answers_only"]["data"] == "answers_only" and d["models"]["teacher"]["method"] is None
    t = d["targets"]
    assert t["retention"]["met"] and t["gain_over_answers_only"]["value"] == pytest.approx(0.68)
    assert t["filtered_vs_unfiltered"] == {"filtered": "sft_filtered", "value": pytest.approx(0.08), "met": True}
    assert d["all_targets_met"] is True

    d = distillation_table(plan, _results({"teacher": 0.9, "sft_filtered": 0.5, "logit_kd": 0.4,
                                           "sft_unfiltered": 0.6, "answers_only": 0.45}))
    t = d["targets"]
    assert not t["retention"]["met"] and not t["gain_over_answers_only"]["met"] and not t["filtered_vs_unfiltered"]["met"]
    assert d["all_targets_met"] is False


def test_strict_targets_fail_the_run(tmp_path, monkeypatch):
    import cotdistill.run as runmod

    cfg = demo(tmp_path, "targets.strict=true")
    monkeypatch.setattr(runmod, "_run_stage", lambda plan, name: {"distillation": distillation_table(
        plan, _results({"teacher": 0.9, "sft_filtered": 0.3, "answers_only": 0.25}))} if name == "eval" else {})
    with pytest.raises(CotdistillError, match="targets missed: retention, gain_over_answers_only"):
        run(cfg)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["distillation"]["all_targets_met"] is False


def test_report_renders_the_distillation_table(tmp_path):
    from cotdistill.report import write_report

    plan = Plan(demo(tmp_path))
    res = _results({"teacher": 0.9, "sft_filtered": 0.88, "answers_only": 0.2})
    for m in res["models"].values():
        s = m["scores"]["digit_chain"]
        s.update(mean_completion_tokens=30.0, truncation_rate=0.0, cannot_tell_rate=0.0)
    res.update(benchmarks={"digit_chain": {}}, warnings=[], versions={"vllm": "x"}, ci="wilson",
               sampling={"n": 1, "temperature": 0.0, "max_tokens": 64, "seed": 0},
               distillation=distillation_table(plan, res))
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "results.json").write_text(json.dumps(res))
    md = write_report(tmp_path / "run").read_text()
    assert "### Distillation on `digit_chain`" in md
    assert "| sft_filtered (best distilled) | verified teacher traces | sft | 0.880 [0.860, 0.900] | 0.978 |" in md
    assert "| best distilled - answers-only (points) | +68.0 | >= +10.0 | met |" in md


def test_demo_config_yaml_is_plain(tmp_path):
    """The README points newcomers at this file: it must stay loadable by any YAML reader."""
    assert yaml.safe_load(DEMO.read_text())["students"][1]["train"]["method"] == "logit_kd"


def test_eval_config_covers_teacher_trained_students_and_overlap_ngram(tmp_path, capsys):
    from cotdistill.run import _eval_config

    plan = Plan(demo(tmp_path))
    final = tmp_path / "run" / "students" / "sft_filtered" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    e = _eval_config(plan)
    assert [m.name for m in e.models] == ["teacher", "sft_filtered"]  # untrained students are left out, and said so
    assert "student 'logit_kd' has no trained model" in capsys.readouterr().err
    assert e.models[1].teacher.model == str(final) and e.models[1].teacher.kv_cache_memory_bytes == 268435456
    assert e.ngram == 17 and e.train_data == [str(tmp_path / "run" / "filter")]


def test_student_spec_with_a_head_size_vllm_cannot_serve_is_refused_at_load(tmp_path):
    with pytest.raises(CotdistillError, match=r"run_demo.yaml: student: hidden 128 / heads 3: head size must be one of 32"):
        demo(tmp_path, "student.heads=3")
