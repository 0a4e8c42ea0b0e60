"""`cotdistill run`: the plan of stages, skip / re-enter / changed-config rules, the answers-only
set, the distillation table and its targets. The full pipeline runs in test_run_e2e.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, read_jsonl, write_jsonl

from cotdistill.config import RunConfig
from cotdistill.errors import CotdistillError
from cotdistill.loading import load_config
from cotdistill.plan import Plan
from cotdistill.run import distillation_table, run

DEMO = ROOT / "data" / "configs" / "run_demo.yaml"


def demo(tmp_path, *overrides) -> RunConfig:
    return load_config(RunConfig, DEMO, [f"output_dir={tmp_path / 'run'}", *overrides])


def test_demo_config_plans_every_stage_in_order(tmp_path):
    plan = Plan(demo(tmp_path))
    seeds = plan.cfg.seeds
    assert len(seeds) >= 3
    students = ["sft_filtered", "gkd", "sft_unfiltered", "answers_only", "on_policy"]
    assert plan.order == ([f"student_init@{s}" for s in seeds] + ["generate", "filter", "unfiltered", "answers_only"]
                          + [f"train:{n}@{s}" for n in students for s in seeds] + ["eval", "report"])
    sft = plan.students[f"sft_filtered@{seeds[1]}"]
    assert sft.data == "filtered" and sft.train.method == "sft" and sft.train.seed == seeds[1]
    assert sft.train.student.endswith(f"student_init/seed{seeds[1]}/model")
    assert sft.train.output_dir.endswith(f"students/sft_filtered/seed{seeds[1]}")
    gkd = plan.students[f"gkd@{seeds[2]}"].train
    assert gkd.method == "gkd" and gkd.teacher == "data/teacher" and gkd.gkd.lmbda > 0
    assert gkd.student == str(Path(plan.students[f"sft_filtered@{seeds[2]}"].train.output_dir) / "final")
    assert gkd.per_device_train_batch_size == sft.train.per_device_train_batch_size  # the YAML merge key carried over
    op = plan.students[f"on_policy@{seeds[0]}"].train
    assert op.method == "on_policy" and op.on_policy.serve_teacher and op.max_steps == gkd.max_steps
    assert op.student == str(Path(plan.students[f"sft_filtered@{seeds[0]}"].train.output_dir) / "final")
    assert plan.students[f"answers_only@{seeds[0]}"].train.dataset_dir.endswith("answers_only")
    assert plan.configs["unfiltered"].require_correct is False and plan.configs["filter"].require_correct is True
    assert len({plan.fps[f"train:sft_filtered@{s}"] for s in seeds}) == len(seeds)


def test_logit_kd_student_reads_the_logits_cache_of_its_data(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["output_dir"] = str(tmp_path / "run")
    data["students"].append(
        {"name": "logit_kd", "train": {"method": "logit_kd", "kd": {"alpha": 0.5, "temperature": 2.0}}}
    )
    plan = Plan(RunConfig.model_validate(data))
    kd = plan.students["logit_kd@0"].train
    assert kd.logprobs == str(tmp_path / "run/logits") and kd.kd.temperature == 2.0
    assert "train:logit_kd@2" in plan.order and kd.student.endswith("student_init/seed0/model")
    lc = plan.configs["logits"]  # no logprobs in the generation pass: the teacher scores the kept traces
    assert (lc.mode, lc.top_k, lc.teacher, lc.filter_dir) == ("score", 8, "data/teacher", str(tmp_path / "run/filter"))
    order = plan.order
    assert order.index("filter") < order.index("logits") < order.index("train:logit_kd@0")
    assert "logits" not in Plan(demo(tmp_path)).order  # only logit_kd students need it
    # logprobs captured while generating: the cache keeps them (in_pass), at that k
    data["generate"]["sampling"]["logprobs"] = 4
    lc = Plan(RunConfig.model_validate(data)).configs["logits"]
    assert (lc.mode, lc.top_k) == ("in_pass", 4) and lc.logprobs == str(tmp_path / "run/generate/logprobs.jsonl")
    data["logits"] = {"mode": "score", "batch_size": 16}
    lc = Plan(RunConfig.model_validate(data)).configs["logits"]
    assert (lc.mode, lc.batch_size) == ("score", 16)


def test_fingerprints_follow_inputs(tmp_path):
    a = Plan(demo(tmp_path))
    b = Plan(demo(tmp_path, "generate.sampling.temperature=0.7"))
    assert a.fps["student_init@0"] == b.fps["student_init@0"]
    # downstream of generate
    for stage in ("generate", "filter", "train:sft_filtered@0", "train:gkd@1", "eval", "report"):
        assert a.fps[stage] != b.fps[stage], stage
    c = Plan(demo(tmp_path, "students.0.train.learning_rate=0.001"))
    assert c.fps["train:sft_filtered@0"] != a.fps["train:sft_filtered@0"]
    assert c.fps["train:gkd@0"] != a.fps["train:gkd@0"]  # starts from sft_filtered's model: a dependency
    assert c.fps["train:answers_only@0"] == a.fps["train:answers_only@0"] and c.fps["filter"] == a.fps["filter"]


def test_seeds_per_student_and_init_from_are_checked(tmp_path):
    p = Plan(demo(tmp_path, "seeds=[5]", "students.3.seeds=[5,6]"))
    assert [n for n in p.order if n.startswith("train:answers_only")] == [
        "train:answers_only@5",
        "train:answers_only@6",
    ]
    assert "student_init@6" in p.order and p.students["answers_only@6"].train.seed == 6
    with pytest.raises(
        CotdistillError, match=r"students\[1\].init_from: 'sft_filtered' is not trained with seed\(s\) \[9\]"
    ):
        demo(tmp_path, "students.1.seeds=[0,9]")
    with pytest.raises(CotdistillError, match=r"students\[0\].init_from: 'gkd' is not a student listed before"):
        demo(tmp_path, "students.0.init_from=gkd")
    with pytest.raises(CotdistillError, match="seeds must be distinct"):
        demo(tmp_path, "seeds=[1,1]")


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(
        CotdistillError, match=r"run_demo.yaml: students\[1\].train.learning_rate: Input should be greater than 0"
    ):
        demo(tmp_path, "students.1.train.learning_rate=-1")
    with pytest.raises(CotdistillError, match="unknown key 'filter.bogus'"):
        demo(tmp_path, "filter.bogus=1")
    with pytest.raises(CotdistillError, match="'teacher' names the teacher"):
        demo(tmp_path, "students.0.name=teacher")
    with pytest.raises(CotdistillError, match="benchmark 'gsm8k' is not one of"):
        demo(tmp_path, "benchmark=gsm8k")


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(
        CotdistillError, match=r"unknown stage 'trian'.*student_init@\{0,1,2\}, generate, .*train:gkd@\{0,1,2\}"
    ):
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
    with pytest.raises(
        CotdistillError, match="stage 'answers_only' was run with a different config.*--from answers_only"
    ):
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


N = 400  # problems


def _results(accs: dict[str, float | list[float]]) -> tuple[dict, dict]:
    """results.json and per-problem outcomes: a student given a list gets one model per seed 0, 1, ..."""
    roles = {"teacher": "teacher", "answers_only": "baseline", "sft_unfiltered": "baseline"}
    models, outcomes = {}, {}
    rng = np.random.default_rng(0)
    for n, a in accs.items():
        for seed, acc in ([(None, a)] if n == "teacher" else enumerate(a if isinstance(a, list) else [a])):
            name = n if seed is None else f"{n}@{seed}"
            o = np.zeros(N)
            o[rng.choice(N, int(round(acc * N)), replace=False)] = 1
            outcomes[name] = o
            models[name] = {"role": roles.get(n, "student"),
                            "scores": {"digit_chain": {"pass@1": {"value": acc, "ci95": [acc - 0.02, acc + 0.02]}}}}
    return {"models": models}, outcomes


def test_distillation_table_seeds_intervals_and_targets(tmp_path):
    plan = Plan(demo(tmp_path))
    res, out = _results(
        {
            "teacher": 0.9,
            "sft_filtered": [0.88, 0.86, 0.87],
            "gkd": [0.86, 0.89, 0.85],
            "sft_unfiltered": [0.7, 0.72, 0.69],
            "answers_only": [0.2, 0.22, 0.25],
        }
    )
    d = distillation_table(plan, res, out)
    assert d["best_distilled"] == "sft_filtered" and d["teacher_accuracy"] == 0.9
    m = d["models"]["sft_filtered"]
    assert [s["seed"] for s in m["per_seed"]] == [0, 1, 2] and [s["accuracy"] for s in m["per_seed"]] == [
        0.88,
        0.86,
        0.87,
    ]
    assert m["accuracy"] == pytest.approx(0.87) and m["range"] == [0.86, 0.88]
    assert m["ci95"][0] < 0.86 and m["ci95"][1] > 0.88  # problem sampling widens it beyond the seeds' range
    assert m["retention"] == pytest.approx(0.9667, abs=1e-4) and m["worst_seed_retention"] == pytest.approx(
        0.9556, abs=1e-4
    )
    assert d["models"]["answers_only"]["data"] == "answers_only" and d["models"]["teacher"]["method"] is None
    t = d["targets"]
    assert t["retention"]["met"] and t["retention"]["met_on_worst_seed"] is True
    assert t["gain_over_answers_only"]["value"] == pytest.approx(0.6467, abs=1e-4)
    g = t["gain_over_answers_only"]
    # seed by seed: min(.68,.64,.62)
    assert g["worst_seed"] == pytest.approx(0.62) and g["comparison"]["verdict"] == "better"
    assert g["comparison"]["paired_by_seed"] is True
    f = t["filtered_vs_unfiltered"]
    assert f["filtered"] == "sft_filtered" and f["value"] == pytest.approx(0.1667, abs=1e-4) and f["met"]
    assert (
        f["comparison"]["verdict"] == "better"
        and f["worst_seed"] == pytest.approx(0.14)
        and d["all_targets_met"] is True
    )
    near = {(c["a"], c["b"]): c for c in d["comparisons"]}[("sft_filtered", "gkd")]
    assert near["verdict"] == "no significant difference" and near["ci95"][0] < 0 < near["ci95"][1]

    res, out = _results({"teacher": 0.9, "sft_filtered": [0.5, 0.1, 0.9], "gkd": [0.4, 0.4, 0.4],
                         "sft_unfiltered": [0.6, 0.6, 0.6], "answers_only": [0.45, 0.45, 0.45]})
    d = distillation_table(plan, res, out)
    t = d["targets"]
    assert d["best_distilled"] == "sft_filtered" and d["models"]["sft_filtered"]["range"] == [0.1, 0.9]
    assert not t["retention"]["met"] and not t["gain_over_answers_only"]["met"]
    f = t["filtered_vs_unfiltered"]  # 0.5 vs 0.6 on the mean, but one seed at 0.1: inside the noise, not a loss
    assert f["comparison"]["verdict"] == "no significant difference" and f["met"] and not f["met_on_worst_seed"]
    res, out = _results({"teacher": 0.9, "sft_filtered": [0.5, 0.52, 0.51], "sft_unfiltered": [0.6, 0.61, 0.6],
                         "answers_only": [0.1, 0.1, 0.1]})
    f = distillation_table(plan, res, out)["targets"]["filtered_vs_unfiltered"]
    assert f["comparison"]["verdict"] == "worse" and not f["met"]  # significantly worse: missed
    assert d["all_targets_met"] is False


def test_mean_passes_but_worst_seed_does_not(tmp_path):
    plan = Plan(demo(tmp_path))
    res, out = _results({"teacher": 1.0, "sft_filtered": [1.0, 1.0, 0.6], "answers_only": [0.2, 0.2, 0.2]})
    t = distillation_table(plan, res, out)["targets"]["retention"]
    assert t["met"] and t["value"] == pytest.approx(0.8667, abs=1e-4) and not t["met_on_worst_seed"]


def test_strict_targets_fail_the_run(tmp_path, monkeypatch):
    import cotdistill.run as runmod

    cfg = demo(tmp_path, "targets.strict=true")
    res, out = _results({"teacher": 0.9, "sft_filtered": [0.3, 0.3, 0.3], "answers_only": [0.25, 0.25, 0.25]})
    monkeypatch.setattr(runmod, "_run_stage", lambda plan, name: {"distillation": distillation_table(
        plan, res, out)} if name == "eval" else {})
    with pytest.raises(CotdistillError, match="targets missed: retention, gain_over_answers_only"):
        run(cfg)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["distillation"]["all_targets_met"] is False


def test_strict_targets_fail_the_run_on_the_worst_seed(tmp_path, monkeypatch):
    """The mean meets every target, one seed does not: a strict run still fails, naming the worst seed, and
    all_targets_met is False."""
    import cotdistill.run as runmod

    cfg = demo(tmp_path, "targets.strict=true", "targets.min_retention=0.7")
    res, out = _results({"teacher": 1.0, "sft_filtered": [0.95, 0.95, 0.5], "answers_only": [0.1, 0.1, 0.1]})
    table = distillation_table(Plan(cfg), res, out)
    assert table["targets"]["retention"]["met"] and not table["targets"]["retention"]["met_on_worst_seed"]
    monkeypatch.setattr(runmod, "_run_stage", lambda plan, name: {"distillation": table} if name == "eval" else {})
    with pytest.raises(CotdistillError, match=r"targets missed: retention \(worst seed\) \(targets.strict"):
        run(cfg)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["distillation"]["all_targets_met"] is False


def test_filtered_vs_unfiltered_on_the_worst_seed_is_judged_seed_by_seed(tmp_path):
    """Filtering 'does not hurt' on the worst seed unless some seed's filtered student is significantly worse
    than its unfiltered twin: a 0.5-point dip on one seed is noise, a 20-point one is not."""
    plan = Plan(demo(tmp_path))
    res, out = _results({"teacher": 1.0, "sft_filtered": [0.95, 0.945, 0.96], "sft_unfiltered": [0.94, 0.95, 0.95],
                         "answers_only": [0.1, 0.1, 0.1]})
    f = distillation_table(plan, res, out)["targets"]["filtered_vs_unfiltered"]
    assert f["worst_seed"] < 0 and f["met_on_worst_seed"] and f["seeds_worse"] == []
    res, out = _results({"teacher": 1.0, "sft_filtered": [0.95, 0.75, 0.96], "sft_unfiltered": [0.94, 0.95, 0.95],
                         "answers_only": [0.1, 0.1, 0.1]})
    d = distillation_table(plan, res, out)
    f = d["targets"]["filtered_vs_unfiltered"]
    assert f["met"] and not f["met_on_worst_seed"] and f["seeds_worse"] == [1] and d["all_targets_met"] is False


def test_report_renders_the_distillation_table(tmp_path):
    from cotdistill.report import write_report

    plan = Plan(demo(tmp_path))
    res, out = _results({"teacher": 0.9, "sft_filtered": [0.88, 0.9, 0.86], "answers_only": [0.2, 0.2, 0.2]})
    for m in res["models"].values():
        s = m["scores"]["digit_chain"]
        s.update(mean_completion_tokens=30.0, truncation_rate=0.0, cannot_tell_rate=0.0)
    res.update(benchmarks={"digit_chain": {}}, warnings=[], versions={"vllm": "x"}, ci="wilson",
               sampling={"n": 1, "temperature": 0.0, "max_tokens": 64, "seed": 0},
               distillation=distillation_table(plan, res, out))
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "results.json").write_text(json.dumps(res))
    md = write_report(tmp_path / "run").read_text()
    assert "### Distillation on `digit_chain`" in md
    ci = res["distillation"]["models"]["sft_filtered"]["ci95"]
    assert (f"| sft_filtered (best distilled) | verified teacher traces | sft | 0.880 [{ci[0]:.3f}, {ci[1]:.3f}] | "
            f"0.880 (s0), 0.900 (s1), 0.860 (s2) | 0.978 / 0.956 |") in md
    assert "| best distilled - answers-only (points) | +68.0 | >= +10.0 | met | +66.0 | met | better [" in md
    assert "| answers_only | +68.0 |" in md and "sft_filtered better |" in md
    assert (tmp_path / "run" / "report" / "distillation_eval.png").stat().st_size > 1000


def test_demo_config_yaml_is_plain(tmp_path):
    """The README points newcomers at this file: it must stay loadable by any YAML reader."""
    assert yaml.safe_load(DEMO.read_text())["students"][1]["train"]["method"] == "gkd"


def test_eval_config_covers_teacher_trained_students_and_overlap_ngram(tmp_path, capsys):
    from cotdistill.run import _eval_config

    plan = Plan(demo(tmp_path))
    final = tmp_path / "run" / "students" / "sft_filtered" / "seed1" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    e = _eval_config(plan)
    assert [m.name for m in e.models] == ["teacher", "sft_filtered@1"]  # untrained students are left out, and said so
    assert "student 'gkd@0' has no trained model" in capsys.readouterr().err
    assert e.models[1].serve.model == str(final) and e.models[1].serve.kv_cache_memory_bytes == 268435456
    assert e.ngram == 17 and e.train_data == [str(tmp_path / "run" / "filter")]


def test_student_spec_with_a_head_size_vllm_cannot_serve_is_refused_at_load(tmp_path):
    with pytest.raises(
        CotdistillError, match=r"run_demo.yaml: student: hidden 128 / heads 3: head size must be one of 32"
    ):
        demo(tmp_path, "student.heads=3")


def test_a_killed_stage_does_not_resume_into_a_changed_config(tmp_path, monkeypatch):
    import cotdistill.run as runmod

    root = tmp_path / "run"
    _fake_generation(root, [{"id": "p1", "question": "Last digit of 1+2, left to right.", "answer": "3"}])
    only = ["student_init", "generate", "filter", "unfiltered", "train", "eval", "report"]

    def killed(plan, name):
        raise KeyboardInterrupt

    monkeypatch.setattr(runmod, "_run_stage", killed)
    with pytest.raises(KeyboardInterrupt):
        run(demo(tmp_path), skip=only)
    assert (root / "answers_only" / "stage.started.json").exists() and not (
        root / "answers_only" / "stage.json"
    ).exists()
    monkeypatch.undo()
    with pytest.raises(
        CotdistillError, match="stage 'answers_only' was started .and not finished. with a different config"
    ):
        run(demo(tmp_path, "generate.prompt.template=gsm8k"), skip=only)
    run(demo(tmp_path), skip=only)  # the same config resumes
    assert (root / "answers_only" / "stage.json").exists() and not (
        root / "answers_only" / "stage.started.json"
    ).exists()


def test_eta_uses_the_same_students_other_seeds_first():
    from cotdistill.run import _Clock

    c = _Clock(["train:sft@0", "train:sft@1", "train:gkd@0", "train:gkd@1", "eval"])
    assert "ETA 5m00s + stages not yet timed (eval)" in c.done("train:sft@0", 100)  # gkd guessed from sft
    assert "ETA 1m50s" in c.done("train:gkd@0", 10) and "ETA 0m10s" in c.done("train:sft@1", 100)
    assert "last stage" not in c.done("train:gkd@1", 10) and c.done("eval", 5).endswith("last stage")
    # a group between the student and the family: untimed PTQ students are guessed from PTQ ones, not training
    g = {"train:sft-a@0": "train[sft]", "train:ptq-a@0": "train[ptq]", "train:sft-b@0": "train[sft]",
         "train:ptq-b@0": "train[ptq]"}
    c = _Clock(list(g), g)
    assert "ETA 5m00s" in c.done("train:sft-a@0", 100)  # no PTQ timed yet: guessed from training (the family)
    assert "ETA 1m40s" in c.done("train:ptq-a@0", 0)  # sft-b guessed from sft-a (100 s), ptq-b from ptq-a (0 s)


def _students(tmp_path, students, *overrides):
    cfg = yaml.safe_load(DEMO.read_text())
    cfg.update(output_dir=str(tmp_path / "run"), seeds=[0, 1], students=students)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return load_config(RunConfig, p, list(overrides))


def test_per_student_inits_and_students_as_teachers(tmp_path):
    """teacher_init (the teacher's blocks), an assistant of another size, born-again and progressive
    students: each its own init stage and live teacher, wired by seed."""
    cfg = _students(tmp_path, [
        {"name": "sft", "train": {"method": "sft"}},
        {"name": "teacher_init", "student": {"from_teacher": True, "every": 2}, "train": {"method": "sft"}},
        {"name": "assistant", "student": {"hidden": 256, "layers": 2, "heads": 4}, "train": {"method": "kd"}},
        {"name": "born_again", "teacher_from": "sft", "train": {"method": "kd"}},
        {"name": "progressive", "teacher_from": "assistant", "train": {"method": "kd"}},
    ])
    plan = Plan(cfg)
    inits = [n for n in plan.order if n.startswith("student_init")]
    assert inits == ["student_init@0", "student_init@1", "student_init:teacher_init", "student_init:assistant@0",
                     "student_init:assistant@1"]
    assert (
        plan.configs["student_init:assistant@1"].seed == 1 and plan.configs["student_init:assistant@1"].hidden == 256
    )
    ti = plan.students["teacher_init@1"].train
    assert ti.student.endswith("student_init/teacher_init/from_teacher/model")
    ba = plan.students["born_again@1"].train
    assert ba.teacher == str(Path(plan.students["sft@1"].train.output_dir) / "final")
    assert ba.student.endswith("student_init/seed1/model")  # a fresh student of the same size
    pr = plan.students["progressive@0"].train
    assert pr.teacher == str(Path(plan.students["assistant@0"].train.output_dir) / "final")
    assert plan.students["assistant@0"].train.teacher == "data/teacher"
    # the teacher's change reaches its students' fingerprints
    other = Plan(_students(tmp_path, [
        {"name": "sft", "train": {"method": "sft", "learning_rate": 1e-3}},
        {"name": "born_again", "teacher_from": "sft", "train": {"method": "kd"}}]))
    base = Plan(_students(tmp_path, [
        {"name": "sft", "train": {"method": "sft"}},
        {"name": "born_again", "teacher_from": "sft", "train": {"method": "kd"}}]))
    assert other.fps["train:born_again@0"] != base.fps["train:born_again@0"]


def test_mutual_peers_from_the_next_seeds_base(tmp_path):
    """peers_from: seed s's peer is the named student of the next seed in the list (cyclic), wired as a
    dependency, so pretrained peers that learnt apart teach each other."""
    cfg = _students(tmp_path, [
        {"name": "base", "train": {"method": "sft"}},
        {"name": "mutual", "init_from": "base", "peers_from": "base", "train": {"method": "mutual"}},
    ], "seeds=[3,5,7]")
    plan = Plan(cfg)
    final = lambda seed: str(Path(plan.students[f"base@{seed}"].train.output_dir) / "final")
    for seed, peer in ((3, 5), (5, 7), (7, 3)):
        t = plan.students[f"mutual@{seed}"].train
        assert t.student == final(seed) and t.mutual.peer_models == [final(peer)]
        assert {f"train:base@{seed}", f"train:base@{peer}"} <= set(plan.stages[f"train:mutual@{seed}"].deps)
    three = Plan(_students(tmp_path, [
        {"name": "base", "train": {"method": "sft"}},
        {"name": "mutual", "init_from": "base", "peers_from": "base",
         "train": {"method": "mutual", "mutual": {"peers": 3}}}], "seeds=[0,1,2]"))
    assert [Path(p).parent.name for p in three.students["mutual@2"].train.mutual.peer_models] == ["seed0", "seed1"]


@pytest.mark.parametrize(
    "students,expect",
    [
        (
            [{"name": "a", "teacher_from": "b", "train": {"method": "kd"}}, {"name": "b"}],
            "teacher_from: 'b' is not a student listed before",
        ),
        ([{"name": "a"}, {"name": "b", "teacher_from": "a", "train": {"method": "sft"}}], "only live-teacher methods"),
        (
            [{"name": "a"}, {"name": "b", "init_from": "a", "student": {"from_teacher": True}}],
            "init_from or student, not both",
        ),
        ([{"name": "a", "student": {"from_teacher": True, "layers": []}}], "students.0.student.layers"),
        ([{"name": "a"}, {"name": "b", "peers_from": "a", "train": {"method": "kd"}}], "only method mutual has peers"),
        ([{"name": "a"}, {"name": "b", "peers_from": "a", "train": {"method": "mutual", "mutual": {"peers": 3}}}],
         "3 peers need as many seeds, the student has 2"),
        ([{"name": "b", "peers_from": "a", "train": {"method": "mutual"}}, {"name": "a"}],
         "peers_from: 'a' is not a student listed before"),
    ],
)
def test_student_wiring_errors(tmp_path, students, expect):
    with pytest.raises(CotdistillError, match=expect):
        _students(tmp_path, students)


def test_sweep_repeats_students_at_every_size(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["output_dir"] = str(tmp_path / "run")
    data["students"] = [s for s in data["students"] if s["name"] != "on_policy"]  # it starts from sft_filtered
    data["sweep"] = {"sizes": [{"hidden": 128, "layers": 2, "heads": 4}, {"hidden": 64, "layers": 1, "heads": 2},
                               {"from_teacher": True, "every": 2}], "students": ["sft_filtered", "gkd"]}
    cfg = RunConfig.model_validate(data)
    names = [s.name for s in cfg.students]
    assert names == ["sft_unfiltered", "answers_only", "sft_filtered-h128l2", "gkd-h128l2", "sft_filtered-h64l1",
                     "gkd-h64l1", "sft_filtered-teacher-every2", "gkd-teacher-every2"]
    by = {s.name: s for s in cfg.students}
    assert by["gkd-h64l1"].init_from == "sft_filtered-h64l1" and by["gkd-h64l1"].student is None  # same size
    assert by["sft_filtered-h64l1"].student.hidden == 64 and by["sft_filtered-teacher-every2"].student.every == 2
    plan = Plan(cfg)
    assert plan.students["gkd-h64l1@1"].train.student.endswith("students/sft_filtered-h64l1/seed1/final")
    assert "student_init:sft_filtered-teacher-every2" in plan.order and "train:gkd-teacher-every2@2" in plan.order
    with pytest.raises(ValueError, match=r"sweep.students: \['nope'\] are not students of this run"):
        RunConfig.model_validate({**data, "sweep": {"sizes": [{"hidden": 64, "layers": 1, "heads": 2}],
                                                    "students": ["nope"]}})
    with pytest.raises(ValueError, match="head size"):
        RunConfig.model_validate({**data, "sweep": {"sizes": [{"hidden": 64, "layers": 1, "heads": 4}]}})


def test_sweep_train_overrides_per_size(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["output_dir"] = str(tmp_path / "run")
    data["students"] = [s for s in data["students"] if s["name"] != "on_policy"]  # it starts from sft_filtered
    sizes = [{"hidden": 128, "layers": 2, "heads": 4}, {"from_teacher": True, "layers": [0, 2]}]
    data["sweep"] = {"sizes": sizes, "students": ["sft_filtered", "gkd"],
                     "train": {"teacher-b0_2": {"learning_rate": 1.0e-3}}}
    cfg = RunConfig.model_validate(data)
    by = {s.name: s for s in cfg.students}
    base = next(s for s in yaml.safe_load(DEMO.read_text())["students"] if s["name"] == "sft_filtered")["train"]
    assert by["sft_filtered-teacher-b0_2"].train == {**base, "learning_rate": 1.0e-3}  # the rest kept
    assert by["sft_filtered-h128l2"].train["learning_rate"] == base["learning_rate"]  # other sizes untouched
    assert by["gkd-teacher-b0_2"].train["learning_rate"] == 1.0e-3
    assert Plan(cfg).students["sft_filtered-teacher-b0_2@0"].train.learning_rate == 1.0e-3
    # one swept student's own override at one size comes after the size's
    own = RunConfig.model_validate({**data, "sweep": {**data["sweep"], "train": {
        "teacher-b0_2": {"learning_rate": 1.0e-3, "max_steps": 7}, "gkd-teacher-b0_2": {"learning_rate": 2.5e-4}}}})
    by = {s.name: s for s in own.students}
    assert by["gkd-teacher-b0_2"].train["learning_rate"] == 2.5e-4 and by["gkd-teacher-b0_2"].train["max_steps"] == 7
    assert by["sft_filtered-teacher-b0_2"].train["learning_rate"] == 1.0e-3
    assert by["gkd-h128l2"].train == next(s for s in data["students"] if s["name"] == "gkd")["train"]
    with pytest.raises(ValueError, match=r"sweep.train: \['kd-teacher-b0_2'\] name no swept student"):
        RunConfig.model_validate({**data, "sweep": {**data["sweep"], "train": {"kd-teacher-b0_2": {"max_steps": 1}}}})
    with pytest.raises(
        ValueError, match=r"train: \['h256l2'\] name no size of this sweep; use one of \['h128l2', 'teacher-b0_2'\]"
    ):
        RunConfig.model_validate({**data, "sweep": {"sizes": sizes, "train": {"h256l2": {"learning_rate": 1e-3}}}})
    with pytest.raises(ValueError, match="two sizes share a label"):
        RunConfig.model_validate({**data, "sweep": {"sizes": [sizes[0], sizes[0]]}})


def test_synthesize_stage_and_per_student_filter_in_the_plan(tmp_path):
    """A run with a synthesize block answers the problems it keeps (generate's source is its problems.jsonl, and
    generate depends on it); a student with its own filter settings trains on a filter stage of its own."""
    from cotdistill.config import RunConfig
    from cotdistill.loading import load_config
    from cotdistill.plan import Plan

    cfg = load_config(RunConfig, ROOT / "data/configs/run_synth.yaml", [f"output_dir={tmp_path / 'r'}"])
    plan = Plan(cfg)
    assert plan.order[:3] == ["synthesize", "generate", "filter"] or plan.order.index("synthesize") < \
        plan.order.index("generate")
    gen = plan.stages["generate"]
    assert gen.deps == ["synthesize"]
    assert gen.config.source.path == str(tmp_path / "r" / "synthesize" / "problems.jsonl")
    assert plan.stages["synthesize"].config.teacher.model == cfg.teacher.model
    own = [s for s in cfg.students if s.filter is not None]
    assert own, "run_synth.yaml has a student with its own length control"
    st = plan.stages[f"train:{own[0].name}@0"]
    assert f"filter:{own[0].name}" in st.deps
    fcfg = plan.stages[f"filter:{own[0].name}"].config
    assert all(getattr(fcfg, k) == v for k, v in own[0].filter.items())
    with pytest.raises(CotdistillError, match="drop generate.source"):
        load_config(RunConfig, ROOT / "data/configs/run_synth.yaml",
                    ["generate.source={kind: hf, path: data/digit_chain_train.jsonl}"])


def test_run_output_dir_that_is_a_file_is_refused_before_any_stage(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CotdistillError, match=r"output_dir: '.*f' is a file; give a folder"):
        run(load_config(RunConfig, DEMO, [f"output_dir={tmp_path / 'f'}"]))
    assert (tmp_path / "f").read_text() == "x"


def test_a_single_model_row_keeps_its_own_interval_in_both_report_tables(tmp_path):
    """The teacher (one model) shows the interval its eval computed, the one the report's accuracy table prints,
    not a second bootstrap of its outcomes; students over seeds keep the two-level interval."""
    plan = Plan(demo(tmp_path))
    res, out = _results({"teacher": 0.9, "sft_filtered": [0.88, 0.86, 0.87], "answers_only": [0.2, 0.22, 0.25]})
    d = distillation_table(plan, res, out)
    assert d["models"]["teacher"]["ci95"] == res["models"]["teacher"]["scores"]["digit_chain"]["pass@1"]["ci95"]
    assert d["models"]["sft_filtered"]["ci95"][0] < 0.86
