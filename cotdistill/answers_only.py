"""The answers-only baseline's training set (a stage of ``cotdistill run``): one example per problem, the prompt
the teacher saw answered with the gold answer alone, in the template's answer format, no chain of thought.
It measures what the chain of thought adds: a distilled student should beat a student trained on this.

    answers_only/sft.jsonl, answers_only/sft/   (the same rows as a Hugging Face dataset, as filter writes)
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from cotdistill.config import PromptConfig
from cotdistill.errors import CotdistillError
from cotdistill.prompts import load_template
from cotdistill.sources import load_problem_file
from cotdistill.store import save_dataset_atomic, write_atomic
from cotdistill.verify import final_gold

ANSWER_FORMATS = {"boxed": "\\boxed{{{}}}", "hashes": "#### {}", "final_answer": "Final answer: {}",
                  "answer_is": "The answer is {}.", "choice": "The answer is ({}).",
                  "code": "```python\n{}\n```"}


def run(prompt: PromptConfig, generate_dir: Path, output_dir: Path) -> dict:
    """Rows for every problem of ``generate_dir/problems.jsonl`` that has a gold answer."""
    tmpl = load_template(prompt.template)
    fmt = ANSWER_FORMATS[tmpl.spec.answer_format]
    rows = []
    for p in load_problem_file(generate_dir / "problems.jsonl"):
        if p.answer is None:
            continue
        answer = fmt.format(final_gold(p.answer))
        if tmpl.spec.think:
            answer = "<think>\n</think>\n\n" + answer
        msgs = [m.model_dump() for m in tmpl.render(p, prompt.variables)] + [{"role": "assistant", "content": answer}]
        rows.append({"messages": msgs, "problem_id": p.id, "sample_index": 0, "gold": p.answer})
    if not rows:
        raise CotdistillError(f"{generate_dir / 'problems.jsonl'}: no problem has a gold answer; the answers-only "
                              f"baseline needs them (drop the answers_only student)")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(output_dir / "sft.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    save_dataset_atomic(datasets.Dataset.from_list(rows), output_dir / "sft")
    return {"examples": len(rows), "format": fmt}
