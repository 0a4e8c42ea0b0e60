"""Train the embedded default teacher: a small Llama that solves the project's multi-step
arithmetic task (cotdistill/tasks.py) by writing its steps, trained from scratch on worked
solutions with cotdistill's own SFT stage. CPU, no hub.

    python scripts/train_teacher.py --out runs/teacher [--train 20000 --steps 3000]

Prints greedy accuracy on held-out problems (HF generate) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def messages(p: dict) -> list[dict]:
    return [{"role": "user", "content": p["question"]},
            {"role": "assistant", "content": f"{p['solution']}\n\\boxed{{{p['answer']}}}"}]


def greedy_accuracy(model_dir: Path, problems: list[dict], max_new_tokens: int = 96) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotdistill.verify import verify_completion

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    right = 0
    for i in range(0, len(problems), 64):
        batch = problems[i: i + 64]
        prompts = [tok.apply_chat_template(messages(p)[:1], add_generation_prompt=True, tokenize=False) for p in batch]
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
        for p, ids in zip(batch, out[:, enc["input_ids"].shape[1]:]):
            right += bool(verify_completion(tok.decode(ids, skip_special_tokens=True), p["answer"]).correct)
    return right / len(problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/teacher")
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval", type=int, default=200)
    args = ap.parse_args()
    import datasets

    from cotdistill.config import TrainConfig
    from cotdistill.tasks import arithmetic_set
    from cotdistill.tiny import build_tiny_model
    from cotdistill.train import sft

    out = Path(args.out)
    train = arithmetic_set(args.train, seed=101, prefix="tt")
    held = arithmetic_set(args.eval, seed=202, prefix="th", exclude={p["question"] for p in train})
    corpus = [f"{p['question']} {p['solution']} \\boxed{{{p['answer']}}}" for p in train[:3000]]
    init = build_tiny_model(out / "init", hidden=args.hidden, heads=args.hidden // 64, layers=args.layers,
                            intermediate=2 * args.hidden, vocab_size=384, individual_digits=True, corpus=corpus)
    data = out / "data"
    datasets.Dataset.from_list([{"messages": messages(p), "problem_id": p["id"], "sample_index": 0}
                                for p in train]).save_to_disk(str(data / "sft"))
    cfg = TrainConfig(student=str(init), dataset_dir=str(data), output_dir=str(out / "train"), max_steps=args.steps,
                      per_device_train_batch_size=args.batch, learning_rate=args.lr, lr_scheduler_type="cosine",
                      warmup_ratio=0.05, logging_steps=100, save_steps=10_000, max_length=128, resume=False)
    t = time.perf_counter()
    summary = sft.run(cfg)
    minutes = (time.perf_counter() - t) / 60
    acc = greedy_accuracy(Path(summary["final_model"]), held)
    print(json.dumps({"teacher": summary["final_model"], "train_minutes": round(minutes, 2),
                      "heldout_greedy_accuracy": acc, "last_loss": summary["last_logged_loss"]}))


if __name__ == "__main__":
    main()
