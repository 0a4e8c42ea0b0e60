"""The cotdistill command: one-line errors for bad input; SIGKILL at any moment, then resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, read_jsonl, write_jsonl
from typer.testing import CliRunner

from cotdistill.cli import app

GOOD = """
source: {{kind: hf, path: {data}, fields: {{id: id}}, limit: {limit}}}
prompt: {{template: arithmetic_cot}}
teacher: {{backend: vllm, model: {model}, max_model_len: 512, kv_cache_memory_bytes: 268435456, enforce_eager: true}}
sampling: {{n: {n}, temperature: 1.0, max_tokens: {max_tokens}, seed: 1}}
output_dir: {out}
"""


def config(tmp_path, model, name="c.yaml", limit=4, n=2, max_tokens=16, data=None, extra=""):
    p = tmp_path / name
    p.write_text(GOOD.format(data=data or ROOT / "data/arithmetic_test.jsonl", limit=limit, model=model,
                             n=n, max_tokens=max_tokens, out=tmp_path / "out") + extra)
    return p


def run_cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def bad_cases(tmp_path, tiny_model):
    nocol = write_jsonl(tmp_path / "nocol.jsonl", [{"id": "a", "text": "hi"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    tmpl = tmp_path / "tmpl.yaml"
    tmpl.write_text("name: needs_style\nuser: '{{ question }} {{ style }}'\n")
    malformed = tmp_path / "bad.yaml"
    malformed.write_text("source: {kind: hf\n  teacher: [\n")
    names = iter(f"c{i}.yaml" for i in range(100))
    afile = tmp_path / "afile"
    afile.write_text("x")
    good = lambda **kw: config(tmp_path, tiny_model, name=next(names), **kw)
    return {
        "malformed yaml": ([malformed], "malformed YAML"),
        "unknown key": ([good(extra="colour: red\n")], "unknown key 'colour'"),
        "missing column": ([good(data=nocol)], "column 'question' (source.fields.question) not found"),
        "empty dataset": ([good(data=empty)], "the file has no rows"),
        "unknown rg task": (
            [good(), "source={kind: reasoning_gym, task: chain_summ}"],
            "unknown reasoning-gym task 'chain_summ'",
        ),
        "template variable": ([good(), f"prompt.template={tmpl}"], "variable 'style' is missing"),
        "model path": ([good(), "teacher.model=/no/such/dir"], "model path '/no/such/dir' does not exist"),
        "server down": (
            [good(), "teacher={backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m}"],
            "is unreachable",
        ),
        "missing config": ([tmp_path / "nope.yaml"], "config file not found"),
        "config is a folder": ([tmp_path], "is a folder, not a config file; pass the path of a YAML file"),
        "output_dir is a file": ([good(), f"output_dir={afile}"], f"output_dir: '{afile}' is a file; give a folder"),
        "output_dir below a file": ([good(), f"output_dir={afile}/out"], f"'{afile}' is a file; give another folder"),
    }


@pytest.mark.parametrize("case", ["malformed yaml", "unknown key", "missing column", "empty dataset",
                                  "unknown rg task", "template variable", "model path", "server down",
                                  "missing config", "config is a folder", "output_dir is a file",
                                  "output_dir below a file"])
def test_bad_input_is_one_line_and_exit_2(bad_cases, case, tmp_path):
    args, expect = bad_cases[case]
    code, out, err = run_cli("generate", *args)
    assert code == 2, (out, err)
    lines = [x for x in err.splitlines() if x.strip()]  # progress bars may come before the error
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and expect in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "traces.jsonl").exists() or not (tmp_path / "out" / "traces.jsonl").read_text()


def test_merge_without_shards_is_one_line(tmp_path):
    code, _, err = run_cli("merge", tmp_path)
    assert code == 2 and "no shard configs" in err


@pytest.mark.slow
def test_sigkill_then_resume_gives_every_record_exactly_once(tiny_model, tmp_path):
    cfg = config(tmp_path, tiny_model, limit=40, n=4, max_tokens=64, extra="flush_every: 1\nprogress: false\n")
    out = tmp_path / "out"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    # 16 sequences at a time: traces finish in waves, so there are moments to kill mid-run
    cmd = [sys.executable, "-m", "cotdistill", "generate", str(cfg), "sampling.logprobs=2",
           "teacher.max_num_seqs=16"]
    traces = out / "traces.jsonl"
    partials = []
    for threshold in (5, 60):  # kill twice, at different points
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if traces.exists() and traces.read_bytes().count(b"\n") >= threshold:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                partials.append(traces.read_bytes().count(b"\n"))
                break
            time.sleep(0.02)
        proc.wait()
    assert partials and min(partials) < 160, f"no kill landed mid-run: {partials}"
    partial = traces.read_bytes().count(b"\n")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["resumed_from"] == partial
    raw = traces.read_bytes()
    assert raw.endswith(b"\n")
    recs = read_jsonl(traces)  # every line parses
    keys = [(r["problem_id"], r["sample_index"]) for r in recs]
    assert len(keys) == len(set(keys)) == 160
    lp_keys = [(r["problem_id"], r["sample_index"]) for r in read_jsonl(out / "logprobs.jsonl")]
    assert sorted(lp_keys) == sorted(keys)


@pytest.mark.parametrize("args, expect", [
    (["--skip", "trian"], "unknown stage 'trian'"),
    (["students.0.train.max_steps=zero"], "students[0].train.max_steps: Input should be a valid integer"),
    (["students.9.name=x"], "'9' is not an index of the 5-item list at 'students'"),
])
def test_run_bad_input_is_one_line(tmp_path, args, expect):
    code, out, err = run_cli("run", ROOT / "data/configs/run_demo.yaml", f"output_dir={tmp_path / 'r'}", *args)
    assert code == 2 and err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1, err


def test_keys_lists_every_config_key_with_its_help():
    code, out, err = run_cli("keys", "train")
    assert code == 0 and "weight_decay" in out and "AdamW decoupled weight decay" in out
    assert "kd.temperature" in out and "gkd.lmbda" in out  # nested blocks expanded
    code, out, err = run_cli("keys", "run")
    assert code == 0 and "students[].init_from" in out and "start from this (earlier) student" in out
    code, out, err = run_cli("keys", "nope")
    assert code == 2 and "unknown stage 'nope'" in err


def test_keys_show_the_default_a_nested_block_really_has():
    """synthesize's sampling block defaults to SamplingConfig(n=1, temperature=1.0, max_tokens=256), not the
    class's n=4: the listing shows the former."""
    from cotdistill.cli import config_keys
    from cotdistill.config import SynthesizeConfig

    rows = {k: d for k, _, d, _ in config_keys(SynthesizeConfig)}
    assert (rows["sampling.n"], rows["sampling.temperature"], rows["sampling.max_tokens"]) == ("1", "1.0", "256")
    assert rows["checks.min_chars"] == "8" and rows["teacher"] == "(required)"


@pytest.mark.slow
def test_sigterm_leaves_no_engine_process_behind(tiny_model, tmp_path):
    """A scheduler's SIGTERM to `cotdistill generate` with a multiprocess engine (vLLM's default on GPUs; on CPU
    when VLLM_ENABLE_V1_MULTIPROCESSING=1) stops its EngineCore and workers too; they used to run on as orphans at
    full CPU."""
    from cotdistill.lifecycle import descendants

    cfg = config(tmp_path, tiny_model, limit=40, n=4, max_tokens=256, extra="progress: false\n")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cotdistill", "generate", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    engine, deadline = [], time.time() + 180
    while time.time() < deadline and proc.poll() is None and not engine:
        for pid in descendants(proc.pid):
            try:
                title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "VLLM" in title or "EngineCore" in title:
                engine.append(pid)
        time.sleep(0.2)
    assert engine, f"no engine process appeared: {proc.poll()}"
    time.sleep(2)
    tree = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    time.sleep(1)
    alive = [p for p in tree if os.path.exists(f"/proc/{p}") and
             open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    for p in alive:  # leave nothing behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive, f"processes left after SIGTERM: {alive}; stderr: {proc.stderr.read()[-2000:]}"


@pytest.mark.slow
def test_stage_stdout_is_the_json_summary_alone(tiny_model, tiny_student, tmp_path):
    """`cotdistill generate CFG | jq .`: vLLM's logs, trainer log lines and warnings go to stderr; stdout is one JSON
    document (generate, then train on what a filter kept)."""
    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "cotdistill", *map(str, args)], capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout), p.stderr

    gen, err = cli("generate", config(tmp_path, tiny_model, limit=4, n=2))
    assert gen["traces"] == 8 and "INFO" not in err  # vLLM at WARNING unless --verbose
    rows = [{"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "\\boxed{2}"}],
             "problem_id": f"p{i}", "sample_index": 0} for i in range(4)]
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "data" / "sft"))
    (tmp_path / "train.yaml").write_text(f"student: {tiny_student}\ndataset_dir: {tmp_path / 'data'}\n"
                                         f"output_dir: {tmp_path / 'train'}\nmax_steps: 2\nlogging_steps: 1\n"
                                         "progress: false\nper_device_train_batch_size: 2\n")
    tr, err = cli("train", tmp_path / "train.yaml")
    assert tr["steps"] == 2 and "'loss'" in err  # the trainer's log lines, on stderr


def test_student_command_makes_a_starting_model_for_train(tmp_path):
    """`cotdistill student OUT`: a fresh Llama on the teacher's vocabulary at init_std, written whole (no temp folder
    left), printed as JSON; an OUT that already holds files is refused in one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "stu"
    code, stdout, err = run_cli("student", out, "--tokenizer", ROOT / "data/teacher", "--init-std", "0.05")
    assert code == 0, err
    assert json.loads(stdout) == {"model": str(out)} and sorted(p.name for p in tmp_path.iterdir()) == ["stu"]
    m = AutoModelForCausalLM.from_pretrained(out)
    assert abs(m.model.layers[0].mlp.up_proj.weight.std().item() - 0.05) < 0.005
    vocab = AutoTokenizer.from_pretrained(ROOT / "data/teacher").get_vocab()
    assert AutoTokenizer.from_pretrained(out).get_vocab() == vocab
    code, _, err = run_cli("student", out)
    assert code == 2 and "already holds files; give a new folder" in err


@pytest.fixture
def stage_inputs(tmp_path, tiny_model):
    """A filter output, a student folder without a tokenizer, a folder that is not a model, and a file."""
    import datasets

    rows = [{"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "\\boxed{2}"}],
             "problem_id": "p0", "sample_index": 0}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "filt" / "sft"))
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (notok / f).write_bytes((tiny_model / f).read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    problem = json.dumps({"id": "p0", "question": "1+1", "answer": "2", "source": "hand"}) + "\n"
    for name, traces in {"gen_badjson": '{"problem_id": "p0", "sample_index": 0\n',
                         "gen_nofield": json.dumps({"problem_id": "p0"}) + "\n",
                         "gen_otherrun": json.dumps({"problem_id": "zz", "sample_index": 0}) + "\n"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "problems.jsonl").write_text(problem)
        (tmp_path / name / "traces.jsonl").write_text(traces)
    (tmp_path / "lp_badjson.jsonl").write_text('{"problem_id": "zz", "sample_index": 0}\n[1, 2\n')
    (tmp_path / "lp_noid.jsonl").write_text(json.dumps({"sample_index": 0}) + "\n")
    (tmp_path / "lp_badrec.jsonl").write_text(json.dumps({"problem_id": "p0", "sample_index": 0}) + "\n")
    (tmp_path / "cache_othertok").mkdir()
    (tmp_path / "cache_othertok" / "cache.json").write_text(json.dumps({"tokenizer_hash": "0" * 16, "top_k": 4,
                                                                        "traces": 1}))
    (tmp_path / "bad_problems.jsonl").write_text(problem + "{oops\n")
    (tmp_path / "good_problems.jsonl").write_text(problem)
    (tmp_path / "long_problems.jsonl").write_text(problem + json.dumps(
        {"id": "p1", "question": "1+1 " * 200, "answer": "2", "source": "hand"}) + "\n")
    return tmp_path


# stage, its YAML (formatted with the fixture's folder T and the tiny model M), what stderr's one line says
STAGE_BAD_INPUTS = {
    "filter: generate_dir missing": ("filter", "generate_dir: {T}/nope\noutput_dir: {T}/o\n", "not found"),
    "filter: output_dir is a file": ("filter", "generate_dir: {T}/filt\noutput_dir: {T}/afile\n", "is a file"),
    "train: student without tokenizer": (
        "train", "student: {T}/notok\ndataset_dir: {T}/filt\noutput_dir: {T}/o\nmax_steps: 1\n", "has no tokenizer"),
    "train: student not a model": (
        "train", "student: {T}/empty\ndataset_dir: {T}/filt\noutput_dir: {T}/o\nmax_steps: 1\n",
        "is an empty folder, not a model"),
    "train: relative student path that does not exist": (
        "train", "student: empty/model\ndataset_dir: {T}/filt\noutput_dir: {T}/o\nmax_steps: 1\n", "does not exist"),
    "train: dataset_dir without sft/": (
        "train", "student: {M}\ndataset_dir: {T}/empty\noutput_dir: {T}/o\nmax_steps: 1\n", "not found"),
    "train: output_dir below a file": (
        "train", "student: {M}\ndataset_dir: {T}/filt\noutput_dir: {T}/afile/o\nmax_steps: 1\n", "is a file"),
    "filter: a traces line that is not JSON": ("filter", "generate_dir: {T}/gen_badjson\noutput_dir: {T}/o\n",
                                               "traces.jsonl: line 1: not valid JSON"),
    "filter: a trace without its fields": ("filter", "generate_dir: {T}/gen_nofield\noutput_dir: {T}/o\n",
                                           "traces.jsonl: line 1"),
    "filter: traces of another run's problems": (
        "filter", "generate_dir: {T}/gen_otherrun\noutput_dir: {T}/o\n", "traces.jsonl: line 1"),
    "train: logit_kd cache folder without cache.json": (
        "train", "method: logit_kd\nstudent: {M}\ndataset_dir: {T}/filt\nlogprobs: {T}/empty\noutput_dir: {T}/o\n"
                 "max_steps: 1\n", "cache.json not found; build the cache"),
    "train: logit_kd cache of another tokenizer": (
        "train", "method: logit_kd\nstudent: {M}\ndataset_dir: {T}/filt\nlogprobs: {T}/cache_othertok\n"
                 "output_dir: {T}/o\nmax_steps: 1\n", "cached logprobs come from tokenizer 0000000000000000"),
    "train: logit_kd logprobs file missing": (
        "train", "method: logit_kd\nstudent: {M}\ndataset_dir: {T}/filt\nlogprobs: {T}/nope.jsonl\n"
                 "output_dir: {T}/o\nmax_steps: 1\n", "not found; build a cache with `cotdistill logits`"),
    "train: logit_kd logprobs line that is not JSON": (
        "train", "method: logit_kd\nstudent: {M}\ndataset_dir: {T}/filt\nlogprobs: {T}/lp_badjson.jsonl\n"
                 "output_dir: {T}/o\nmax_steps: 1\n", "lp_badjson.jsonl: line 2: not a JSON object"),
    "logits: in_pass logprobs file missing": (
        "logits", "teacher: {M}\nfilter_dir: {T}/filt\noutput_dir: {T}/o\nmode: in_pass\nlogprobs: {T}/nope.jsonl\n",
        "not found; generate with sampling.logprobs"),
    "logits: in_pass logprobs line without problem_id": (
        "logits", "teacher: {M}\nfilter_dir: {T}/filt\noutput_dir: {T}/o\nmode: in_pass\n"
                  "logprobs: {T}/lp_noid.jsonl\n",
        "lp_noid.jsonl: line 1: no field 'problem_id'"),
    "logits: in_pass logprobs record without its token logprobs": (
        "logits", "teacher: {M}\nfilter_dir: {T}/filt\noutput_dir: {T}/o\nmode: in_pass\n"
                  "logprobs: {T}/lp_badrec.jsonl\n", "lp_badrec.jsonl: line 1: "),
    "logits: filter_dir without sft/": ("logits", "teacher: {M}\nfilter_dir: {T}/empty\noutput_dir: {T}/o\n",
                                        "not found; point filter_dir at a `cotdistill filter` output"),
    "generate: a problems line that is not JSON, before any engine": (
        "generate", "source: {{kind: hf, path: {T}/bad_problems.jsonl}}\nteacher: {{backend: vllm, model: {M}}}\n"
                    "output_dir: {T}/o\n", "line 2"),
    "generate: teacher a relative path under no folder here, not a hub lookup": (
        "generate", "source: {{kind: hf, path: {T}/good_problems.jsonl}}\n"
                    "teacher: {{backend: vllm, model: nofolder/teacher}}\noutput_dir: {T}/o\n",
                    "'nofolder/teacher' is not a folder here"),
    "generate: a problem longer than the teacher's context, too_long: refuse, before any engine": (
        "generate", "source: {{kind: hf, path: {T}/long_problems.jsonl, fields: {{id: id}}}}\n"
                    "teacher: {{backend: vllm, model: {M}, max_model_len: 400}}\ntoo_long: refuse\n"
                    "output_dir: {T}/o\n",
        "1 problem(s) too long: 'p1'"),
    "logits: teacher not a model": ("logits", "teacher: {T}/afile\nfilter_dir: {T}/filt\noutput_dir: {T}/o\n",
                                    "is a file, not a model"),
    "eval: model folder without config.json": (
        "eval", "models: [{{name: t, role: teacher, serve: {{backend: vllm, model: {T}/notok}}}}]\n"
                "benchmarks: [{{name: b, source: {{kind: hf, path: {T}/afile}}, template: arithmetic_cot}}]\n"
                "output_dir: {T}/o\n", "has no tokenizer (none of tokenizer.json"),
    "eval: benchmark file of an unknown type, before any engine": (
        "eval", "models: [{{name: t, role: teacher, serve: {{backend: vllm, model: {M}}}}}]\n"
                "benchmarks: [{{name: b, source: {{kind: hf, path: {T}/afile}}, template: arithmetic_cot}}]\n"
                "output_dir: {T}/o\n", "unsupported file type"),
    "run: output_dir is a file": ("run", "output_dir: {T}/afile\nteacher: {{backend: vllm, model: {M}}}\n"
                                         "student: {M}\ngenerate: {{source: {{kind: hf, path: {T}/p.jsonl}}}}\n"
                                         "students: [{{name: s, data: filtered, train: {{method: sft}}}}]\n"
                                         "eval: {{benchmarks: [{{name: b, source: {{kind: hf, path: h.jsonl}}}}]}}\n",
                                  "is a file"),
}


@pytest.mark.parametrize("case", list(STAGE_BAD_INPUTS))
def test_bad_stage_inputs_are_one_line_exit_2_and_write_nothing(stage_inputs, tiny_model, case, monkeypatch):
    """Each stage's inputs (problems, traces, datasets, models, tokenizers, output folders): one line on stderr
    starting 'error: ', exit code 2, no traceback, and no output folder left behind."""
    stage, text, expect = STAGE_BAD_INPUTS[case]
    monkeypatch.chdir(stage_inputs)  # relative paths ("empty/model") start here
    cfg = stage_inputs / "c.yaml"
    cfg.write_text(text.format(T=stage_inputs, M=tiny_model))
    code, out, err = run_cli(stage, cfg)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and lines and lines[-1].startswith("error: ") and expect in lines[-1], err
    assert "Traceback" not in err and not (stage_inputs / "o").exists()


def test_student_command_bad_options_are_one_line_naming_the_option(tmp_path):
    code, _, err = run_cli("student", tmp_path / "s", "--init-std", "0")
    assert code == 2 and err.strip() == "error: --init-std: Input should be greater than 0"
    code, _, err = run_cli("student", tmp_path / "s", "--heads", "3")
    assert code == 2 and err.strip().startswith("error: options: hidden 128 / heads 3: head size must be one of 32")
    assert not any(tmp_path.iterdir())  # no model, no temp folder
