"""Benchmark: verification throughput on realistic traces, single process and with the pool.

    python scripts/bench_verify.py [--traces 1500 --workers 2 --timeout 10]

Traces are 2k-20k characters of step-by-step reasoning (equations, numbers, prose) ending in one
of the supported answer formats (\\boxed{}, ####, "Final answer:", "the answer is", choice
letters, LaTeX fractions/roots/polynomials, text), with golds that match, mismatch or are
equivalent in another form (issue #22's families too: thousands separators, percent words, intervals and
inequalities, matrix brackets, multiple-choice letters in free text); a few are pathological
(\\(10^{10^{10}}\\) towers). The last line is JSON
with ``traces_per_s_per_core`` (single process; target >= 300), the pool's rate,
``worst_item_s`` (bounded by the per-item limit), and ``hostile_stage_ratio``: the filter stage (``filter.run``,
format check and votes included) on ``--stage-traces`` of these traces with a set of hostile ones added (800 nested
boxes, runs of spaces after "####" and "Final answer:", 20k newlines after a letter, huge exponents, equation chains)
over the same stage without them, after a warm-up, three times each in alternating order, medians (target <= 2).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cotdistill.env import machine  # after the path is set

ANSWERS = [  # (answer in the trace, gold)
    ("{n}", "{n}"),
    ("{n}", "{m}"),
    ("{n}.0", "{n}"),
    ("\\frac{{{n}}}{{2}}", "{h}"),
    ("{n}\\sqrt{{2}}", "\\sqrt{{{sq}}}"),
    ("x^2+{n}x", "x(x+{n})"),
    ("\\frac{{{n}\\pi}}{{3}}", "\\frac{{{n}}}{{3}}\\pi"),
    ("(1, {n})", "(1,{n})"),
    ("B", "B"),
    ("C", "(B)"),
    ("Paris", "paris"),
    ("{n} apples", "{n}"),
    ("\\$1,{n:03d}", "1{n:03d}"),
    ("1{{,}}{n:03d}", "1{n:03d}"),                                       # issue #22's families
    ("{n} percent", "{n}\\%"),
    ("x \\geq {n}", "[{n}, \\infty)"),
    ("(-\\infty, {n}) \\cup ({m}, \\infty)", "x < {n} \\text{{ or }} x > {m}"),
    ("\\begin{{bmatrix}} 1 & {n} \\\\ 0 & 1 \\end{{bmatrix}}",
     "\\begin{{pmatrix}} 1 & {n} \\\\ 0 & 1 \\end{{pmatrix}}"),
]
CHOICE_ENDINGS = ["It can't be A, so I'd pick {l}.", "Answer: \"{l}\"", "{l}. The others fail the check.",
                  "The correct option is **{l}**."]
FORMATS = ["So the final result is \\boxed{{{a}}}.", "#### {a}", "Final answer: {a}", "Therefore, the answer is {a}.",
           "**Final Answer:** ${a}$"]


def make_trace(rng: random.Random) -> dict:
    target = rng.randint(2_000, 20_000)
    lines = []
    while sum(map(len, lines)) < target:
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        lines.append(rng.choice([
            f"Step: {a} + {b} = {a + b}, so we carry the result forward.",
            f"Next, multiply: ${a} \\times {b} = {a * b}$.",
            f"We know that \\frac{{{a}}}{{{b}}} is less than {a + 1}, which bounds the remainder.",
            "Let me double-check the previous reasoning and consider the edge cases carefully.",
            f"Substituting x = {a} gives x^2 - {b} = {a * a - b}.",
        ]))
    n = rng.randint(3, 999)
    ans, gold = rng.choice(ANSWERS)
    fmt = dict(n=n, m=n + 1, h=n / 2, sq=2 * n * n)  # LaTeX answers vary: no parser cache hits
    if rng.random() < 0.1:  # multiple choice in free text
        letter = rng.choice("BCD")
        ending, gold = rng.choice(CHOICE_ENDINGS).format(l=letter), rng.choice([letter, "B"])
    else:
        ending, gold = rng.choice(FORMATS).format(a=ans.format(**fmt)), gold.format(**fmt)
    return {"completion": "<think>" + "\n".join(lines) + "</think>\n" + ending, "gold": gold}


def pathological() -> dict:
    return {"completion": "Final answer: \\boxed{10^{10^{10^{10}}}}", "gold": "10^{10^{10^{10}}}+1"}


HOSTILE = [  # (completion, gold): #44's traces that stalled or crashed a stage, and neighbours
    ("<think>x</think>" + "\\boxed{" * 800 + "1" + "}" * 800, "1"),
    ("<think>x</think>" + "\\[ 1 " * 20_000 + ".", "1"),  # unclosed displays before a last sentence (no marker)
    ("<think>x</think>" + "a. " * 30_000 + "so x = 5.", "5"),  # 30,000 sentence ends
    ("<think>x</think>\n#### " + " " * 30_000 + "7", "7"),
    ("<think>x</think>\nFinal answer: " + " " * 30_000 + "x", "7"),
    ("<think>x</think>\nThe answer is " + " " * 30_000 + "(B)", "7"),
    ("<think>x</think>\nB" + "\n" * 20_000, "B"),
    ("<think>x</think>\\boxed{1e5000}", "1"),
    ("<think>x</think>\\boxed{" + "=".join(["a+b"] * 400) + "}", "7"),
    ("<think>x</think>" + "\\boxed{1} " * 3000, "1"),
    ("<think>x</think>" + "{" * 50_000, "7"),
]


def hostile_stage_ratio(traces: list[dict], workers: int, timeout: float) -> dict:
    """The filter stage on ``traces`` with and without HOSTILE added: whole-stage wall times, alternating order."""
    import tempfile

    from cotdistill import filter as stage
    from cotdistill.config import FilterConfig
    from cotdistill.prompts import load_template
    from cotdistill.records import Message, Problem, SamplingInfo, TeacherInfo, Trace

    info = load_template("math_boxed_think").info
    teacher = TeacherInfo(backend="vllm", model="bench", tokenizer_hash="bench")
    sampling = SamplingInfo(n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=4096, stop=[], logprobs=None)

    def gen_dir(root: Path, items: list[dict]) -> Path:
        root.mkdir(parents=True)
        probs = [Problem(id=f"p{i}", question=f"problem {i}", answer=it["gold"], source="bench")
                 for i, it in enumerate(items)]
        rows = [Trace(problem_id=f"p{i}", sample_index=0, messages=[Message(role="user", content=f"problem {i}")],
                      completion=it["completion"], finish_reason="stop", prompt_tokens=5,
                      completion_tokens=len(it["completion"]) // 4, teacher=teacher, template=info, sampling=sampling,
                      seed=0) for i, it in enumerate(items)]
        (root / "problems.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in probs))
        (root / "traces.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in rows))
        return root

    hostile = [{"completion": c, "gold": g} for c, g in HOSTILE]
    times: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"without": gen_dir(Path(tmp) / "without", traces), "with": gen_dir(Path(tmp) / "with",
                                                                                     traces + hostile)}
        for rep, name in enumerate(["warm-up", "without", "with", "with", "without", "without", "with"]):
            if name == "warm-up":  # imports, the pool's first start, the dataset writer: paid once, not timed
                name = "without"
            cfg = FilterConfig.model_validate({"generate_dir": str(dirs[name]), "output_dir": f"{tmp}/out{rep}",
                                               "verify_workers": workers, "verify_timeout_s": timeout,
                                               "progress": False, "near_dup_threshold": None})
            t = time.perf_counter()
            stage.run(cfg)
            times[name].append(time.perf_counter() - t)
    best = {k: sorted(v[1:] if k == "without" else v)[1] for k, v in times.items()}  # medians of 3
    return {"hostile_stage_ratio": round(best["with"] / best["without"], 3),
            "stage_s_without": round(best["without"], 2), "stage_s_with_hostile": round(best["with"], 2),
            "hostile_traces": len(hostile), "stage_traces": len(traces)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--stage-traces", type=int, default=400, help="traces in the hostile-stage comparison")
    args = ap.parse_args()
    from cotdistill.verify import verify_completion
    from cotdistill.verify_pool import VerifyPool

    rng = random.Random(0)
    items = [make_trace(rng) for _ in range(args.traces)] + [pathological() for _ in range(3)]
    rng.shuffle(items)
    chars = [len(i["completion"]) for i in items]
    verify_completion("\\boxed{1}", "1")  # first math-verify call imports sympy (~1 s); not a trace's cost

    t = time.perf_counter()
    single = []
    worst_single = 0.0
    for it in items:
        t1 = time.perf_counter()
        single.append(verify_completion(it["completion"], it["gold"]))
        worst_single = max(worst_single, time.perf_counter() - t1)
    single_s = time.perf_counter() - t

    t = time.perf_counter()
    worst = 0.0
    pooled = [None] * len(items)
    with VerifyPool(args.workers, args.timeout) as pool:
        for idx, v, dt in pool.imap(items):
            pooled[idx] = v
            worst = max(worst, dt)
    pool_s = time.perf_counter() - t
    agree = sum(a == b for a, b in zip(single, pooled)) / len(items)
    counts = {k: sum(1 for v in pooled if v.reason == k) for k in {v.reason for v in pooled}}
    print(f"{len(items)} traces, {min(chars)}-{max(chars)} chars (mean {sum(chars) // len(chars)}); "
          f"single process {len(items) / single_s:,.0f}/s; pool x{args.workers} {len(items) / pool_s:,.0f}/s; "
          f"reasons {counts}")
    print(json.dumps({
        "traces_per_s_per_core": round(len(items) / single_s, 1),
        "pool_traces_per_s": round(len(items) / pool_s, 1), "pool_workers": args.workers,
        "pool_traces_per_s_per_core": round(len(items) / pool_s / args.workers, 1),
        "worst_item_s": round(worst, 3), "worst_item_single_process_s": round(worst_single, 3),
        "item_limit_s": args.timeout, "single_vs_pool_agreement": round(agree, 4), "traces": len(items),
        **hostile_stage_ratio(items[:args.stage_traces], args.workers, args.timeout), "machine": machine(),
    }))


if __name__ == "__main__":
    main()
