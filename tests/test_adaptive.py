"""Adaptive sampling (cotdistill/adaptive.py + generate): the round plan, table-driven, and a real vLLM
run of the embedded teacher through the CLI: a prefix of the fixed-n run's samples per problem, every
problem either has k distinct correct traces or spent its budget, a killed run resumes into the same
result, and the filter reports the saving."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, read_jsonl

from cotdistill.adaptive import Seen, next_samples
from cotdistill.config import GenerateConfig

OK, BAD = (lambda t: Seen(True, t)), (lambda t="x": Seen(False, t))


@pytest.mark.parametrize("k,n,seen,want", [
    (1, 4, {}, ([0], 0)),
    (1, 4, {0: OK("a")}, ([], 0)),
    (1, 4, {0: BAD()}, ([1], 1)),
    (1, 4, {0: BAD(), 1: BAD(), 2: BAD()}, ([3], 3)),
    (1, 4, {0: BAD(), 1: BAD(), 2: BAD(), 3: BAD()}, ([], 4)),        # budget spent
    (2, 6, {}, ([0, 1], 0)),
    (2, 6, {0: OK("a")}, ([1], 0)),                                   # a hole of round 0 (killed run)
    (2, 6, {0: OK("a"), 1: OK("a")}, ([2], 1)),                       # two correct, one distinct
    (2, 6, {0: OK("a"), 1: OK("a b")}, ([], 0)),
    (2, 6, {0: OK("a"), 1: BAD(), 2: OK("b")}, ([], 1)),
    (2, 3, {0: BAD(), 1: BAD()}, ([2], 1)),                           # needs 2, budget leaves 1
    (2, 3, {0: BAD(), 1: BAD(), 2: OK("a")}, ([], 2)),
])
def test_round_plan(k, n, seen, want):
    assert next_samples(k, n, seen) == want


def test_unverifiable_problems_get_the_whole_budget_at_once():
    assert next_samples(1, 3, {}, can_verify=False) == ([0, 1, 2], 0)
    assert next_samples(1, 3, {0: OK("a")}, can_verify=False) == ([1, 2], 0)


def test_until_verified_above_the_budget_is_refused():
    with pytest.raises(ValueError, match="until_verified 5 is more than the budget n 4"):
        GenerateConfig.model_validate({"source": {"path": "x"}, "teacher": {"model": "m"}, "output_dir": "o",
                                       "sampling": {"n": 4, "until_verified": 5}})


def _cfg(out, **sampling):
    return {
        "source": {
            "kind": "hf",
            "path": str(ROOT / "data/digit_chain_test.jsonl"),
            "fields": {"id": "id"},
            "limit": 40,
        },
        "prompt": {"template": "arithmetic_cot"},
        "teacher": {
            "backend": "vllm",
            "model": str(ROOT / "data/teacher"),
            "max_model_len": 256,
            "kv_cache_memory_bytes": 268435456,
            "enforce_eager": True,
        },
        "sampling": {"n": 4, "temperature": 1.7, "max_tokens": 64, "seed": 3, **sampling},
        "output_dir": str(out),
        "progress": False,
        "flush_every": 4,
    }


RUN_ALL = """
import sys, yaml
from cotdistill import generate
from cotdistill.config import GenerateConfig
from cotdistill.teachers import make_teacher
cfgs = [GenerateConfig.model_validate(yaml.safe_load(open(p))) for p in sys.argv[1:]]
teacher = make_teacher(cfgs[0].teacher, seed=cfgs[0].sampling.seed)  # one engine for every run
for c in cfgs:
    generate.run(c, teacher=teacher)
teacher.close()
"""


def _generate(tmp_path, runs: dict[str, dict]) -> dict[str, dict]:
    """The generate runs one after another in one process of their own, sharing one engine (each run's sampling
    is seeded per sample, so sharing changes nothing); their summaries."""
    paths = []
    for name, cfg in runs.items():
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # generation only: an in-process engine starts faster
    p = subprocess.run([sys.executable, "-c", RUN_ALL, *map(str, paths)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in runs}


@pytest.mark.slow
def test_adaptive_run_is_a_prefix_of_the_fixed_run_and_resumes(tmp_path):
    from cotdistill import filter as filter_stage
    from cotdistill.config import FilterConfig
    from cotdistill.verify import verify_completion

    done = _generate(tmp_path, {"fixed": _cfg(tmp_path / "fixed"),
                                "adaptive": _cfg(tmp_path / "adaptive", until_verified=2)})
    fixed, adaptive = done["fixed"], done["adaptive"]
    full = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(tmp_path / "fixed/traces.jsonl")}
    got = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(tmp_path / "adaptive/traces.jsonl")}
    assert fixed["traces"] == 160 and set(got) < set(full)
    assert all(got[k]["completion"] == full[k]["completion"] for k in got)  # sample i is the fixed run's sample i
    gold = {r["id"]: r["answer"] for r in read_jsonl(ROOT / "data/digit_chain_test.jsonl")}
    for pid in {p for p, _ in full}:
        idx = sorted(i for p, i in got if p == pid)
        assert idx == list(range(len(idx)))  # a prefix
        seen = {i: Seen(got[(pid, i)]["finish_reason"] == "stop"
                        and bool(verify_completion(got[(pid, i)]["completion"], gold[pid]).correct),
                        " ".join(got[(pid, i)]["completion"].split())) for i in idx}
        right = {x.text for x in seen.values() if x.correct}
        assert len(right) >= 2 or len(idx) == 4, pid  # k distinct correct, or the budget spent
        assert next_samples(2, 4, seen)[0] == []  # and nothing past what the plan asked for
        without_last = {i: x for i, x in seen.items() if i < idx[-1]}
        assert next_samples(2, 4, without_last)[0], pid  # it did not stop before it could
    assert adaptive["adaptive"]["traces"] == len(got) and adaptive["adaptive"]["saved_share"] > 0
    assert {r["round"] for r in got.values()} >= {0, 1}
    # a run killed in its second round resumes into the same traces
    lines = (tmp_path / "adaptive/traces.jsonl").read_text().splitlines(keepends=True)
    last_round = [i for i, x in enumerate(lines) if json.loads(x)["round"] >= 1]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "traces.jsonl").write_text("".join(lines[:last_round[len(last_round) // 2]]))
    again = _generate(tmp_path, {"cut": _cfg(cut, until_verified=2)})["cut"]
    resumed = {(r["problem_id"], r["sample_index"]): r["completion"] for r in read_jsonl(cut / "traces.jsonl")}
    assert resumed == {k: v["completion"] for k, v in got.items()} and again["complete"]
    rep = filter_stage.run(FilterConfig(generate_dir=str(tmp_path / "adaptive"), output_dir=str(tmp_path / "f"),
                                        verify_workers=1, progress=False, max_completion_tokens=64))
    a = json.loads((tmp_path / "f/filter_report.json").read_text())["adaptive"]
    assert a["budget_traces"] == 160 and a["traces"] == len(got) and rep["traces"] == len(got)
    assert "## Adaptive sampling" in (tmp_path / "f/README.md").read_text()
