"""Train the embedded default teacher shipped in data/teacher/: a small Llama, trained from scratch
with cotdistill's own SFT stage on worked solutions of the project's digit-chain task
(cotdistill/tasks.py: "Last digit of 7+5*3-8+9, left to right." -> one line per step), with a
digit-level BPE tokenizer trained here too. CPU, no hub; about 10 minutes on 2 cores.

    python scripts/train_teacher.py                         # -> data/teacher/ (+ teacher_card.json)
    python scripts/train_teacher.py --out runs/teacher2 --steps 3000

The held-out problems in data/digit_chain_test.jsonl (scripts/make_problems.py) are excluded from
its training set; the script ends by measuring greedy accuracy on them with HF generate and
writes that, the config and the timing to teacher_card.json.

``--write-share S`` adds problem writing to the mix (the embedded problem writer, data/teacher_writer/, used by
`cotdistill synthesize`): a share S of the examples are writing tasks instead of worked solutions, in the two
shapes of prompts/write_problem*.yaml: "Write a new problem like these:" + 3 examples -> a fresh problem with
as many operations (the examples fix the length, the numbers are new), and "Write a harder problem:" + one
problem -> the same chain with one more operation. Worked solutions then cover 4-6 operations, so the
teacher can answer what it writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
SHIP = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja", "special_tokens_map.json")


def messages(p: dict) -> list[dict]:
    if "written" in p:
        return [{"role": "user", "content": p["question"]}, {"role": "assistant", "content": p["written"]}]
    return [{"role": "user", "content": p["question"]},
            {"role": "assistant", "content": f"{p['solution']}\n\\boxed{{{p['answer']}}}"}]


WRITE_FEW_SHOT = "Write a new problem like these:\n"
WRITE_HARDER = "Write a harder problem:\n"


def writing_example(rng, pid: str) -> dict:
    """One problem-writing example: few-shot (3 examples of k operations -> a new one of k) or an evolution
    step (a problem of k -> the same chain with one more operation)."""
    from cotdistill.tasks import CHAIN_OPS, chain_problem

    k = rng.choice((4, 5, 5, 6))
    if rng.random() < 0.75:
        shots = [chain_problem(rng, "x", steps=k)["question"] for _ in range(3)]
        return {"id": pid, "question": WRITE_FEW_SHOT + "\n".join(shots),
                "written": chain_problem(rng, "x", steps=k)["question"]}
    q = chain_problem(rng, "x", steps=min(k, 5))["question"]
    expr = q[len("Last digit of "):-len(", left to right.")]
    longer = f"Last digit of {expr}{rng.choice(list(CHAIN_OPS))}{rng.randint(0, 9)}, left to right."
    return {"id": pid, "question": WRITE_HARDER + q, "written": longer}


def greedy_accuracy(model_dir: Path, problems: list[dict], max_new_tokens: int = 64) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotdistill.verify import verify_completion

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    right = 0
    for i in range(0, len(problems), 128):
        batch = problems[i: i + 128]
        prompts = [tok.apply_chat_template(messages(p)[:1], add_generation_prompt=True, tokenize=False) for p in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        for p, ids in zip(batch, out[:, enc["input_ids"].shape[1]:]):
            right += bool(verify_completion(tok.decode(ids, skip_special_tokens=True), p["answer"]).correct)
    return right / len(problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "teacher"))
    ap.add_argument("--work", default="runs/teacher-train", help="checkpoints and the training set")
    ap.add_argument("--train", type=int, default=50000, help="distinct training problems")
    ap.add_argument("--chain", type=int, default=5, help="operations per problem")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-share", type=float, default=0.0,
                    help="share of problem-writing examples (0: the answering teacher only)")
    args = ap.parse_args()
    import datasets

    from cotdistill import train
    from cotdistill.config import TrainConfig
    from cotdistill.tasks import arithmetic_set
    from cotdistill.tiny import build_tiny_model

    held = [json.loads(line) for line in (ROOT / "data" / "digit_chain_test.jsonl").read_text().splitlines()]
    exclude = {p["question"] for p in held}
    if args.write_share:
        import random

        rng = random.Random(args.seed + 7)
        lengths = {4: args.train // 4, args.chain: args.train // 2, 6: args.train - args.train // 4 - args.train // 2}
        problems = [p for steps, size in lengths.items()
                    for p in arithmetic_set(size, seed=101 + steps, prefix=f"teacher-train-{steps}", task="chain",
                                            exclude=exclude, steps=steps)]
        n_write = round(len(problems) * args.write_share / (1 - args.write_share))
        while n_write:  # a written problem is never one of the held-out questions either
            ex = writing_example(rng, f"teacher-write-{n_write:05d}")
            if ex["written"] not in exclude:
                problems.append(ex)
                n_write -= 1
        random.Random(args.seed).shuffle(problems)
    else:
        problems = arithmetic_set(args.train, seed=101, prefix="teacher-train", task="chain", exclude=exclude,
                                  steps=args.chain)
    work, out = Path(args.work), Path(args.out)
    corpus = [f"user assistant {p['question']} {p.get('written') or p['solution']} \\boxed{{{p.get('answer', '')}}}"
              for p in problems[:3000]]
    init = build_tiny_model(work / "init", hidden=args.hidden, heads=args.heads, layers=args.layers,
                            intermediate=2 * args.hidden, vocab_size=args.vocab, individual_digits=True,
                            corpus=corpus, seed=args.seed)
    datasets.Dataset.from_list([{"messages": messages(p), "problem_id": p["id"], "sample_index": 0}
                                for p in problems]).save_to_disk(str(work / "data" / "sft"))
    cfg = TrainConfig(student=str(init), dataset_dir=str(work / "data"), output_dir=str(work / "train"),
                      max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=args.lr,
                      lr_scheduler_type="cosine", warmup_ratio=0.03, logging_steps=50, save_steps=500,
                      max_length=128, seed=args.seed, length_grouped=False, resume=False)
    t = time.perf_counter()
    summary = train.run(cfg)
    minutes = (time.perf_counter() - t) / 60
    final = Path(summary["final_model"])
    acc = greedy_accuracy(final, held)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIP:
        if (final / name).exists():
            shutil.copy2(final / name, out / name)
    card = {
        "task": "digit_chain" + (" + problem writing" if args.write_share else ""),
        "chain_steps": args.chain,
        "train_problems": args.train,
        "heldout": "data/digit_chain_test.jsonl",
        "heldout_greedy_accuracy_hf": acc,
        "train_minutes": round(minutes, 2),
        "last_logged_loss": summary["last_logged_loss"],
        "command": "python scripts/train_teacher.py " + " ".join(sys.argv[1:]),
        "args": vars(args) | {"out": os.path.relpath(out, ROOT)},
    }
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        card["parameters"] = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    (out / "teacher_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card))


if __name__ == "__main__":
    main()
