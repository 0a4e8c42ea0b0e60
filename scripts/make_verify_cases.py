"""Write data/verify_agreement.jsonl: completions in the shapes real reasoning models write (R1-distill, QwQ,
OpenThoughts, GSM8K-style), each labelled with what a careful human would conclude, for
scripts/verify_agreement.py. Deterministic; re-run to regenerate.

    python scripts/make_verify_cases.py

Each answer case (what the model wrote, the gold, whether it is right, why) is placed in the closing section of
each shape; then the ways completions go wrong around a right answer are added: cut off mid-reasoning with the
right number last, the answer only inside the reasoning, a hedge, a chat-template turn after the answer, a wrong
answer boxed after the right one. Labels are the mathematics of the written answer, stated in ``note``.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "verify_agreement.jsonl"

# (written answer in LaTeX, gold, a human keeps it, why)
ANSWERS = [
    ("12,\\!500", "12500", True, "MATH's thin-space thousands separator: 12,\\!500 is 12500"),
    ("12{,}500", "12500", True, "{,} is a thousands separator in LaTeX"),
    ("2\\,500", "2500", True, "a thin space groups thousands"),
    ("3,250.75", "3250.75", True, "comma thousands, decimal point"),
    ("12,500", "12500.5", False, "12,500 is 12500, not 12500.5"),
    ("1,50", "150", False, "1,50 is not a thousands group (a European decimal or a typo), so not 150"),
    ("45\\%", "45", True, "a percent sign on the asked-for percentage"),
    ("45 \\text{ percent}", "45", True, "the word percent"),
    ("46\\%", "45", False, "46 is not 45"),
    ("y \\leq 3", "y <= 3", True, "\\leq and <= are the same relation"),
    ("y \\geq 3", "y > 3", False, ">= includes 3, > does not"),
    ("x \\neq 2", "x != 2", True, "\\neq and != are the same relation"),
    ("(-\\infty, 2) \\cup (3, \\infty)", "x < 2 \\text{ or } x > 3", True,
     "the interval union is the inequality's set"),
    ("(-\\infty, 2] \\cup (3, \\infty)", "x < 2 \\text{ or } x > 3", False, "the union includes 2; the gold does not"),
    ("[1, 5)", "1 \\le x < 5", True, "half-open interval = the double inequality"),
    ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True,
     "the same matrix in square brackets"),
    ("\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", False,
     "the transpose is another matrix"),
    ("\\text{even}", "even", True, "the same word in \\text"),
    ("\\text{odd}", "even", False, "odd is not even"),
    ("\\dfrac{3}{4}", "\\frac{3}{4}", True, "dfrac vs frac"),
    ("0.75", "\\frac{3}{4}", True, "the exact decimal of 3/4"),
    ("0.7", "\\frac{3}{4}", False, "0.7 is not 3/4"),
    ("2\\sqrt{2}", "\\sqrt{8}", True, "2 sqrt 2 = sqrt 8"),
    ("\\sqrt{2}", "\\sqrt{8}", False, "sqrt 2 is not sqrt 8"),
    ("\\frac{\\pi}{3}", "60^\\circ", False, "an angle in radians where degrees were asked is a different number"),
    ("x^2 + 2x + 1", "(x+1)^2", True, "the expanded square"),
    ("x^2 + 1", "(x+1)^2", False, "missing the 2x term"),
    ("(1, 2)", "(1,2)", True, "the same ordered pair"),
    ("(2, 1)", "(1,2)", False, "order matters in a pair"),
    ("\\{3, 1\\}", "\\{1, 3\\}", True, "sets have no order"),
    ("18", "\\$18", True, "the dollar sign is a unit"),
    ("-4", "-4", True, "a negative integer"),
    ("4", "-4", False, "the sign is wrong"),
    ("1000000", "1000001", False, "off by one in the last digit"),
    ("\\frac{10}{4}", "\\frac{5}{2}", True, "an unreduced fraction of the same value"),
    ("2.5", "\\frac{5}{2}", True, "the exact decimal of 5/2"),
    ("x = 5", "5", True, "the assignment names the asked-for value"),
    ("7 \\text{ cm}", "7", True, "a unit in \\text after the number"),
]
# several boxed answers that together are the gold, written the way models do
MULTI = [
    ("so the solutions are $\\boxed{2}$ and $\\boxed{3}$.", "2, 3", True, "both roots boxed one by one"),
    ("(a) $\\boxed{3}$\n(b) $\\boxed{4}$", "3, 4", True, "parts (a) and (b) boxed separately"),
    ("so the solutions are $\\boxed{2}$ and $\\boxed{4}$.", "2, 3", False, "one root is wrong"),
    ("First I got $\\boxed{3}$, but redoing the sum gives $\\boxed{4}$.", "3, 4", False,
     "the first box was withdrawn; the answer is 4 alone"),
]
# multiple choice in free text (gold: a letter)
CHOICE = [
    ("Checking each option, A fails at x = 0. So I'd pick C.", "C", True, "the chosen letter, in words"),
    ("Answer: \"A\"", "A", True, "quoted letter after Answer:"),
    ("B. It can't be C or D, since both give a negative area.", "B", True,
     "the section opens with the letter; C and D are rejected"),
    ("It can't be C, so the answer is B.", "C", False, "C is mentioned only to be rejected"),
    ("It is either B or C; I can't decide.", "B", False, "a hedge between two letters is no answer"),
    ("The correct option is **D**.", "D", True, "the bolded chosen option"),
    ("The answer is \\boxed{\\text{(C)}}.", "C", True, "a boxed letter in \\text"),
    ("Options A and D are wrong, so the answer is B.", "D", False, "D is rejected, B chosen"),
]
SHAPES = {
    "r1_distill": lambda a, q: (f"Okay, so I need to work out {q}. Let me compute carefully. First the setup, then "
                                f"the algebra. Wait, let me double-check that step. Yes, it holds.\n</think>\n\n"
                                f"Working through the steps above, we obtain the result.\n\n**Final Answer**\n"
                                f"\\[\n\\boxed{{{a}}}\n\\]", True),
    "qwq": lambda a, q: (f"Let's tackle {q} step by step. Hmm, is there a trick here? Let me see. No, the direct "
                         f"approach works. So, putting it together:\n\n**Final Answer**\n\n\\[ \\boxed{{{a}}} \\]",
                         False),
    "openthoughts": lambda a, q: (f"<|begin_of_thought|>\n\nSo I have {q}. Let me think about it systematically.\n\n"
                                  f"<|end_of_thought|>\n\n<|begin_of_solution|>\n\nCarrying out the computation, "
                                  f"the answer is:\n\n\\[\n\\boxed{{{a}}}\n\\]\n\n<|end_of_solution|>", False),
    "plain": lambda a, q: (f"To find {q}, we proceed step by step.\n\nTherefore, the final answer is ${a}$.", False),
}
GSM8K = [  # (completion tail, gold, keep, why)
    ("She sells 48 / 2 = 24 clips in May.\n48 + 24 = 72\n#### 72", "72", True, "GSM8K's #### line"),
    ("He pays 3 * 1,250 = 3,750 dollars.\n#### 3,750", "3750", True, "thousands comma after ####"),
    ("The total is 18 + 7 = 25 dollars.\n#### $25", "25", True, "a dollar sign after ####"),
    ("The total is 18 + 7 = 25 dollars.\n#### 26", "25", False, "wrong sum"),
    ("She has 5 + 3 = 8 apples, then gives away 2, so 8 - 2", "6", False, "cut off before the answer"),
    ("So she earns 12 * 5 = 60 dollars.\n#### 60 dollars", "60", True, "a unit after the number"),
    ("Total: 2 500 m.\n#### 2 500", "2500", True, "space-grouped thousands"),
    ("That's 45 percent of the class.\n#### 45 percent", "45", True, "percent as a word"),
]


def cases() -> list[dict]:
    out = []
    for i, (a, gold, keep, why) in enumerate(ANSWERS):
        for shape, make in SHAPES.items():
            text, think = make(a, f"problem {i}")
            out.append({"category": shape, "family": "answers", "completion": text, "gold": gold, "correct": keep,
                        "note": why, "think": think})
    for text, gold, keep, why in MULTI + CHOICE:
        fam = "several_boxes" if gold[0].isdigit() else "choice"
        out.append({"category": "r1_distill", "family": fam, "gold": gold, "correct": keep, "note": why,
                    "think": True, "completion": "Okay, let me go through this carefully.\n</think>\n\n" + text})
        out.append({"category": "qwq", "family": fam, "gold": gold, "correct": keep, "note": why, "think": False,
                    "completion": "Let's tackle this step by step. Hmm, check each case.\n\n" + text})
    for text, gold, keep, why in GSM8K:
        out.append({"category": "gsm8k", "family": "gsm8k", "completion": text, "gold": gold, "correct": keep,
                    "note": why, "think": False})
    out += failures()
    return out


def failures() -> list[dict]:
    """The ways a completion goes wrong around a right answer; every one of them is not a usable trace."""
    rows = []
    for i, (a, gold, keep, _) in enumerate(ANSWERS):
        if not keep or "\\" in a or "," in a:
            continue
        for kind, text, why in [
            ("cut_off", f"Okay, so for problem {i}: step one, step two, and it comes to {a}",
             "cut off mid-reasoning (finish=length): the right number last is not an answer"),
            ("only_in_thought", f"Okay, so the answer is {a}. Let me write it up.\n</think>\n\nTo solve this we",
             "the answer appears only inside the reasoning; the written solution is cut off"),
            ("hedge", f"Hmm, I think the answer might be {a}, but let me check the other case first",
             "a hedge followed by more checking is not a final answer"),
            ("later_wrong", f"So \\boxed{{{a}}}.\n\nWait, I made a sign error. Redoing it: \\boxed{{{a}1}}",
             "a corrected (wrong) answer boxed after the right one: the last answer counts"),
        ]:
            rows.append({"category": "failure", "family": kind, "completion": text, "gold": gold, "correct": False,
                         "note": why, "think": False})
        rows.append({"category": "failure", "family": "chat_token", "gold": gold, "correct": True, "think": False,
                     "completion": f"So the result is \\boxed{{{a}}}.<|im_end|>\n<|im_start|>user\nAnd 2+2?"
                                   f"<|im_end|>\n<|im_start|>assistant\n\\boxed{{4}}",
                     "note": "the model ran past its end-of-turn: only the text before <|im_end|> is its answer"})
    return rows


def main() -> None:
    rows = cases()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} cases to {OUT}")


if __name__ == "__main__":
    main()
