"""Config loading: YAML + overrides, one-line errors naming the file and field."""

import pytest
from pydantic import ValidationError

from cotdistill.config import GenerateConfig, OpenAITeacher, TrainConfig
from cotdistill.errors import CotdistillError
from cotdistill.loading import check_same_config, load_config, save_resolved

BASE = """
source: {kind: hf, path: data/arithmetic_test.jsonl}
teacher: {backend: vllm, model: /tmp/m}
output_dir: /tmp/out
"""


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(GenerateConfig, _write(tmp_path, BASE),
                      ["sampling.n=8", 'sampling.stop=["\\n\\n"]', "teacher.dtype=float32", "shard.count=3"])
    assert cfg.sampling.n == 8 and cfg.sampling.stop == ["\n\n"]
    assert cfg.teacher.dtype == "float32" and cfg.shard.count == 3
    assert cfg.prompt.template == "math_boxed_think"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(GenerateConfig, _write(tmp_path, BASE), ["sampling.temperature=0.3"])
    save_resolved(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(GenerateConfig, tmp_path / "out" / "config.yaml") == cfg


def test_resuming_with_another_config_names_the_fields_that_differ(tmp_path):
    cfg = load_config(GenerateConfig, _write(tmp_path, BASE))
    path = tmp_path / "out" / "config.yaml"
    check_same_config(path, cfg, {"output_dir"})  # nothing saved yet: a fresh folder
    save_resolved(cfg, path)
    check_same_config(path, cfg.model_copy(update={"output_dir": "elsewhere"}), {"output_dir"})  # excluded
    other = load_config(GenerateConfig, _write(tmp_path, BASE), ["sampling.temperature=0.3"])
    with pytest.raises(CotdistillError, match=r"config.yaml: output_dir already holds a synthesis with a different "
                                              r"config \(differs in: sampling\); use a new output_dir"):
        check_same_config(path, other, {"output_dir"}, "a synthesis")


@pytest.mark.parametrize("text,overrides,expect", [
    (BASE + "bogus: 1\n", [], "unknown key 'bogus'"),
    (BASE, ["sampling.temprature=0.5"], "unknown key 'sampling.temprature'"),
    (BASE, ["sampling.n=0"], "sampling.n: Input should be greater than or equal to 1"),
    (BASE, ["sampling.top_p=abc"], "sampling.top_p: Input should be a valid number"),
    (BASE, ["shard.index=3", "shard.count=2"], "index 3 must be < count 2"),
    ("source: {kind: hf, path: x.jsonl}\noutput_dir: o\n", [], "missing required key 'teacher'"),
    (BASE, ["source.kind=nope"], "source"),
    (BASE, ["teacher.backend=openai", "teacher.api=completions"], "set teacher.tokenizer"),
    (BASE, ["sampling.n"], "not of the form key.sub=value"),
])
def test_bad_config_is_one_line_naming_file_and_field(tmp_path, text, overrides, expect):
    p = _write(tmp_path, text)
    with pytest.raises(CotdistillError) as e:
        load_config(GenerateConfig, p, overrides)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and expect in msg


def test_malformed_yaml_names_line(tmp_path):
    p = _write(tmp_path, "source: {kind: hf\nteacher: [\n")
    with pytest.raises(CotdistillError, match=r"c\.yaml: line \d+ column \d+: malformed YAML"):
        load_config(GenerateConfig, p)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(CotdistillError, match="config file not found"):
        load_config(GenerateConfig, tmp_path / "nope.yaml")
    with pytest.raises(CotdistillError, match="top level must be a mapping"):
        load_config(GenerateConfig, _write(tmp_path, "- a\n- b\n"))


def test_openai_teacher_defaults():
    t = OpenAITeacher(model="m")
    assert t.api == "chat" and t.max_concurrency == 64 and t.base_url.endswith("/v1")


def test_each_method_has_its_own_config_class_and_refuses_the_fields_of_others():
    from cotdistill.config import TrainGKD, TrainKD, TrainLogitKD, TrainSFT
    from cotdistill.config.train import METHOD_DEFAULTS

    base = {"student": "s", "dataset_dir": "d", "output_dir": "o"}
    assert type(TrainConfig.model_validate(base)) is TrainSFT
    assert type(TrainConfig(**base, method="distill", teacher="t")) is TrainGKD
    assert type(load_config(TrainConfig, None, ["student=s", "dataset_dir=d", "output_dir=o", "method=logit_kd",
                                                "logprobs=c"])) is TrainLogitKD
    kd = TrainConfig(**base, method="kd", teacher="t", cosine=0.5)
    assert type(kd) is TrainKD and kd.cosine == 0.5
    with pytest.raises(CotdistillError, match=r"logprobs: method 'sft' does not use this \(fields of logit_kd\)"):
        load_config(TrainConfig, None, ["student=s", "dataset_dir=d", "output_dir=o", "logprobs=c"])
    with pytest.raises(ValidationError, match="gkd: method 'kd' does not use this .fields of distill, gkd."):
        TrainConfig(**base, method="kd", teacher="t", gkd={"lmbda": 1.0})
    # a fingerprint hashes every method's fields: the absent ones at their defaults, as the one flat config did
    sft = TrainConfig(**base).fingerprint_dump()
    assert {"teacher", "teachers", "features", "logprobs", "gkd", "kd", "cosine"} <= set(sft)
    assert sft["kd"] == METHOD_DEFAULTS["kd"] and sft["teacher"] is None
    assert kd.fingerprint_dump()["cosine"] == 0.5 and kd.fingerprint_dump()["gkd"] == METHOD_DEFAULTS["gkd"]


def test_kd_remedies_and_selection_are_checked():
    from pydantic import ValidationError

    from cotdistill.config.train import METHOD_CONFIGS

    base = dict(student="s", dataset_dir="d", output_dir="o")
    with pytest.raises(ValidationError, match="kd.label_smoothing: only method 'kd'"):
        METHOD_CONFIGS["logit_kd"].model_validate({**base, "method": "logit_kd", "logprobs": "x",
                                                   "kd": {"label_smoothing": 0.1}})
    with pytest.raises(ValidationError, match="weighs several teachers per example"):
        METHOD_CONFIGS["kd"].model_validate({**base, "method": "kd", "teacher": "t",
                                             "kd": {"selection": "gold_likelihood"}})
    with pytest.raises(ValidationError, match="less than 1"):
        METHOD_CONFIGS["kd"].model_validate({**base, "method": "kd", "teacher": "t", "kd": {"label_smoothing": 1.0}})
    ok = METHOD_CONFIGS["kd"].model_validate({**base, "method": "kd", "teachers": [{"model": "a"}, {"model": "b"}],
                                              "kd": {"selection": "gold_likelihood", "confidence_penalty": 0.1}})
    assert ok.kd.selection_tau == 1.0
