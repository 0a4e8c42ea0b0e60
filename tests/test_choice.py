"""Multiple choice end to end: MMLU- and GPQA-shaped sources become lettered problems, the template renders the
options, the verifier scores the committed letter, and an eval runs the path through real vLLM."""

import json

import pytest
from conftest import ROOT, teacher_dict, write_jsonl

from cotdistill.config import HFSource
from cotdistill.errors import CotdistillError
from cotdistill.prompts import load_template
from cotdistill.sources import load_problems
from cotdistill.verify_pool import verify_pairs

MMLU_FILE = ROOT / "data/choice_arithmetic_test.jsonl"
GPQA_FIELDS = {"question": "Question", "answer": "Correct Answer", "id": "Record ID", "shuffle_choices": True,
               "choices": ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]}


def gpqa_file(tmp_path, n=12):
    return write_jsonl(tmp_path / "gpqa.jsonl", [
        {"Record ID": f"rec{i}", "Question": f"Which is {i} squared?", "Correct Answer": str(i * i),
         "Incorrect Answer 1": str(i * i + 1), "Incorrect Answer 2": str(2 * i + 7), "Incorrect Answer 3": str(-i - 1)}
        for i in range(2, 2 + n)])


def test_mmlu_shape_gives_letters_and_options():
    rows = [json.loads(x) for x in MMLU_FILE.read_text().splitlines()]
    probs = load_problems(HFSource(path=str(MMLU_FILE), fields={"id": "id", "choices": "choices"}))
    assert [p.answer for p in probs] == ["ABCD"[r["answer"]] for r in rows]
    assert probs[0].metadata["choices"] == rows[0]["choices"] and "solution" in probs[0].metadata
    assert {p.answer for p in probs} == set("ABCD")  # the right option is not always in one place


def test_gpqa_shape_is_shuffled_the_same_way_every_time(tmp_path):
    src = HFSource(path=str(gpqa_file(tmp_path)), fields=GPQA_FIELDS)
    a, b = load_problems(src), load_problems(src)
    assert [p.metadata["choices"] for p in a] == [p.metadata["choices"] for p in b]
    for p in a:
        i = int(p.question.split()[2])
        assert p.metadata["choices"]["ABCD".index(p.answer)] == str(i * i)  # the letter points at the right text
        assert "Correct Answer" not in p.metadata and "Incorrect Answer 1" not in p.metadata
    assert len({p.answer for p in a}) >= 3  # the right answer no longer always sits first


@pytest.mark.parametrize("rows,fields,message", [
    ([{"question": "q", "choices": ["1", "2"], "answer": 5}], {"choices": "choices"},
     r"row 1: field 'answer' = '5' names no single option of 2; give a 0-based index"),
    ([{"question": "q", "choices": ["1"], "answer": 0}], {"choices": "choices"},
     r"row 1: source.fields.choices \('choices'\) must give a list of 2 to 10 options"),
    ([{"question": "q", "choices": ["1", " "], "answer": 0}], {"choices": "choices"}, r"an option is empty"),
    ([{"question": "q", "options": ["1", "2"], "answer": 0}], {"choices": "choices"},
     r"column 'choices' \(source.fields.choices\) not found"),
])
def test_bad_multiple_choice_rows_fail_in_one_line(tmp_path, rows, fields, message):
    path = write_jsonl(tmp_path / "mc.jsonl", rows)
    with pytest.raises(CotdistillError, match=message):
        load_problems(HFSource(path=str(path), fields=fields))


def test_template_renders_lettered_options():
    p = load_problems(HFSource(path=str(MMLU_FILE), fields={"id": "id", "choices": "choices"}, limit=1))[0]
    for name in ("multiple_choice", "multiple_choice_think"):
        user = load_template(name).render(p)[-1].content
        for letter, opt in zip("ABCD", p.metadata["choices"]):
            assert f"\n{letter}. {opt}\n" in user


def test_verify_pairs_scores_letters_and_option_text(tmp_path):
    p = load_problems(HFSource(path=str(gpqa_file(tmp_path, 1)), fields=GPQA_FIELDS))[0]
    right = p.metadata["choices"]["ABCD".index(p.answer)]
    wrong = next(x for x in "ABCD" if x != p.answer)
    got = verify_pairs([(f"Answer: {p.answer}", p), (f"I'd pick {wrong}", p), (f"The answer is {right}.", p),
                        (f"Either {p.answer} or {wrong}.", p)], workers=1)
    assert [v.correct for v in got] == [True, False, True, False]
    assert got[1].extracted == wrong and got[3].reason == "no_answer"


def test_eval_runs_a_multiple_choice_benchmark(tiny_model, vllm_teacher, tmp_path):
    from cotdistill import evaluate
    from cotdistill.config import EvalConfig

    cfg = EvalConfig.model_validate({
        "models": [{"name": "teacher", "role": "teacher", "serve": teacher_dict(tiny_model)},
                   {"name": "student", "role": "student", "serve": teacher_dict(tiny_model)}],
        "benchmarks": [{"name": "mc", "template": "multiple_choice", "source": {
            "kind": "hf", "path": str(MMLU_FILE), "fields": {"id": "id", "choices": "choices"}, "limit": 4}}],
        "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 8, "seed": 0}, "ks": [1, 2],
        "verify_workers": 1, "output_dir": str(tmp_path / "eval"), "progress": False})
    evaluate.run(cfg, teachers={"teacher": vllm_teacher, "student": vllm_teacher})
    out = tmp_path / "eval/student/mc"
    problems = [json.loads(x) for x in (out / "generate/problems.jsonl").read_text().splitlines()]
    assert all(p["answer"] in "ABCD" and len(p["metadata"]["choices"]) == 4 for p in problems)
    traces = [json.loads(x) for x in (out / "generate/traces.jsonl").read_text().splitlines()]
    assert all("\nA. " in t["messages"][-1]["content"] for t in traces)
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 8 and all(v["reason"] in {"match", "mismatch", "no_answer"} for v in verdicts)
    assert all(v["extracted"] is None or v["extracted"] in "ABCD" for v in verdicts)
