"""Write the small offline problem files shipped in data/ (deterministic; re-run to regenerate).

    python scripts/make_problems.py            # writes data/arithmetic_{train,test}.jsonl, data/chain_sum_test.jsonl,
                                               # data/digit_chain_{train,test}.jsonl, data/easy_arithmetic.jsonl,
                                               # data/choice_arithmetic_test.jsonl

arithmetic_*: multi-step integer arithmetic ("(a + b) * c - d") with a worked solution, one step
per line, and the gold answer. chain_sum_test: a reasoning-gym snapshot (task chain_sum, seed 7),
so the reasoning-gym path can be exercised from a plain file too. digit_chain_*: the embedded
run's task (cotdistill/tasks.py chain_problem: "Last digit of 7+5*3-8+9, left to right."), five
steps; train is what the teacher answers for distillation, test is held out from it and from the
teacher's own training set (scripts/train_teacher.py). choice_arithmetic_test: the arithmetic task as
four-option multiple choice in MMLU's shape (``choices``, 0-based ``answer``) for the multiple-choice path.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
sys.path.insert(0, str(ROOT))


def arithmetic_problem(rng: random.Random, idx: int, split: str) -> dict:
    a, b, c, d = (rng.randint(2, 99) for _ in range(4))
    op1, op2 = rng.choice("+-"), rng.choice("+-")
    s1 = a + b if op1 == "+" else a - b
    s2 = s1 * c
    s3 = s2 + d if op2 == "+" else s2 - d
    question = f"Compute ({a} {op1} {b}) * {c} {op2} {d}."
    solution = "\n".join([f"{a} {op1} {b} = {s1}", f"{s1} * {c} = {s2}", f"{s2} {op2} {d} = {s3}"])
    return {"id": f"arith-{split}-{idx:04d}", "question": question, "answer": str(s3),
            "solution": solution, "difficulty": 3}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--chain-train", type=int, default=4000)
    ap.add_argument("--chain-test", type=int, default=500)
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    rng = random.Random(1234)
    seen: set[str] = set()
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for split, size in (("train", args.train), ("test", args.test)):
        while len(rows[split]) < size:
            p = arithmetic_problem(rng, len(rows[split]), split)
            if p["question"] in seen:  # keep the test split disjoint from train
                continue
            seen.add(p["question"])
            rows[split].append(p)
        write_jsonl(DATA / f"arithmetic_{split}.jsonl", rows[split])

    from cotdistill.tasks import arithmetic_set

    write_jsonl(DATA / "choice_arithmetic_test.jsonl", arithmetic_set(50, seed=7003, prefix="choice", task="choice"))
    test = arithmetic_set(args.chain_test, seed=7001, prefix="chain-test", task="chain")
    write_jsonl(DATA / "digit_chain_test.jsonl", test)
    write_jsonl(DATA / "digit_chain_train.jsonl", arithmetic_set(
        args.chain_train, seed=7002, prefix="chain-train", task="chain", exclude={p["question"] for p in test}))

    rng, easy = random.Random(11), {}
    while len(easy) < 40:  # one-digit sums for small pretrained chat models (SmolLM2 run)
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        easy.setdefault(f"What is {a} + {b}?", str(a + b))
    write_jsonl(DATA / "easy_arithmetic.jsonl", [{"id": f"easy-{i:02d}", "question": q, "answer": ans}
                                                 for i, (q, ans) in enumerate(easy.items())])

    import reasoning_gym

    ds = reasoning_gym.create_dataset("chain_sum", size=50, seed=7)
    write_jsonl(DATA / "chain_sum_test.jsonl",
                [{"id": f"chain_sum-7-{i}", "question": e["question"], "answer": e["answer"]}
                 for i, e in enumerate(ds)])


if __name__ == "__main__":
    main()
