"""Synthetic problems against the real training set: does a student trained on problems the teacher wrote from 8
seed problems keep what a student trained on the real 4,000 problems learns? And what does each problem filter
and the trace-length control change? Four `cotdistill run`s of data/configs/run_synth.yaml's setup (the same
teacher, students, steps and seeds; the real held-out problems for eval):

    real                  the real 4,000-problem training set (no synthesis)
    synth                 synthesized from 8 seeds, every problem filter; students: shortest trace per problem
                          (sft) and every verified trace (sft_all_traces)
    synth_no_consistency  the same synthesis without the answer-agreement check
    synth_band            the same synthesis keeping only a pass-rate band (--band, default 0.25-0.75 at T=1.5)

The three synth arms differ in their problem filters only, so they write the same problems: the synth arm's
writing round (and its answers, where an arm answers with the same settings) is copied into the other arms' folders
before they run, and their synthesis resumes it as finished (the generate runs check that the requests and settings
are the same) and screens it again with its own filters.

    python scripts/bench_synth.py                  # resumable: each run skips its finished stages
    python scripts/bench_synth.py --smoke          # tiny sizes, one seed (CI): the figures mean nothing

Prints the funnel and a table, then, last, one JSON line: {"synth_vs_real_retention": {mean, ci95, per_seed},
"filters": {"answer_consistency": ..., "difficulty_band": ...} (paired differences in points with 95% intervals),
"short_vs_all": {points, ci95, token_ratio, ...}, "problems_kept_per_s", "traces_kept_per_s",
"heldout_overlap", ...}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cotdistill.env import machine  # after the path is set

SMOKE = {"synthesize.requests": 6, "synthesize.sampling.n": 2, "synthesize.max_problems": 10,
         "synthesize.consistency.n": 2, "generate.sampling.n": 2, "seeds": [0], "eval.sampling.n": 1, "eval.ks": [1]}


def _set(d: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for k in path:
        d = d.setdefault(k, {})
    d[last] = value


def arms(base: dict, out: Path, smoke: bool, band: tuple[float, float], band_temperature: float) -> dict[str, dict]:
    """The four run configs, as dicts: only what differs from run_synth.yaml is changed."""
    base = copy.deepcopy(base)
    if smoke:
        for k, v in SMOKE.items():
            _set(base, k, v)
        for s in base["students"]:
            s["train"] = {**s["train"], "max_steps": 2, "logging_steps": 1, "save_steps": 2}
        base["eval"]["benchmarks"][0]["source"]["limit"] = 12
    one = [s for s in base["students"] if s["name"] == "sft"]
    real = {**copy.deepcopy(base), "output_dir": str(out / "real"), "students": one}
    real.pop("synthesize")
    real["generate"]["source"] = {"kind": "hf", "path": "data/digit_chain_train.jsonl", "fields": {"id": "id"}}
    if smoke:
        real["generate"]["source"]["limit"] = 10
    synth = {**copy.deepcopy(base), "output_dir": str(out / "synth")}
    loose = {**copy.deepcopy(base), "output_dir": str(out / "synth_no_consistency"), "students": one}
    loose["synthesize"]["consistency"]["enabled"] = False
    banded = {**copy.deepcopy(base), "output_dir": str(out / "synth_band"), "students": one}
    banded["synthesize"]["consistency"]["sampling"]["temperature"] = band_temperature
    # the smoke run's handful of problems would not survive a real band: it checks the plumbing only
    banded["synthesize"]["difficulty"] = {"min_pass": 0.0, "max_pass": 1.0} if smoke else {
        "min_pass": band[0], "max_pass": band[1]}
    for cfg in (real, loose, banded):
        cfg["eval"] = {**cfg["eval"], "teacher": False}  # the teacher is scored once, in the synth run
    return {"real": real, "synth": synth, "synth_no_consistency": loose, "synth_band": banded}


def share(configs: dict, source: str = "synth") -> dict[str, list[str]]:
    """Copy the ``source`` arm's writing rounds, and its answers where an arm answers with the same settings, into
    every other synth arm's synthesis folder that has none yet; returns what each arm was given."""
    import shutil

    given, src = {}, configs[source]
    same_answers = lambda c: ({k: v for k, v in c["synthesize"]["consistency"].items() if k != "enabled"} ==
                              {k: v for k, v in src["synthesize"]["consistency"].items() if k != "enabled"})
    for name, cfg in configs.items():
        if name == source or "synthesize" not in cfg:
            continue
        dst = Path(cfg["output_dir"]) / "synthesize"
        if dst.exists():  # resumed: what it holds is its own
            continue
        parts = sorted(p.name for p in (Path(src["output_dir"]) / "synthesize").glob("round*"))
        parts += ["answers"] if same_answers(cfg) else []
        part_dir = dst.with_name("synthesize.partial")  # a copy cut short is never taken for the arm's own
        shutil.rmtree(part_dir, ignore_errors=True)
        for part in parts:
            shutil.copytree(Path(src["output_dir"]) / "synthesize" / part, part_dir / part)
        part_dir.rename(dst)
        given[name] = parts
    return given


def outcomes(root: Path, student: str, seeds: list[int]):
    """[seeds, problems] per-problem accuracy of one student of a run."""
    import numpy as np

    from cotdistill.compare import load_outcomes

    models = [f"{student}@{s}" for s in seeds]
    got = load_outcomes(root / "eval", models, "digit_chain")
    return np.stack([got[m] for m in models])


def heldout_overlap(problems: Path, ngram: int) -> dict:
    """Kept synthesized problems that share a question (exactly, or a ``ngram``-word n-gram) with the held-out set."""
    from cotdistill.decontam import NgramIndex

    held = [json.loads(line) for line in (ROOT / "data/digit_chain_test.jsonl").read_text().splitlines()]
    index = NgramIndex(ngram)
    for p in held:
        index.add("digit_chain_test", p["id"], p["question"])
    kept = [json.loads(line) for line in problems.read_text().splitlines() if line.strip()]
    questions = {p["question"] for p in held}
    return {"kept": len(kept), "exact": sum(p["question"] in questions for p in kept),
            "ngram": sum(bool(index.hits(p["question"])) for p in kept), "ngram_n": ngram}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "data/configs/run_synth.yaml"))
    ap.add_argument("--out", default="runs/bench-synth")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--band", default="0.25,0.75", help="min_pass,max_pass of the band arm")
    ap.add_argument("--band-temperature", type=float, default=1.5,
                    help="the band arm's answer sampling temperature (at 1.0 this teacher passes nearly everything)")
    args = ap.parse_args()
    import yaml

    from cotdistill.compare import difference, ratio
    from cotdistill.config import RunConfig
    from cotdistill.errors import CotdistillError
    from cotdistill.run import run

    t0, out = time.perf_counter(), Path(args.out)
    band = tuple(float(x) for x in args.band.split(","))
    configs = arms(yaml.safe_load(Path(args.config).read_text()), out, args.smoke, band, args.band_temperature)
    seeds = configs["synth"]["seeds"]
    wall, shared = {}, {}
    for name, d in configs.items():
        if name not in ("real", "synth"):
            shared |= share({k: configs[k] for k in ("synth", name)})
        t = time.perf_counter()
        try:
            run(RunConfig.model_validate(d))
        except CotdistillError as e:
            sys.exit(f"error ({name}): {e}")
        wall[name] = round(time.perf_counter() - t, 1)
    acc = {name: outcomes(Path(d["output_dir"]), "sft", seeds) for name, d in configs.items()}
    acc["synth_all_traces"] = outcomes(out / "synth", "sft_all_traces", seeds)
    pts = lambda d: {"points": round(100 * d["difference"], 2), "ci95": [round(100 * x, 2) for x in d["ci95"]],
                     "verdict": d["verdict"]}
    reports = {n: json.loads((Path(d["output_dir"]) / "synthesize/synth_report.json").read_text())
               for n, d in configs.items() if n != "real"}
    filt = lambda n, f="filter": json.loads((out / n / f / "filter_report.json").read_text())
    short, every = filt("synth"), filt("synth", "filter_sft_all_traces")
    gen = json.loads((out / "synth/generate/summary.json").read_text())
    dropped = lambda rep, step: next(f["dropped"] for f in rep["funnel"] if f["step"] == step)
    tokens = lambda rep: rep["completion_tokens"]["kept"]
    per_seed = lambda a: [round(float(x.mean()), 4) for x in a]
    result = {
        "synth_vs_real_retention": ratio(acc["synth"], acc["real"]),
        "accuracy": {n: {"mean": round(float(a.mean()), 4), "per_seed": per_seed(a)} for n, a in acc.items()},
        "filters": {
            "answer_consistency": pts(difference(acc["synth"], acc["synth_no_consistency"], paired=True)) | {
                "problems_dropped": dropped(reports["synth"], "inconsistent"),
                "label_accuracy_with": reports["synth"]["label_accuracy"],
                "label_accuracy_without": reports["synth_no_consistency"]["label_accuracy"]},
            "difficulty_band": pts(difference(acc["synth_band"], acc["synth"], paired=True)) | {
                "band": configs["synth_band"]["synthesize"]["difficulty"], "answer_temperature": args.band_temperature,
                "problems_kept": reports["synth_band"]["kept"], "problems_kept_without": reports["synth"]["kept"]},
        },
        "short_vs_all": pts(difference(acc["synth"], acc["synth_all_traces"], paired=True)) | {
            "token_ratio": round(tokens(short)["total"] / tokens(every)["total"], 4),
            "traces": [short["kept"], every["kept"]],
            "mean_trace_tokens": [tokens(short)["mean"], tokens(every)["mean"]]},
        "problems_kept_per_s": reports["synth"]["problems_kept_per_teacher_s"],
        "traces_kept_per_s": round(short["kept"] / gen["generation_s"], 3) if gen.get("generation_s") else None,
        "funnel": reports["synth"]["funnel"], "synthesized_problems": reports["synth"]["kept"],
        "heldout_overlap": heldout_overlap(out / "synth/synthesize/problems.jsonl", 17),
        "teacher": json.loads((out / "synth/eval/results.json").read_text())["distillation"]["teacher_accuracy"],
        "shared_from_synth": shared, "seeds": seeds, "wall_s": wall, "total_s": round(time.perf_counter() - t0, 1),
        "smoke": args.smoke,
        "machine": machine(),
    }
    print(f"{'step':<24} {'dropped':>8} {'left':>7}")
    print(f"{'written':<24} {'':>8} {reports['synth']['written']:>7}")
    for f in reports["synth"]["funnel"]:
        print(f"{f['step']:<24} {f['dropped']:>8} {f['left']:>7}")
    print(f"{'arm':<24} {'accuracy':>9}  per seed")
    for n, a in result["accuracy"].items():
        print(f"{n:<24} {a['mean']:>9.3f}  {', '.join(f'{x:.3f}' for x in a['per_seed'])}")
    r = result["synth_vs_real_retention"]
    print(f"synth / real retention {r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
