"""Filter stage on trace records written to disk: every funnel stage, votes, decontamination,
selection, outputs (HF datasets + card) and bad input."""

import json

import pytest
from conftest import read_jsonl, write_jsonl

from cotdistill import filter as stage
from cotdistill.config import FilterConfig
from cotdistill.errors import CotdistillError
from cotdistill.records import Message, Problem, SamplingInfo, TeacherInfo, Trace

TEACHER = TeacherInfo(backend="vllm", model="t", tokenizer_hash="abc")
SAMPLING = SamplingInfo(n=4, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=64, stop=[], logprobs=None)


def trace(pid, i, completion, finish="stop", tokens=None, template="math_boxed_think"):
    from cotdistill.prompts import load_template

    t = load_template(template)
    return Trace(problem_id=pid, sample_index=i, messages=[Message(role="user", content=f"q {pid}")],
                 completion=completion, finish_reason=finish, prompt_tokens=5,
                 completion_tokens=tokens if tokens is not None else len(completion.split()),
                 teacher=TEACHER, template=t.info, sampling=SAMPLING, seed=i)


def write_run(d, problems, traces):
    d.mkdir(parents=True, exist_ok=True)
    (d / "problems.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in problems))
    (d / "traces.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in traces))
    return d


LONG = "<think>" + " ".join(f"step {i} we add numbers carefully" for i in range(30)) + "</think>\\boxed{7}"


@pytest.fixture
def run_dir(tmp_path):
    probs = [
        Problem(id="p1", question="What is three plus four exactly in whole numbers please", answer="7", source="t"),
        Problem(id="p2", question="Unknown gold problem", answer=None, source="t"),
        Problem(
            id="p3",
            question="Leaked benchmark question about the number of apples in the basket",
            answer="5",
            source="t",
        ),
    ]
    traces = [
        trace("p1", 0, "<think>3+4</think>\\boxed{7}"),                    # kept
        trace("p1", 1, "<think>3+4</think>\\boxed{8}"),                    # incorrect
        trace("p1", 2, "<think>3+4 is", finish="length"),                  # truncated
        trace("p1", 3, "<think>3+4</think>\\boxed{7}"),                    # exact duplicate of 0
        trace("p1", 4, "3+4 = 7 \\boxed{7}"),                              # format: no think
        trace("p1", 5, LONG, tokens=500),                                   # length
        trace("p1", 6, "<think>3+4</think>\\boxed{7}\nFinal answer: 8"),  # format: two answers that disagree
        trace("p1", 7, "<think>I reckon 3+4</think>\\boxed{7}"),           # kept (different text)
        trace("p2", 0, "<think>a</think>\\boxed{10}"), trace("p2", 1, "<think>b</think>\\boxed{10}"),
        trace("p2", 2, "<think>c</think>\\boxed{10.0}"), trace("p2", 3, "<think>d</think>\\boxed{11}"),
        trace("p3", 0, "<think>count</think>\\boxed{5}"),                 # contaminated problem
    ]
    return write_run(tmp_path / "gen", probs, traces)


def cfg(run_dir, tmp_path, **kw):
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [
        {"question": "A leaked benchmark question about the number of apples in the basket today", "answer": "5"}])
    d = {"generate_dir": str(run_dir), "output_dir": str(tmp_path / "out"), "max_completion_tokens": 100,
         "verify_workers": 1, "progress": False,
         "decontam": {"eval_sets": [{"kind": "hf", "path": str(eval_file)}], "ngram": 8}}
    d.update(kw)
    return FilterConfig.model_validate(d)


def test_funnel_votes_and_outputs(run_dir, tmp_path):
    summary = stage.run(cfg(run_dir, tmp_path))
    out = tmp_path / "out"
    verdicts = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(out / "verdicts.jsonl")}
    expect = {("p1", 0): None, ("p1", 1): "incorrect", ("p1", 2): "truncated", ("p1", 3): "duplicate_exact",
              ("p1", 4): "format", ("p1", 5): "length", ("p1", 6): "format", ("p1", 7): None,
              ("p2", 0): None, ("p2", 1): None, ("p2", 2): None, ("p2", 3): "incorrect", ("p3", 0): "contaminated"}
    assert {k: v["dropped"] for k, v in verdicts.items()} == expect
    assert verdicts[("p2", 0)]["label"] == "10" and verdicts[("p2", 0)]["label_source"] == "voted"
    funnel = {s["stage"]: s["dropped"] for s in summary["funnel"]}
    assert funnel["format"] == 2 and funnel["incorrect"] == 2 and funnel["contaminated"] == 1
    assert summary["kept"] == 5 and summary["voted_labels"] == 1 and summary["decontamination_hits"] == 1

    import datasets

    sft = datasets.load_from_disk(str(out / "sft"))
    assert len(sft) == 5 and sft[0]["messages"][-1]["role"] == "assistant"
    assert {"problem_id", "sample_index", "teacher", "template_hash", "correct"} <= set(sft.column_names)
    prompts = datasets.load_from_disk(str(out / "prompts"))
    assert sorted(prompts["problem_id"]) == ["p1", "p2"] and prompts[0]["prompt"][-1]["role"] == "user"
    assert [json.loads(f) for f in prompts["problem_fields"]] == [{"source": "t"}] * 2  # on_policy routes by them
    card = (out / "README.md").read_text()
    assert "| contaminated | 1 |" in card and "p3" in card and "## Teacher pass rate per problem" in card
    report = json.loads((out / "filter_report.json").read_text())
    assert report["decontamination_hits"][0]["eval_set"].endswith("eval.jsonl")


def test_near_duplicates_and_per_problem_cap(tmp_path):
    base = "<think>" + " ".join(f"we compute part {i} of the sum" for i in range(20))
    probs = [Problem(id="p", question="q", answer="7", source="t")]
    traces = [trace("p", 0, base + "</think>\\boxed{7}"),
              trace("p", 1, base + " again</think>\\boxed{7}"),  # near duplicate of 0
              trace("p", 2, "<think>totally different words here</think>\\boxed{7}"),
              trace("p", 3, "<think>another distinct path to it</think>\\boxed{7}")]
    d = write_run(tmp_path / "g", probs, traces)
    s = stage.run(FilterConfig(generate_dir=str(d), output_dir=str(tmp_path / "o"), verify_workers=1,
                               progress=False, near_dup_threshold=0.8, max_per_problem=2))
    dropped = {r["sample_index"]: r["dropped"] for r in read_jsonl(tmp_path / "o/verdicts.jsonl")}
    assert dropped[1] == "near_duplicate" and list(dropped.values()).count("over_per_problem_cap") == 1
    assert s["kept"] == 2


def test_bad_input(tmp_path, run_dir):
    with pytest.raises(CotdistillError, match="problems.jsonl: problem file not found"):
        stage.run(FilterConfig(generate_dir=str(tmp_path), output_dir=str(tmp_path / "o")))
    (tmp_path / "problems.jsonl").write_text((run_dir / "problems.jsonl").read_text())
    (tmp_path / "traces-00000-of-00002.jsonl").write_text("")
    with pytest.raises(
        CotdistillError, match=r"traces.jsonl: trace file not found \(shard files\? run `cotdistill merge`"
    ):
        stage.run(FilterConfig(generate_dir=str(tmp_path), output_dir=str(tmp_path / "o")))
    (tmp_path / "x").mkdir()
    write_run(tmp_path / "x", [Problem(id="a", question="q", answer="1", source="t")], [trace("zz", 0, "\\boxed{1}")])
    with pytest.raises(CotdistillError, match=r"line 1: problem 'zz' is not in problems.jsonl"):
        stage.run(FilterConfig(generate_dir=str(tmp_path / "x"), output_dir=str(tmp_path / "o")))
    bad = tmp_path / "x" / "traces.jsonl"
    row = json.loads(bad.read_text())
    del row["completion"]
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(CotdistillError, match=r"line 1: field 'completion': Field required"):
        stage.run(FilterConfig(generate_dir=str(tmp_path / "x"), output_dir=str(tmp_path / "o")))


def test_filter_cli_on_real_generation_output(tiny_model, vllm_teacher, tmp_path):
    """generate (real vLLM) -> `cotdistill filter`: the stages connect through files on disk."""
    from test_generate import make_cfg
    from typer.testing import CliRunner

    from cotdistill import generate
    from cotdistill.cli import app

    generate.run(make_cfg(tiny_model, tmp_path / "gen", **{"source.limit": 4}), teacher=vllm_teacher)
    c = tmp_path / "filter.yaml"
    c.write_text(f"generate_dir: {tmp_path / 'gen'}\noutput_dir: {tmp_path / 'out'}\nprogress: false\n")
    r = CliRunner().invoke(app, ["filter", str(c), "require_correct=false", "require_stop=false",
                                 "format_check=false", "verify_workers=1"])
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["traces"] == 12 and summary["kept"] + sum(s["dropped"] for s in summary["funnel"]) == 12
    assert len(read_jsonl(tmp_path / "out/verdicts.jsonl")) == 12


def test_diverse_selection_prefers_unlike_traces(tmp_path):
    probs = [Problem(id="p", question="q", answer="7", source="t")]
    a = "<think>" + " ".join(f"add the first pair then the second pair {i}" for i in range(8))
    traces = [
        trace("p", 0, a + "</think>\\boxed{7}", tokens=10),
        trace("p", 1, a + " and check</think>\\boxed{7}", tokens=11),  # close to 0
        trace(
            "p",
            2,
            "<think>" + " ".join(f"subtract backwards from ten {i}" for i in range(8)) + "</think>\\boxed{7}",
            tokens=30,
        ),
    ]
    d = write_run(tmp_path / "g", probs, traces)
    common = dict(generate_dir=str(d), verify_workers=1, progress=False, near_dup_threshold=None, max_per_problem=2)
    stage.run(FilterConfig(output_dir=str(tmp_path / "short"), select="shortest", **common))
    stage.run(FilterConfig(output_dir=str(tmp_path / "div"), select="diverse", **common))
    kept = lambda o: sorted(r["sample_index"] for r in read_jsonl(tmp_path / o / "sft.jsonl"))
    assert kept("short") == [0, 1] and kept("div") == [0, 2]


def test_vote_below_threshold_gives_no_label(tmp_path):
    probs = [Problem(id="p", question="q", answer=None, source="t")]
    traces = [trace("p", i, f"<think>x</think>\\boxed{{{v}}}") for i, v in enumerate([1, 2, 3, 1])]
    d = write_run(tmp_path / "g", probs, traces)
    s = stage.run(FilterConfig(generate_dir=str(d), output_dir=str(tmp_path / "o"), verify_workers=1,
                               progress=False, vote_threshold=0.6))
    assert s["voted_labels"] == 0 and s["kept"] == 0
    import datasets

    empty = datasets.load_from_disk(str(tmp_path / "o/sft"))  # nothing kept: still a loadable dataset
    assert len(empty) == 0 and "messages" in empty.column_names
    assert {s_["stage"]: s_["dropped"] for s_ in s["funnel"]}["cannot_tell"] == 4
    s = stage.run(FilterConfig(generate_dir=str(d), output_dir=str(tmp_path / "o2"), verify_workers=1,
                               progress=False, vote_threshold=0.5))
    assert s["voted_labels"] == 1 and s["kept"] == 1  # the two agreeing traces are identical text
    assert {s_["stage"]: s_["dropped"] for s_ in s["funnel"]}["duplicate_exact"] == 1


def test_vote_counts_only_finished_answers(tmp_path):
    """Two samples agree, two were cut off without an answer: 2 of 2 voters, not 2 of 4."""
    probs = [Problem(id="p", question="q", answer=None, source="t")]
    traces = [trace("p", 0, "<think>x</think>\\boxed{10}"), trace("p", 1, "<think>y</think>\\boxed{10}"),
              trace("p", 2, "<think>z is", finish="length"), trace("p", 3, "<think>w</think> no answer")]
    d = write_run(tmp_path / "g", probs, traces)
    s = stage.run(FilterConfig(generate_dir=str(d), output_dir=str(tmp_path / "o"), verify_workers=1,
                               progress=False, vote_threshold=0.6))
    assert s["voted_labels"] == 1 and s["kept"] == 2


def test_template_changed_since_generation_is_refused(tmp_path):
    probs = [Problem(id="p", question="q", answer="1", source="t")]
    t = trace("p", 0, "<think>x</think>\\boxed{1}")
    t = t.model_copy(update={"template": t.template.model_copy(update={"hash": "0123456789abcdef"})})
    d = write_run(tmp_path / "g", probs, [t])
    with pytest.raises(CotdistillError, match=r"rendered with template 'math_boxed_think' hash 0123456789abcdef, "
                                              r"the template is now .*restore that version"):
        stage.run(FilterConfig(generate_dir=str(d), output_dir=str(tmp_path / "o"), verify_workers=1, progress=False))
    s = stage.run(FilterConfig(generate_dir=str(d), output_dir=str(tmp_path / "o2"), verify_workers=1, progress=False,
                               format_check=False))
    assert s["kept"] == 1


def test_decontam_ngrams_keep_operators():
    from cotdistill.decontam import NgramIndex

    index = NgramIndex(n=8)
    index.add("eval", "t0", "Last digit of 1*5*5*2*5*1, left to right.")
    assert index.hits("Last digit of 1+5*5*2-5-2, left to right.") == []  # same digits, other operators
    assert index.hits("Q: last digit of 1 * 5 * 5 * 2 * 5 * 1, left to right?")  # same problem, other spacing


def test_r1_recipe_filter_keeps_correct_r1_shaped_traces(tmp_path):
    """DeepSeek-R1-Distill completions (the chat template pre-fills "<think>\\n", so only </think> is
    generated; "Thus, the answer is N. **Final Answer** \\[\\boxed{N}\\]" endings) through the filter
    settings of data/configs/run_math_r1_gpu.yaml, its hub eval set swapped for a local file."""
    import yaml
    from conftest import ROOT

    recipe = yaml.safe_load((ROOT / "data/configs/run_math_r1_gpu.yaml").read_text())
    gold = [
        "The sum is $3+4=\\boxed{7}$.",
        "We get $\\boxed{\\frac{1}{2}}$.",
        "Factor: $x=\\boxed{2}$ and $x=\\boxed{3}$.",
        "So $\\boxed{12}$.",
    ]
    probs = [Problem(id=f"m{i}", question=f"MATH problem number {i} about numbers", answer=g, source="t")
             for i, g in enumerate(gold)]
    r1 = [
        "Okay, 3 + 4 is 7.\n</think>\n\nAdding gives 7.\n\nThus, the answer is 7.\n\n**Final "
            "Answer**\n\\[\n\\boxed{7}\n\\]",
        "Hmm, half of 1 is 0.5.\n</think>\n\nThe value is \\(\\frac{1}{2}\\).\n\n**Final "
            "Answer**\n\\[\n\\boxed{\\dfrac{1}{2}}\n\\]",
        "So (x-2)(x-3) = 0.\n</think>\n\nThe solutions are \\(\\boxed{3}\\) and \\(\\boxed{2}\\).",
        "Okay, so 3 times 4 is 12. Let me check: 4 + 4 + 4 = 12",
    ]  # cut off inside the reasoning
    traces = [trace(f"m{i}", 0, c, tokens=40, finish="length" if i == 3 else "stop") for i, c in enumerate(r1)]
    traces.append(trace("m0", 1, r1[0].replace("is 7", "is 8").replace("{7}", "{8}"), tokens=40))  # wrong
    traces.append(trace("m1", 1, "Hmm.\n</think>\n\nThe answer is 1/2.\n\n**Final Answer**\n\\[\n\\boxed{2}\n\\]",
                        tokens=40))  # two final answers that disagree
    run = write_run(tmp_path / "gen", probs, traces)
    eval_file = write_jsonl(tmp_path / "math500.jsonl", [{"problem": "An unrelated benchmark question", "answer": "1",
                                                          "unique_id": "u1"}])
    flt = {**recipe["filter"], "generate_dir": str(run), "output_dir": str(tmp_path / "out"), "verify_workers": 1,
           "progress": False}
    flt["decontam"]["eval_sets"][0]["path"] = str(eval_file)
    flt["decontam"]["eval_sets"][0].pop("split")
    summary = stage.run(FilterConfig.model_validate(flt))
    dropped = {
        (r["problem_id"], r["sample_index"]): r["dropped"] for r in read_jsonl(tmp_path / "out" / "verdicts.jsonl")
    }
    assert dropped == {("m0", 0): None, ("m1", 0): None, ("m2", 0): None, ("m3", 0): "truncated",
                       ("m0", 1): "incorrect", ("m1", 1): "format"}
    assert summary["kept"] == 3


def test_output_does_not_depend_on_trace_file_order(run_dir, tmp_path):
    """generate writes traces as they complete; two runs of the same job differ only in line order. The
    training set (its row order included), the verdicts and the prompts must come out the same."""
    import random

    import datasets

    lines = (run_dir / "traces.jsonl").read_text().splitlines(keepends=True)
    random.Random(3).shuffle(lines)
    shuffled = tmp_path / "gen_shuffled"
    shuffled.mkdir()
    (shuffled / "problems.jsonl").write_text((run_dir / "problems.jsonl").read_text())
    (shuffled / "traces.jsonl").write_text("".join(lines))
    assert (shuffled / "traces.jsonl").read_text() != (run_dir / "traces.jsonl").read_text()
    outs = []
    for i, gen in enumerate((run_dir, shuffled)):
        c = cfg(gen, tmp_path, output_dir=str(tmp_path / f"out{i}"))
        stage.run(c)
        out = tmp_path / f"out{i}"
        sft = datasets.load_from_disk(str(out / "sft"))
        prompts = datasets.load_from_disk(str(out / "prompts"))
        outs.append((list(zip(sft["problem_id"], sft["sample_index"])), sft["messages"],
                     (out / "verdicts.jsonl").read_text(), prompts["problem_id"]))
    assert outs[0] == outs[1]
    assert outs[0][0] == sorted(outs[0][0])  # problem order of problems.jsonl (p1, p2), then sample index


def test_code_traces_are_kept_when_their_program_passes_the_tests(tmp_path):
    tests = [{"input": "3\n", "output": "9"}]
    probs = [Problem(id="sq", question="Square the input.", answer=None, source="t", metadata={"tests": tests})]
    good = "Read n, print n*n.\n```python\nn = int(input())\nprint(n * n)\n```"
    traces = [trace("sq", 0, good, template="code_python"),
              trace("sq", 1, "Easy.\n```python\nprint(int(input()) * 2)\n```", template="code_python"),  # wrong
              trace("sq", 2, "Just multiply n by itself.", template="code_python")]                        # no code
    d = write_run(tmp_path / "g", probs, traces)
    s = stage.run(FilterConfig(generate_dir=str(d), output_dir=str(tmp_path / "o"), verify_workers=1,
                               progress=False))
    rows = {r["sample_index"]: r for r in read_jsonl(tmp_path / "o/verdicts.jsonl")}
    assert rows[0]["dropped"] is None and rows[0]["correct"] is True and rows[0]["label_source"] == "tests"
    assert rows[1]["dropped"] == "incorrect" and "expected '9', got '6'" in rows[1]["detail"]
    assert rows[2]["dropped"] == "format" and s["kept"] == 1


def test_length_control_shortest_mix_and_card(tmp_path):
    """shortest_share: that share of the problems keeps only its shortest verified trace, the rest keep all; the
    report and card give the length distribution before and after."""
    from cotdistill.filter import _in_share

    probs = [Problem(id=f"p{j}", question=f"q{j}", answer="7", source="t") for j in range(40)]
    traces = [trace(p.id, i, f"<think>{'w ' * (5 + 3 * i)}</think>\\boxed{{7}}", tokens=5 + 3 * i)
              for p in probs for i in range(3)]
    d = write_run(tmp_path / "g", probs, traces)
    common = dict(generate_dir=str(d), verify_workers=1, progress=False, near_dup_threshold=None)
    counts = {}
    for share in (0.0, 0.5, 1.0):
        rep = stage.run(FilterConfig(output_dir=str(tmp_path / f"s{share}"), shortest_share=share, **common))
        rows = read_jsonl(tmp_path / f"s{share}" / "sft.jsonl")
        per = {p.id: sorted(r["sample_index"] for r in rows if r["problem_id"] == p.id) for p in probs}
        short = {pid for pid in per if _in_share(pid, share)}
        assert all(per[pid] == ([0] if pid in short else [0, 1, 2]) for pid in per)
        counts[share] = rep["completion_tokens"]
        assert rep["completion_tokens"]["generated"]["total"] == 40 * (5 + 8 + 11)
    assert 5 < len({p.id for p in probs if _in_share(p.id, 0.5)}) < 35
    assert counts[1.0]["kept"] == {"traces": 40, "min": 5, "median": 5, "mean": 5.0, "p90": 5, "max": 5,
                                   "total": 200}
    assert counts[0.0]["kept"]["total"] == 40 * 24
    card = (tmp_path / "s0.5" / "README.md").read_text()
    assert "before and after the filter" in card and "| generated | 120 |" in card and "shortest_share 0.5" in card


def test_a_filter_that_keeps_nothing_warns_naming_the_steps(tmp_path, capsys):
    """Every trace wrong or cut off: the stage still writes its outputs, exits normally, and says on stderr (and in
    its summary) that nothing was kept, which steps dropped the traces, and where to look."""
    probs = [Problem(id="p1", question="What is three plus four", answer="7", source="t")]
    traces = [trace("p1", 0, "<think>3+4</think>\\boxed{8}"), trace("p1", 1, "<think>3+4</think>\\boxed{9}"),
              trace("p1", 2, "<think>3+4 is", finish="length")]
    out = stage.run(cfg(write_run(tmp_path / "gen", probs, traces), tmp_path))
    err = capsys.readouterr().err
    assert out["kept"] == 0 and "kept 0 of 3 traces (incorrect 2, truncated 1)" in out["warning"]
    assert "\nfilter: warning: kept 0 of 3 traces (incorrect 2, truncated 1); training on this folder" in err
    assert (tmp_path / "out" / "filter_report.json").exists()


def test_the_filter_folder_loads_with_datasets_load_dataset(run_dir, tmp_path):
    """The card's config block: load_dataset(folder) gives the kept traces (the folder mixes JSONL files with
    different columns, which load_dataset could not combine), "prompts" and "verdicts" the other files."""
    import datasets

    stage.run(cfg(run_dir, tmp_path))
    out = str(tmp_path / "out")
    sft = datasets.load_dataset(out, split="train")
    assert "messages" in sft.column_names and len(sft) == len(read_jsonl(tmp_path / "out" / "sft.jsonl"))
    assert "prompt" in datasets.load_dataset(out, "prompts", split="train").column_names
    assert len(datasets.load_dataset(out, "verdicts", split="train")) == 13
    assert len(datasets.load_from_disk(f"{out}/sft")) == len(sft)


def test_hostile_answers_do_not_stop_the_filter(tmp_path):
    """A ~30-character huge exponent (Python cannot print a 5,000-digit int: the vote's answer key crashed) and a
    lone UTF-16 surrogate (UTF-8 cannot encode it: writing the outputs crashed, leaving a temp file): each trace is
    judged like any other, and the stage writes every output."""
    from cotdistill.verify import answer_key, verify_completion

    probs = [Problem(id="p1", question="q one", answer=None, source="t"),
             Problem(id="p2", question="q two \ud800", answer="1", source="t")]
    traces = [trace("p1", 0, "<think>a</think>\\boxed{1e5000}"), trace("p1", 1, "<think>b</think>\\boxed{1e5000}"),
              trace("p1", 2, "<think>c</think>\\boxed{7}"), trace("p2", 0, "<think>\ud800</think>\\boxed{1}"),
              trace("p2", 1, "<think>x</think>\\boxed{10^{5000}}")]
    d = write_run(tmp_path / "gen", probs, traces)
    lines = (d / "traces.jsonl").read_text().splitlines()
    raw = json.loads(lines[3])
    raw["completion"] = "<think>\ud800 raw</think>\\boxed{1}"  # as a JSON escape, the way another tool writes it
    (d / "traces.jsonl").write_text("\n".join([*lines[:3], json.dumps(raw), lines[4]]) + "\n")
    assert answer_key("1e5000") == "txt:1e5000" and answer_key("1e400") != answer_key("1e401")
    assert verify_completion("\\boxed{1e5000}", "1").correct is False
    import datasets

    out = stage.run(cfg(d, tmp_path, format_check=False))
    assert out["kept"] >= 2 and not list((tmp_path / "out").rglob("*.tmp"))
    p2 = [r["messages"][-1]["content"] for r in datasets.load_from_disk(str(tmp_path / "out" / "sft"))
          if r["problem_id"] == "p2"]
    assert p2 == ["<think>\ufffd raw</think>\\boxed{1}"]  # kept, the surrogate replaced; 10^{5000} is not 1


def test_write_atomic_leaves_no_temp_file_when_the_text_cannot_be_written(tmp_path):
    from cotdistill.store import write_atomic

    with pytest.raises(UnicodeEncodeError):
        write_atomic(tmp_path / "x.json", "lone \ud800")
    assert list(tmp_path.iterdir()) == []


def test_a_saved_dataset_is_swapped_in_never_rewritten_under_its_readers(tmp_path):
    """datasets rewrites a folder's Arrow files in place (same inodes); a trainer's hard-linked copy of a big split
    would change under it. save_dataset_atomic writes a new folder and swaps it in: the link keeps its bytes."""
    import os

    import datasets

    from cotdistill.store import save_dataset_atomic

    save_dataset_atomic(datasets.Dataset.from_dict({"x": ["old"] * 10}), tmp_path / "sft")
    (arrow,) = (tmp_path / "sft").glob("*.arrow")
    os.link(arrow, tmp_path / "linked.arrow")
    before = (tmp_path / "linked.arrow").read_bytes()
    save_dataset_atomic(datasets.Dataset.from_dict({"x": ["new"] * 10}), tmp_path / "sft")
    assert (tmp_path / "linked.arrow").read_bytes() == before
    assert datasets.load_from_disk(str(tmp_path / "sft"))["x"] == ["new"] * 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linked.arrow", "sft"]  # no temp or old folder left
