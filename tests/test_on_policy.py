"""On-policy distillation with a teacher outside the trainer: the losses against hand-computed values, the
teacher's scoring of tokens it did not write against a transformers forward pass, training through the in-process
vLLM teacher, and a run whose teacher fails mid-run resuming to exactly the uninterrupted run's rollouts."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import auto_engine_dtype, own_address
from test_train import cfg

from cotdistill import train
from cotdistill.errors import CotdistillError
from cotdistill.teachers.base import prompt_logprob_arrays
from cotdistill.train.losses import sampled_reverse_kl_loss, topk_divergence_loss
from cotdistill.train.teacher_mix import OneTeacher


def test_sampled_reverse_kl_by_hand():
    s = torch.tensor([math.log(0.5), math.log(0.25)], requires_grad=True)
    t = torch.tensor([math.log(0.25), math.log(0.25)])
    loss, mean_r = sampled_reverse_kl_loss(s, t)
    # r = [log 2, 0]; loss = (log2 * log0.5 + 0) / 2; gradient wrt s = r / N (the score-function weight)
    assert loss.item() == pytest.approx(math.log(2) * math.log(0.5) / 2, rel=1e-6)
    assert mean_r.item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    loss.backward()
    assert s.grad.tolist() == pytest.approx([math.log(2) / 2, 0.0], rel=1e-6)
    same, zero = sampled_reverse_kl_loss(t.clone().requires_grad_(), t)
    assert zero.item() == 0 and same.item() == 0


def test_topk_divergence_by_hand():
    # vocabulary of 4; the teacher's top-2 covers 0.9, the tail 0.1; the student is uniform
    q = torch.tensor([[0.6, 0.3]]).log()
    ids = torch.tensor([[2, 0]])
    p = torch.full((1, 4), 0.25).log()
    qb, pb = np.array([0.6, 0.3, 0.1]), np.array([0.25, 0.25, 0.5])
    for kind, want in [("forward", (qb * np.log(qb / pb)).sum()), ("reverse", (pb * np.log(pb / qb)).sum())]:
        loss, d = topk_divergence_loss(p, ids, q, kind=kind)
        assert loss.item() == pytest.approx(want, rel=1e-5) and d.item() == pytest.approx(want, rel=1e-5)
    m = 0.5 * qb + 0.5 * pb
    jsd = 0.5 * (qb * np.log(qb / m)).sum() + 0.5 * (pb * np.log(pb / m)).sum()
    assert topk_divergence_loss(p, ids, q, kind="jsd", beta=0.5)[0].item() == pytest.approx(jsd, rel=1e-5)
    full = torch.tensor([[0.3, 0.05, 0.6, 0.05]]).log()  # id 2 has 0.6, id 0 has 0.3, the rest 0.1
    loss, _ = topk_divergence_loss(full, ids, q, kind="forward")
    assert abs(loss.item()) < 1e-6  # the student equals the teacher on every bucket


def test_prompt_logprob_parsing():
    plp = [None, {7: (-0.1, 1), 3: (-2.5, 2)}, {5: (-3.0, 4), 1: (-0.2, 1), 2: (-1.0, 2)}]
    a = prompt_logprob_arrays([4, 7, 5], 1, plp, 2, "x")
    assert a["sampled_logprobs"].tolist() == pytest.approx([-0.1, -3.0])
    assert a["top_ids"].tolist() == [[7, 3], [1, 2]] and a["token_ids"].tolist() == [7, 5]
    with pytest.raises(ValueError, match="position 2 has no logprob for its own token 6"):
        prompt_logprob_arrays([4, 7, 6], 1, plp, 2, "x")


def test_teacher_scores_tokens_it_did_not_write_as_transformers_does(tiny_model, vllm_teacher):
    from transformers import AutoModelForCausalLM

    rng = np.random.default_rng(0)
    seqs = [rng.integers(5, 200, size=n).tolist() for n in (12, 20)]
    graded = vllm_teacher.score(seqs, [4, 9], 5)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    for s, st, g in zip(seqs, [4, 9], graded):
        with torch.no_grad():
            lp = torch.log_softmax(ref(torch.tensor([s])).logits[0].float(), -1)
        want = lp[st - 1:-1].gather(-1, torch.tensor(s[st:]).unsqueeze(-1)).squeeze(-1)
        assert g["sampled_logprobs"] == pytest.approx(want.numpy(), rel=1e-3, abs=5e-3)  # vLLM CPU kernels
        assert g["top_ids"][:, 0].tolist() == lp[st - 1:-1].argmax(-1).tolist()
        assert g["top_logprobs"].shape == (len(s) - st, 5)


def rollouts(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


class Shared:
    """The session's vLLM teacher as the scorer, left open for the tests after this one (engines started and
    closed inside the pytest process tear down the parallel state the session engine needs; the path-teacher
    route, which starts its own engine, runs in a subprocess in test_on_policy_cli_with_a_teacher_path)."""

    def __init__(self, inner):
        self.inner, self.info = inner, inner.info

    def score(self, *a):
        return self.inner.score(*a)

    def close(self):
        pass


@pytest.fixture
def shared_teacher(vllm_teacher, monkeypatch):
    from cotdistill.train import on_policy

    monkeypatch.setattr(on_policy, "make_scorer", lambda c, rows: OneTeacher("tiny", Shared(vllm_teacher)))
    return on_policy


def test_on_policy_trains_through_the_vllm_teacher(tiny_student, tiny_model, tmp_path, shared_teacher):
    s = train.run(cfg(tiny_student, tmp_path, method="on_policy", teacher=str(tiny_model), max_steps=3,
                      on_policy={"max_new_tokens": 10, "loss": "topk", "top_k": 4}))
    rows = rollouts(tmp_path / "out/rollouts.jsonl")
    assert s["steps"] == 3 and (tmp_path / "out/final/config.json").exists()
    assert [r["step"] for r in rows] == [1, 2, 3] and all(len(r["problem_ids"]) == 4 for r in rows)
    assert all(r["teacher"] == str(tiny_model) and r["rollout_s"] > 0 and r["teacher_s"] > 0 for r in rows)
    assert all(r["graded_by"] == ["tiny"] * 4 for r in rows)
    assert all(0 < t <= 10 for r in rows for t in r["completion_tokens"])


class FailingScorer:
    """The teacher dies at its ``fail_at``-th scoring call (a server gone after its retries)."""

    def __init__(self, inner, fail_at):
        self.inner, self.calls, self.fail_at, self.info = inner, 0, fail_at, inner.info

    def score(self, *a):
        self.calls += 1
        if self.calls == self.fail_at:
            raise CotdistillError("teacher server http://127.0.0.1:9/v1/completions: failed after 6 attempts")
        return self.inner.score(*a)

    def close(self):
        self.inner.close()


def test_a_run_whose_teacher_fails_resumes_to_the_uninterrupted_rollouts(tiny_student, tiny_model, tmp_path,
                                                                         monkeypatch, shared_teacher):
    on_policy = shared_teacher
    kw = dict(method="on_policy", teacher=str(tiny_model), max_steps=4, save_steps=2,
              on_policy={"max_new_tokens": 8}, per_device_train_batch_size=2)
    whole = tmp_path / "whole"
    whole.mkdir()
    train.run(cfg(tiny_student, whole, **kw))
    real = on_policy.make_scorer
    monkeypatch.setattr(on_policy, "make_scorer",
                        lambda c, rows: OneTeacher("tiny", FailingScorer(real(c, rows).scorer, fail_at=4)))
    cut = tmp_path / "cut"
    cut.mkdir()
    with pytest.raises(CotdistillError, match="failed after 6 attempts"):
        train.run(cfg(tiny_student, cut, **kw))
    assert [r["step"] for r in rollouts(cut / "out/rollouts.jsonl")] == [1, 2, 3]
    monkeypatch.setattr(on_policy, "make_scorer", real)
    summary = train.run(cfg(tiny_student, cut, **kw))
    assert summary["resumed_from"].endswith("checkpoint-2")
    a, b = rollouts(whole / "out/rollouts.jsonl"), rollouts(cut / "out/rollouts.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [(r["problem_ids"], r["completions"]) for r in a] == [(r["problem_ids"], r["completions"]) for r in b]
    from safetensors.torch import load_file

    wa, wb = (load_file(str(d / "out/final/model.safetensors")) for d in (whole, cut))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same weights as the run that never stopped


@pytest.mark.slow
def test_on_policy_cli_with_a_teacher_path_and_vllm_rollouts(tiny_student, tiny_model, tmp_path):
    """The path-teacher route end to end in its own process, the student rolling out through its own vLLM engine:
    both engines start, the rollouts stop on the stop token, and nothing is left running after."""
    import os
    import subprocess
    import sys

    import yaml

    c = cfg(tiny_student, tmp_path, method="on_policy", teacher=str(tiny_model), max_steps=3,
            on_policy={"max_new_tokens": 8, "use_vllm": True, "vllm_kv_cache_bytes": 1 << 26})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(c.model_dump(mode="json")))
    run_id = f"{os.getpid()}-{tmp_path.name}"  # marks this run's engines, not a parallel test's
    env = {**{k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"},
           "COTDISTILL_TEST_RUN": run_id}
    p = subprocess.run([sys.executable, "-m", "cotdistill", "train", str(tmp_path / "t.yaml")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = rollouts(tmp_path / "out/rollouts.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert json.loads((tmp_path / "out/summary.json").read_text())["preflight"]["rollouts"] == "vllm"
    lengths = [n for r in rows for n in r["completion_tokens"]]
    assert all(0 < n <= 8 for n in lengths)
    assert vllm_engines(run_id) == set()


SYNC_CHECK = """
import json, sys, torch
from transformers import AutoModelForCausalLM
from cotdistill.config import TrainConfig
from cotdistill.train.vllm_rollouts import VLLMRollouts
from vllm import SamplingParams
from vllm.inputs import TokensPrompt
student, data = sys.argv[1], sys.argv[2]
cfg = TrainConfig.model_validate(dict(method="on_policy", teacher="t", student=student, dataset_dir=data,
    output_dir=data, max_length=128, on_policy={"vllm_kv_cache_bytes": 1 << 26}))
eng = VLLMRollouts(cfg, student)
seqs = [[3, 17, 25, 40, 41, 9, 12, 30], [5, 6, 7, 8, 50, 60, 70]]
def vllm_lp():
    outs = eng.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs],
                            SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    return [[d[t].logprob for d, t in zip(o.prompt_logprobs[1:], s[1:])] for o, s in zip(outs, seqs)]
def hf_lp(model):
    out = []
    for s in seqs:
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([s])).logits[0].float(), -1)
        out.append(lp[:-1].gather(-1, torch.tensor(s[1:]).unsqueeze(-1)).squeeze(-1).tolist())
    return out
res = {"start": vllm_lp(), "dtype": str(eng.llm.llm_engine.model_config.dtype)}
res["free"] = eng.generate([seqs[0]], [1], 0.0, 8, [])[0]  # greedy, no stop token
res["stop"] = res["free"][2] if res["free"][2] not in res["free"][:2] else res["free"][0]
res["cut"] = eng.generate([seqs[0]], [1], 0.0, 8, [res["stop"]])[0]  # stops on it, the stop token kept
for step, kind in enumerate(["full", "lora"], 1):  # each from the starting checkpoint
    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    if kind == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(step)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if kind == "full" or "lora_" in n:
                p.add_(torch.randn_like(p) * (0.05 if kind == "full" else 0.3))
    res[kind] = {"sent": eng.sync(model, step), "again": eng.sync(model, step), "vllm": vllm_lp(),
                 "hf": hf_lp(model)}
print("RESULT", json.dumps(res))
eng.close()
"""


@pytest.mark.slow
def test_vllm_rollout_engine_gets_the_trainers_weights(tiny_student, tmp_path):
    """After a sync the student's vLLM engine scores tokens as the trainer's changed model does (a LoRA student
    merged), and not as the starting checkpoint: the weights moved, and reached the engine; once per step."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    p = subprocess.run([sys.executable, "-c", SYNC_CHECK, str(tiny_student), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert len(r["free"]) == 8 and r["cut"] == r["free"][:r["free"].index(r["stop"]) + 1]
    assert r["dtype"] == f"torch.{auto_engine_dtype()}"  # as on_policy
    flat = lambda x: [v for row in x for v in row]  # noqa: E731
    for kind in ("full", "lora"):
        got = r[kind]
        assert got["sent"] is True and got["again"] is False, kind  # once per optimizer step
        assert flat(got["vllm"]) == pytest.approx(flat(got["hf"]), rel=1e-3, abs=5e-3), kind
        assert max(abs(a - b) for a, b in zip(flat(r["start"]), flat(got["hf"]))) > 0.05, kind  # the sync mattered


def vllm_engines(run_id: str) -> set[int]:
    """The vLLM engine processes (EngineCore, by command line) still running with COTDISTILL_TEST_RUN=``run_id`` in
    their environment, wherever they were re-parented."""
    from pathlib import Path

    out = set()
    for d in Path("/proc").iterdir():
        try:
            if (d.name.isdigit() and b"EngineCore" in (d / "cmdline").read_bytes()
                    and f"COTDISTILL_TEST_RUN={run_id}".encode() in (d / "environ").read_bytes().split(b"\0")):
                out.add(int(d.name))
        except OSError:
            pass
    return out


def server_processes() -> list[int]:
    from pathlib import Path

    from cotdistill.lifecycle import descendants

    out = []
    for pid in descendants():
        try:
            if b"api_server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


@pytest.mark.slow
def test_serve_teacher_starts_a_server_for_the_run_and_stops_it(tiny_student, tiny_model, tmp_path):
    """serve_teacher: the run's own vLLM server on a free port grades the rollouts (the trainer process holds no
    teacher), and is gone when training ends, as when it fails."""
    teacher = {"backend": "vllm", "model": str(tiny_model), "max_model_len": 512, "enforce_eager": True,
               "kv_cache_memory_bytes": 1 << 28}
    s = train.run(cfg(tiny_student, tmp_path, method="on_policy", teacher=teacher, max_steps=2,
                      on_policy={"max_new_tokens": 8, "serve_teacher": True}))
    rows = rollouts(tmp_path / "out/rollouts.jsonl")
    assert s["steps"] == 2 and [r["teacher"] for r in rows] == [str(tiny_model)] * 2
    assert s["preflight"]["teacher_backend"] == "openai" and (tmp_path / "out/teacher_server.log").stat().st_size
    assert server_processes() == []
    bad = {**teacher, "max_model_len": 100000}  # longer than the model allows: the server exits while starting
    with pytest.raises(CotdistillError, match=r"the teacher server exited with code \d+ while starting"):
        train.run(cfg(tiny_student, tmp_path / "bad", method="on_policy", teacher=bad, max_steps=1,
                      on_policy={"max_new_tokens": 8, "serve_teacher": True}))
    assert server_processes() == []


class SlowServer:
    """Stands for a served teacher (backend openai): records when each grading starts, in which thread, and
    answers with made-up grades of the right shapes after a pause."""

    def __init__(self, info):
        self.info = info.model_copy(update={"backend": "openai"})
        self.events = []

    def score(self, seqs, starts, k):
        import threading
        import time

        self.events.append(("score", time.perf_counter(), threading.current_thread().name))
        time.sleep(0.2)
        return [{"sampled_logprobs": np.full(len(s) - st, -1.0, dtype=np.float32),
                 "top_ids": np.tile(np.arange(k, dtype=np.int32), (len(s) - st, 1)),
                 "top_logprobs": np.full((len(s) - st, k), -2.0, dtype=np.float32)} for s, st in zip(seqs, starts)]

    def close(self):
        pass


def test_overlap_grades_a_chunk_while_the_next_is_written(tiny_student, tiny_model, tmp_path, vllm_teacher,
                                                          monkeypatch):
    from cotdistill.train import on_policy

    fake = SlowServer(vllm_teacher.info)
    monkeypatch.setattr(on_policy, "make_scorer", lambda c, rows: OneTeacher("slow", fake))
    real_rollout, ends = on_policy.OnPolicyTrainer._rollout, []

    def rollout(self, *a):
        out = real_rollout(self, *a)
        ends.append(__import__("time").perf_counter())
        return out

    monkeypatch.setattr(on_policy.OnPolicyTrainer, "_rollout", rollout)
    s = train.run(cfg(tiny_student, tmp_path, method="on_policy", teacher=str(tiny_model), max_steps=1,
                      on_policy={"max_new_tokens": 6, "overlap_chunks": 2}))
    assert s["steps"] == 1 and len(fake.events) == 2 and len(ends) == 2
    assert fake.events[0][1] < ends[1]  # chunk 1 was being graded while chunk 2 was written
    assert all(name != "MainThread" for _, _, name in fake.events)
    row = rollouts(tmp_path / "out/rollouts.jsonl")[0]
    assert len(row["problem_ids"]) == 4 and row["teacher_s"] > 0


@pytest.mark.parametrize("base_url,halved", [("http://127.0.0.1:8011/v1", True), ("http://localhost:8011/v1", True),
                                             ("http://{own}:8011/v1", True), ("http://198.51.100.7:8000/v1", False)])
def test_a_teacher_server_on_this_machine_gets_half_the_cores(tiny_student, tiny_model, tmp_path, vllm_teacher,
                                                              monkeypatch, base_url, halved):
    """A served teacher on this machine (the loopback or its own address; one the user or a benchmark started, not
    only serve_teacher's) shares this CPU: the trainer takes half the threads while it trains, or both spin-wait on
    each other (the on_policy bench's overlap steps took 1.4 s with both threads against 0.6 s); a server elsewhere
    leaves them all. Restored after."""
    import torch

    from cotdistill.train import on_policy

    fake = SlowServer(vllm_teacher.info)
    monkeypatch.setattr(on_policy, "make_scorer", lambda c, rows: OneTeacher("slow", fake))
    real_rollout, seen = on_policy.OnPolicyTrainer._rollout, []

    def rollout(self, *a):
        seen.append(torch.get_num_threads())
        return real_rollout(self, *a)

    monkeypatch.setattr(on_policy.OnPolicyTrainer, "_rollout", rollout)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        own = own_address() or "127.0.0.1"  # this machine's LAN address, where it has one
        own = f"[{own}]" if ":" in own else own  # an IPv6 address goes in brackets in a URL
        teacher = {"backend": "openai", "base_url": base_url.format(own=own), "model": "teacher",
                   "tokenizer": str(tiny_model)}
        s = train.run(cfg(tiny_student, tmp_path, method="on_policy", teacher=teacher, max_steps=1,
                          on_policy={"max_new_tokens": 4}))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert s["steps"] == 1 and seen and set(seen) == {1 if halved else 2} and after == 2


class Named(Shared):
    """The session's teacher under a name, counting what it grades."""

    def __init__(self, inner, name, seen):
        super().__init__(inner)
        self.name, self.seen = name, seen

    def score(self, seqs, starts, k):
        self.seen[self.name].append(len(seqs))
        return super().score(seqs, starts, k)


def test_several_teachers_each_grade_the_prompts_their_weights_give_them(tiny_student, tiny_model, tmp_path,
                                                                        vllm_teacher, monkeypatch):
    from cotdistill.train import teacher_mix

    seen = {"a": [], "b": []}
    monkeypatch.setattr(teacher_mix, "start_teacher",
                        lambda c, t: Named(vllm_teacher, "a" if t == "ta" else "b", seen))
    teachers = [{"name": "a", "teacher": "ta", "weight": 3}, {"name": "b", "teacher": "tb", "weight": 1}]
    s = train.run(cfg(tiny_student, tmp_path, method="on_policy", teachers=teachers, max_steps=2,
                      on_policy={"max_new_tokens": 6}))
    rows = rollouts(tmp_path / "out/rollouts.jsonl")
    by = {pid: g for r in rows for pid, g in zip(r["problem_ids"], r["graded_by"])}
    assert s["steps"] == 2 and set(by.values()) <= {"a", "b"} and sum(seen["a"]) + sum(seen["b"]) == 8
    assert all(g == ["a", "b"][teacher_mix.pick_by_weight(pid, [3, 1])] for pid, g in by.items())  # every run
    ids = [f"p{i}" for i in range(4000)]
    share = sum(teacher_mix.pick_by_weight(i, [3, 1]) == 0 for i in ids) / len(ids)
    assert abs(share - 0.75) < 0.03
    with pytest.raises(ValueError, match="two teachers share a name"):
        cfg(tiny_student, tmp_path / "x", method="on_policy", teachers=[teachers[0], {**teachers[1], "name": "a"}])
    with pytest.raises(ValueError, match="one of the two"):
        cfg(tiny_student, tmp_path / "y", method="on_policy", teachers=teachers, teacher="t")
    with pytest.raises(ValueError, match="at least one field"):
        cfg(tiny_student, tmp_path / "z", method="on_policy", teachers=[{**teachers[0], "route": {"domain": []}},
                                                                       teachers[1]])


def test_teachers_routed_by_a_problem_field(tiny_student, tiny_model, tmp_path, vllm_teacher, monkeypatch):
    """Prompts go to the teacher whose route their problem's fields match (the filter stage's problem_fields),
    the rest to the teacher without a route; a prompt no teacher may take stops the run before any teacher
    starts, and so do prompts without problem_fields."""
    import datasets
    from test_train import ROWS

    from cotdistill.train import teacher_mix

    domain = {r["problem_id"]: "math" if int(r["problem_id"][1:]) % 3 else "code" for r in ROWS}
    d = tmp_path / "routed"  # cfg() writes tmp_path/data
    datasets.Dataset.from_list(ROWS).save_to_disk(str(d / "sft"))
    datasets.Dataset.from_list([{"prompt": r["messages"][:1], "problem_id": r["problem_id"], "gold": "x",
                                 "problem_fields": json.dumps({"source": "s", "domain": domain[r["problem_id"]]})}
                                for r in ROWS]).save_to_disk(str(d / "prompts"))
    seen = {"coder": [], "general": [], "math": []}
    started = []

    def start(c, t):
        started.append(t)
        return Named(vllm_teacher, t, seen)

    monkeypatch.setattr(teacher_mix, "start_teacher", start)
    teachers = [{"name": "coder", "teacher": "coder", "route": {"domain": ["code"]}},
                {"name": "general", "teacher": "general"}]
    kw = dict(method="on_policy", max_steps=2, on_policy={"max_new_tokens": 6}, dataset_dir=str(d))
    s = train.run(cfg(tiny_student, tmp_path, teachers=teachers, **kw))
    rows = rollouts(tmp_path / "out/rollouts.jsonl")
    by = {pid: g for r in rows for pid, g in zip(r["problem_ids"], r["graded_by"])}
    assert s["steps"] == 2 and len(by) == 8
    assert by == {pid: "coder" if dom == "code" else "general" for pid, dom in domain.items()}
    assert s["preflight"]["prompts_per_teacher"] == {"coder": 3, "general": 5}
    started.clear()
    only_routes = [teachers[0], {"name": "math", "teacher": "math", "route": {"domain": ["math"], "source": ["x"]}}]
    with pytest.raises(CotdistillError, match=r"problem 'p1' \(\{'domain': 'math', 'source': 's'\}\) matches no "
                                              r"teacher's route and every teacher has one"):
        train.run(cfg(tiny_student, tmp_path / "r", teachers=only_routes, **kw))
    assert started == []
    with pytest.raises(CotdistillError, match="prompts have no problem_fields column.*re-run the filter stage"):
        train.run(cfg(tiny_student, tmp_path / "n", teachers=teachers,
                      **{k: v for k, v in kw.items() if k != "dataset_dir"}))
    assert started == []


def test_bf16_on_policy_keeps_fp32_master_weights(tiny_student, tiny_model, tmp_path, shared_teacher):
    """bf16 autocast (as on GPUs): the trained and saved weights stay fp32 and 10 AdamW steps at lr 1e-5 move
    nearly all of them (the embeddings of tokens never seen aside)."""
    from safetensors.torch import load_file
    from test_bf16_training import changed_share, seen_token_ids

    before = load_file(str(tiny_student / "model.safetensors"))
    s = train.run(cfg(tiny_student, tmp_path, method="on_policy", teacher=str(tiny_model), max_steps=10, bf16=True,
                      learning_rate=1e-5, on_policy={"max_new_tokens": 8, "loss": "topk"}))
    after = load_file(str(tmp_path / "out/final/model.safetensors"))
    assert s["steps"] == 10 and all(t.dtype == torch.float32 for t in after.values())
    share = changed_share({k: v.float() for k, v in before.items()}, after, seen_token_ids(tiny_student, tmp_path))
    assert share > 0.99, f"only {share:.1%} of the weights moved"


def test_serve_teacher_under_several_processes_is_refused(tiny_student, tiny_model, tmp_path, monkeypatch):
    """accelerate launch: every rank would start its own teacher server; one shared server is the way."""
    from cotdistill.train import teacher_mix

    monkeypatch.setenv("WORLD_SIZE", "2")
    c = cfg(tiny_student, tmp_path, method="on_policy", teacher={"backend": "vllm", "model": str(tiny_model)},
            on_policy={"serve_teacher": True})
    with pytest.raises(CotdistillError, match="has 2 processes and each would start its own teacher server"):
        teacher_mix.start_teacher(c, c.teacher)
