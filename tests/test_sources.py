"""Problem sources: local HF files of each format, field mapping, reasoning-gym, bad input."""

import json

import pytest
from conftest import ROOT, write_jsonl

from cotdistill.config import FieldMap, HFSource, ReasoningGymSource
from cotdistill.errors import CotdistillError
from cotdistill.sources import load_problems

ROWS = [{"qid": f"q{i}", "prompt": f"What is {i}+1?", "sol": str(i + 1), "level": i % 3} for i in range(5)]
FIELDS = FieldMap(question="prompt", answer="sol", id="qid")


def _write(tmp_path, fmt):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    path = tmp_path / f"p.{fmt}"
    {"jsonl": lambda: write_jsonl(path, ROWS), "json": lambda: ds.to_json(str(path)),
     "csv": lambda: ds.to_csv(str(path), index=False), "parquet": lambda: ds.to_parquet(str(path))}[fmt]()
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_local_formats_with_field_mapping(tmp_path, fmt):
    probs = load_problems(HFSource(path=str(_write(tmp_path, fmt)), fields=FIELDS))
    assert [p.id for p in probs] == [f"q{i}" for i in range(5)]
    assert probs[2].question == "What is 2+1?" and probs[2].answer == "3"
    assert probs[2].metadata == {"level": 2} and probs[2].source.startswith("hf:")


def test_split_slicing_limit_and_row_ids(tmp_path):
    path = _write(tmp_path, "jsonl")
    probs = load_problems(
        HFSource(path=str(path), split="train[1:4]", fields=FieldMap(question="prompt", answer=None))
    )
    assert [p.id for p in probs] == ["0", "1", "2"] and probs[0].question == "What is 1+1?" and probs[0].answer is None
    assert len(load_problems(HFSource(path=str(path), fields=FIELDS, limit=2))) == 2


def test_shipped_data_files_load():
    probs = load_problems(HFSource(path=str(ROOT / "data/arithmetic_test.jsonl"), fields=FieldMap(id="id")))
    assert len(probs) == 100 and probs[0].id == "arith-test-0000" and "solution" in probs[0].metadata


def test_bad_inputs_name_file_row_field(tmp_path):
    path = _write(tmp_path, "jsonl")
    with pytest.raises(
        CotdistillError, match=r"column 'question' \(source\.fields\.question\) not found; columns are"
    ):
        load_problems(HFSource(path=str(path)))
    for name, content, expect in [
        ("empty.jsonl", "", "empty.jsonl': the file has no rows; it needs at least one problem row"),
        ("header.csv", "question,answer\n", r"header.csv': the file has no rows \(a header only\)"),
        ("blank.jsonl", "\n\n", "blank.jsonl': the file has no rows"),
    ]:
        (tmp_path / name).write_text(content)
        with pytest.raises(CotdistillError, match=expect):
            load_problems(HFSource(path=str(tmp_path / name)))
    with pytest.raises(CotdistillError, match="file not found"):
        load_problems(HFSource(path=str(tmp_path / "missing.jsonl")))
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "question": "x"}, {"id": "a", "question": "y"}])
    with pytest.raises(CotdistillError, match=r"row 2: id 'a' repeats row 1;"):
        load_problems(HFSource(path=str(dup), fields=FieldMap(id="id", answer=None)))
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"question": "x"}, {"question": "  "}])
    with pytest.raises(CotdistillError, match=r"row 2: field 'question' is empty"):
        load_problems(HFSource(path=str(blank), fields=FieldMap(answer=None)))
    # rows as an editor counts them: from 1, and the line where blank lines make it differ
    (tmp_path / "gaps.jsonl").write_text('{"question": "x"}\n\n\n{"question": ""}\n')
    with pytest.raises(CotdistillError, match=r"row 2 \(line 4\): field 'question' is empty"):
        load_problems(HFSource(path=str(tmp_path / "gaps.jsonl"), fields=FieldMap(answer=None)))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "mine.jsonl").write_text('{"question": "x"}\n')
    with pytest.raises(CotdistillError, match=r"folder': is a folder, not a problems file; give a .jsonl, .json, "
                                              r".parquet or .csv file \(in it: mine.jsonl\)"):
        load_problems(HFSource(path=str(tmp_path / "folder")))
    (tmp_path / "semi.csv").write_text("question;answer\nWhat is 1+1?;2\n")  # a spreadsheet's ';' export
    with pytest.raises(CotdistillError, match=r"looks ';'-separated: save it comma-separated"):
        load_problems(HFSource(path=str(tmp_path / "semi.csv")))
    (tmp_path / "p.txt").write_text("hi")
    with pytest.raises(CotdistillError, match="unsupported file type"):
        load_problems(HFSource(path=str(tmp_path / "p.txt")))


def test_hub_id_unreachable_is_one_line():
    # HF_HUB_OFFLINE=1 in tests: the real hub code path runs and fails cleanly
    with pytest.raises(CotdistillError) as e:
        load_problems(HFSource(path="openai/gsm8k", name="main", split="test"))
    assert "could not load hub dataset" in str(e.value) and "\n" not in str(e.value)


def test_reasoning_gym_entries_keep_what_the_scorer_needs():
    import reasoning_gym

    probs = load_problems(ReasoningGymSource(task="chain_sum", size=5, seed=3, config={"min_terms": 3}))
    assert len(probs) == 5 and probs[0].id == "chain_sum-3-0" and probs[0].source == "reasoning_gym:chain_sum"
    entry = probs[0].metadata["rg_entry"]
    json.dumps(probs[0].metadata)  # serialisable
    score = reasoning_gym.get_score_answer_fn(probs[0].metadata["rg_task"])
    assert score(answer=probs[0].answer, entry=entry) == 1.0
    assert score(answer="not a number", entry=entry) < 1.0


def test_reasoning_gym_bad_task_and_option():
    with pytest.raises(CotdistillError, match="unknown reasoning-gym task 'chain_summ'; did you mean chain_sum"):
        load_problems(ReasoningGymSource(task="chain_summ"))
    with pytest.raises(CotdistillError, match="invalid option for reasoning-gym task 'chain_sum'"):
        load_problems(ReasoningGymSource(task="chain_sum", config={"bogus": 1}))


def test_a_file_that_is_not_utf8_names_its_row_and_byte(tmp_path):
    """Invalid UTF-8 (a latin-1 export) used to end in a 40-line pyarrow traceback."""
    p = tmp_path / "p.jsonl"
    rows = [json.dumps({"question": "What is 2+2?", "answer": "4"}).encode(),
            json.dumps({"question": "What is 3+3?", "answer": "6"}).encode(),
            b'{"question": "Caf\xe9 bill: 5+7?", "answer": "12"}']
    p.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(CotdistillError, match=r"p.jsonl' *: row 3 \(line 3, byte 17 of the line, offset \d+ in the "
                                              r"file\): b'\\xe9' is not UTF-8; re-save the file as UTF-8"):
        load_problems(HFSource(path=str(p)))
