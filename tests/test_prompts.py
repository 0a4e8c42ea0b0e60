"""Prompt templates: strict rendering, content hash, shipped templates load."""

import pytest

from cotdistill.errors import CotdistillError
from cotdistill.prompts import PROMPTS_DIR, load_template
from cotdistill.records import Problem

P = Problem(id="p1", question="What is 2+2?", answer="4", source="test", metadata={"unit": "apples"})


@pytest.mark.parametrize("name", sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml")))
def test_shipped_templates_render(name):
    t = load_template(name)
    task_fields = {"choices": ["3", "4"], "tests": [{"assert": "1"}]}  # multiple-choice and code templates
    msgs = t.render(P.model_copy(update={"metadata": {**P.metadata, **task_fields}}))
    if name == "magpie":  # an open user turn: the model writes the user's message (cotdistill/chat.py)
        assert msgs[-1].role == "user" and msgs[-1].content == ""
    else:
        assert msgs[-1].role == "user" and "What is 2+2?" in msgs[-1].content
    assert len(t.hash) == 16


def test_required_templates_exist():
    assert {"math_boxed_think", "gsm8k", "reasoning_gym"} <= {p.stem for p in PROMPTS_DIR.glob("*.yaml")}
    boxed = load_template("math_boxed_think")
    assert boxed.spec.think and boxed.spec.answer_format == "boxed"
    assert "\\boxed{" in boxed.render(P)[-1].content and boxed.render(P)[0].role == "system"
    assert load_template("gsm8k").spec.answer_format == "hashes"


def _custom(tmp_path, user, system=None):
    p = tmp_path / "t.yaml"
    p.write_text(f"name: custom\nuser: '{user}'\n" + (f"system: '{system}'\n" if system else ""))
    return load_template(str(p))


def test_variables_metadata_and_extras(tmp_path):
    t = _custom(tmp_path, "{{ question }} in {{ metadata.unit }} ({{ style }})")
    assert t.render(P, {"style": "brief"})[0].content == "What is 2+2? in apples (brief)"


@pytest.mark.parametrize("user,var", [("{{ question }} {{ style }}", "style"),
                                      ("{{ metadata.colour }}", "colour")])
def test_missing_variable_names_template_variable_problem(tmp_path, user, var):
    t = _custom(tmp_path, user)
    with pytest.raises(CotdistillError) as e:
        t.render(P)
    assert f"variable '{var}'" in str(e.value) and "template 'custom'" in str(e.value) and "'p1'" in str(e.value)


def test_hash_tracks_content(tmp_path):
    a = _custom(tmp_path, "{{ question }}").hash
    b = _custom(tmp_path, "{{ question }}!").hash
    assert a != b and a == _custom(tmp_path, "{{ question }}").hash


def test_unknown_template_and_bad_files(tmp_path):
    with pytest.raises(CotdistillError, match="neither a template"):
        load_template("no_such_template")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(CotdistillError, match="missing required key 'user'"):
        load_template(str(bad))
    bad.write_text("name: x\nuser: '{{ question '\n")
    with pytest.raises(CotdistillError, match="Jinja syntax error"):
        load_template(str(bad))


def test_few_shot_turns_come_before_the_question():
    msgs = load_template("easy_arithmetic").render(P)
    assert [m.role for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1].content == "2 + 3 = 5. The answer is 5." and msgs[2].content == "What is 2+2?"


def test_a_user_template_directory_overrides_the_shipped_one(tmp_path, monkeypatch):
    from cotdistill.prompts import load_template

    (tmp_path / "arithmetic_cot.yaml").write_text("name: arithmetic_cot\nuser: 'Mine: {{ question }}'\n")
    monkeypatch.setenv("COTDISTILL_PROMPTS", str(tmp_path))
    assert load_template("arithmetic_cot").path == tmp_path / "arithmetic_cot.yaml"
    assert load_template("gsm8k").path.parent != tmp_path  # the others still come from the shipped set


@pytest.mark.parametrize("user", ["{{ question.__class__.__mro__[1].__subclasses__() }}",
                                  "{{ metadata.update({\"unit\": \"pears\"}) }}{{ metadata.unit }}"])
def test_a_template_file_renders_in_the_sandbox(tmp_path, user):
    """Templates from a user's file are untrusted: no reach into Python internals, no changing the problem."""
    t = _custom(tmp_path, user)
    with pytest.raises(CotdistillError, match=r"template 'custom' .*refused by the template sandbox"):
        t.render(P)
    assert P.metadata == {"unit": "apples"}
