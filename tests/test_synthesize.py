"""Problem synthesis (cotdistill/synthesize.py): the funnel, lineage, resume and config guard on the tiny local
model through the real vLLM engine; the write-time checks (dedup against the seeds, the decontamination gate) on
hand-made writer outputs. The embedded writer and SmolLM2 run in tests/test_synthesize_real.py (slow)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import ROOT, read_jsonl, teacher_dict, write_jsonl

from cotdistill.config import SynthesizeConfig
from cotdistill.decontam import NgramIndex, words
from cotdistill.dedup import TextDedup
from cotdistill.errors import CotdistillError
from cotdistill.records import Problem, SamplingInfo, TeacherInfo, TemplateInfo, Trace


def _seeds(tmp_path, n=5):
    rows = [json.loads(line) for line in (ROOT / "data" / "digit_chain_train.jsonl").read_text().splitlines()[:n]]
    return write_jsonl(tmp_path / "seeds.jsonl", rows)


def _cfg(tiny_model, tmp_path, **kw) -> SynthesizeConfig:
    d = {"teacher": teacher_dict(tiny_model), "output_dir": str(tmp_path / "synth"),
         "seeds": {"kind": "hf", "path": str(_seeds(tmp_path)), "fields": {"id": "id"}}, "shots": 2, "requests": 6,
         # the random tiny model seldom ends a turn: stop strings end most samples as a writer's would
         "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 12, "stop": ["a", "e", "o", " "]},
         "checks": {"min_chars": 1}, "progress": False}
    d.update(kw)
    return SynthesizeConfig.model_validate(d)


def test_few_shot_funnel_lineage_and_resume(tiny_model, vllm_teacher, tmp_path):
    from cotdistill import synthesize

    cfg = _cfg(tiny_model, tmp_path)
    rep = synthesize.run(cfg, teacher=vllm_teacher)
    out = tmp_path / "synth"
    cands = read_jsonl(out / "candidates.jsonl")
    assert rep["written"] == len(cands) == 12  # 6 requests x 2 samples
    assert sum(f["dropped"] for f in rep["funnel"]) + rep["kept"] == rep["written"]
    assert rep["funnel"][-1]["left"] == rep["kept"] == len(read_jsonl(out / "problems.jsonl"))
    requests = read_jsonl(out / "round0" / "requests.jsonl")
    shown = [s for r in requests for s in r["seeds"].split(",")]
    assert len(shown) == 12 and set(shown) == {f"chain-train-{i:05d}" for i in range(5)}
    assert set(Counter(shown).values()) <= {2, 3}  # rotated: every seed shown about equally often
    assert all(len(set(r["seeds"].split(","))) == 2 for r in requests)  # no seed twice in one request
    for c in cands:  # lineage: request, sample, template and the seeds it was shown
        assert c["synth_round"] == 0 and c["synth_template"].startswith("write_problem@")
        assert c["synth_seeds"] == next(r["seeds"] for r in requests if r["id"] == c["synth_request"])
    prompt = read_jsonl(out / "round0" / "traces.jsonl")[0]["messages"][-1]["content"]
    assert prompt.startswith("Write a new problem like these:\n")
    assert rep["kept"] == sum(c["drop"] is None for c in cands) > 0
    before = (out / "problems.jsonl").read_bytes()
    again = synthesize.run(cfg, teacher=vllm_teacher)  # resume: every trace is on disk, nothing is generated
    assert json.loads((out / "round0" / "summary.json").read_text())["written_this_run"] == 0
    assert (out / "problems.jsonl").read_bytes() == before and again["kept"] == rep["kept"]
    with pytest.raises(CotdistillError, match="differs in: requests"):
        synthesize.run(_cfg(tiny_model, tmp_path, requests=7), teacher=vllm_teacher)


def test_a_copied_writing_round_is_reused_without_an_engine_and_screened_again(tiny_model, vllm_teacher, tmp_path,
                                                                              monkeypatch):
    """Two syntheses that differ in their filters only write the same problems: a round copied into the second one's
    folder is resumed as finished (its requests file moved; the same requests), and no engine starts."""
    import shutil

    from cotdistill import synthesize

    rep = synthesize.run(_cfg(tiny_model, tmp_path), teacher=vllm_teacher)
    shutil.copytree(tmp_path / "synth" / "round0", tmp_path / "other" / "round0")
    monkeypatch.setattr("cotdistill.sampling.make_teacher", lambda *a, **k: pytest.fail("an engine was built"))
    other = synthesize.run(_cfg(tiny_model, tmp_path, output_dir=str(tmp_path / "other"), checks={"min_chars": 4}))
    first, second = (read_jsonl(tmp_path / d / "candidates.jsonl") for d in ("synth", "other"))
    assert other["written"] == rep["written"] and [c["question"] for c in first] == [c["question"] for c in second]
    assert any(c["drop"] == "too_short" for c in second) or all(len(c["question"]) >= 4 for c in first)
    assert all(c["drop"] == "too_short" for c in second if c["question"] and len(c["question"]) < 4)
    assert json.loads((tmp_path / "other" / "round0" / "summary.json").read_text())["written_this_run"] == 0


def test_nothing_surviving_is_an_error_naming_the_funnel(tiny_model, vllm_teacher, tmp_path):
    from cotdistill import synthesize

    cfg = _cfg(tiny_model, tmp_path, sampling={"n": 1, "temperature": 1.0, "max_tokens": 1}, requests=2,
               checks={"min_chars": 5})  # one token: cut off, or too short had it ended
    with pytest.raises(CotdistillError, match=r"no written problem survived \(2 written; dropped: (truncated|too_sh)"):
        synthesize.run(cfg, teacher=vllm_teacher)
    assert len(read_jsonl(tmp_path / "synth" / "candidates.jsonl")) == 2  # the funnel is on disk to look at


def _trace(pid: str, i: int, text: str, finish="stop") -> Trace:
    return Trace(problem_id=pid, sample_index=i, messages=[], completion=text, finish_reason=finish, prompt_tokens=1,
                 completion_tokens=len(text.split()), teacher=TeacherInfo(backend="vllm", model="m"),
                 template=TemplateInfo(name="write_problem", hash="h"),
                 sampling=SamplingInfo(n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=9, stop=[],
                                       logprobs=None),
                 seed=0)


def test_screen_drops_seed_repeats_duplicates_and_contaminated(tiny_model, tmp_path):
    from cotdistill.synthesize import _screen

    cfg = _cfg(tiny_model, tmp_path, checks={"task": "digit_chain", "near_dup_threshold": None})
    held = json.loads((ROOT / "data" / "digit_chain_test.jsonl").read_text().splitlines()[3])
    seed = "Last digit of 1+2+3, left to right."
    dedup = TextDedup(exact=True)
    dedup.add("seed:s0", seed)
    index = NgramIndex(17)
    index.add("digit_chain_test", held["id"], held["question"])
    req = {"r0-00000": Problem(id="r0-00000", question="x", source="synth", metadata={"seeds": "s0"})}
    texts = [seed, "Last digit of 4*4-1, left to right.", "Last digit of 4*4-1, left to right.", held["question"],
             "Last digit of 4*, left to right.", "Last digit of 9+9, left to right."]
    hits = []
    rows = _screen(cfg, 0, [_trace("r0-00000", i, t, "length" if i == 5 else "stop") for i, t in enumerate(texts)],
                   req, dedup, index, hits)
    assert [r["drop"] for r in rows] == ["duplicate_exact", None, "duplicate_exact", "contaminated", "task_invalid",
                                         "truncated"]
    assert rows[1]["true_answer"] == "5" and rows[1]["synth_seeds"] == "s0"
    assert hits == [{"candidate": rows[3]["id"], "eval_set": "digit_chain_test", "eval_id": held["id"],
                     "ngram": " ".join(words(held["question"]))}]


def test_config_refusals(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="few_shot needs seeds"):
        _cfg(tiny_model, tmp_path, seeds=None)
    with pytest.raises(ValueError, match="difficulty needs consistency"):
        _cfg(tiny_model, tmp_path, consistency=None, difficulty={"min_pass": 0.2})
    with pytest.raises(ValueError, match="min_pass 0.9 > max_pass 0.5"):
        _cfg(tiny_model, tmp_path, difficulty={"min_pass": 0.9, "max_pass": 0.5})
    with pytest.raises(ValueError, match="teacher.api: completions"):
        _cfg(tiny_model, tmp_path, mode="magpie", teacher={"backend": "openai", "model": "m"})
    assert _cfg(tiny_model, tmp_path, mode="magpie").mode_template() == "magpie"
    assert _cfg(tiny_model, tmp_path, mode="topics", topics=["ages"]).mode_template() == "write_problem_topic"
