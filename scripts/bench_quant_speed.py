"""Decode speed of a model with its linears quantized by torchao (int8 weight-only, int4 unpacked) against its
fp32 weights, with transformers greedy decoding on this machine (vLLM has no weight-only integer path on CPU):
warm-up, then repeats in alternating order, medians. Prints one JSON line.

    python scripts/bench_quant_speed.py MODEL_DIR [--batch 64] [--max-tokens 64] [--repeats 3]

MODEL_DIR: a trained student (e.g. runs/demo/students/sft_filtered/seed0/final); prompts are the embedded
task's held-out problems through the arithmetic_cot template.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--template", default="arithmetic_cot")
    args = ap.parse_args(argv)

    from cotdistill.config import HFSource
    from cotdistill.env import machine
    from cotdistill.errors import CotdistillError
    from cotdistill.payoff import torch_decode_speed
    from cotdistill.prompts import load_template
    from cotdistill.sources import load_problems

    if not (Path(args.model) / "config.json").exists():
        sys.exit(f"error: {args.model}: no model here (config.json missing); give a trained student's final/ folder")
    src = HFSource(kind="hf", path=str(ROOT / "data/digit_chain_test.jsonl"), fields={"id": "id"}, limit=64)
    template = load_template(args.template)
    messages = [[m.model_dump() for m in template.render(p)] for p in load_problems(src)]
    try:
        speed = torch_decode_speed(args.model, messages, batch=args.batch, max_tokens=args.max_tokens,
                                   repeats=args.repeats)
    except CotdistillError as e:
        sys.exit(f"error: {e}")
    print(json.dumps({"model": args.model, **speed, "batch": args.batch, "max_tokens": args.max_tokens,
                      "repeats": args.repeats, "machine": machine()}))


if __name__ == "__main__":
    main()
