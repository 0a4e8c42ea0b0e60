"""Issue #22's answer families, table-driven: each family's correct answers are accepted and its near
misses stay rejected (0 false accepts). Cases are written here, in the shapes R1/QwQ/GSM8K models write."""

import pytest

from cotdistill.answer_values import real_set
from cotdistill.verify import verify_completion

FAMILIES = {
    "separators": [
        ("So the total is \\boxed{12,\\! 500}.", "12500", True),
        ("So the total is \\boxed{12,\\!500}.", "12500", True),
        ("The answer is $12{,}500$.", "12500", True),
        ("The answer is 2 500.", "2500", True),
        ("The answer is 3,250.75.", "3250.75", True),
        ("The answer is 1\\,000\\,000.", "1000000", True),
        ("#### 1 234 567", "1234567", True),
        ("The answer is 12,500.", "12500.5", False),
        ("The answer is 12,500.", "1250", False),
        ("The answer is 1,50.", "150", False),           # not a thousands group
        ("The answer is 2 50.", "250", False),
        ("\\boxed{12, 500}", "12500", False),            # comma and space: two answers, not one number
    ],
    "display_math": [
        ("So we get \\[ 14 \\]", "14", True),
        ("Adding them up:\n$$ 14 $$", "14", True),
        ("Therefore \\( 14 \\).", "14", True),
        ("Multiplying,\n\\[ 3 \\times 4 = 12 \\]", "12", True),
        ("So the area is\n\\[\n\\frac{3}{4}\n\\]", "\\frac{3}{4}", True),
        ("So we get \\[ 15 \\]", "14", False),
        ("We know \\[ 14 \\] is half, so the total is", "14", False),   # display not at the end: cut off
        ("First \\[ 14 \\] then \\[ 2 \\times 7 \\]", "15", False),
    ],
    "percent": [
        ("The answer is 45 percent.", "45", True),
        ("The answer is 45 pct.", "45\\%", True),
        ("The answer is 45 per cent.", "45%", True),
        ("\\boxed{45\\%}", "45", True),
        ("The answer is 46 percent.", "45", False),
        ("The answer is 4.5 percent.", "45%", False),
    ],
    "relations": [
        ("The answer is $y \\leq 3$.", "y <= 3", True),
        ("\\boxed{y \\le 3}", "y<=3", True),
        ("\\boxed{x \\geq -2}", "x >= -2", True),
        ("\\boxed{x \\geqslant -2}", "x \\ge -2", True),
        ("The answer is $x \\neq 2$.", "x != 2", True),
        ("\\boxed{3 \\geq y}", "y \\leq 3", True),
        ("\\boxed{1 < x \\le 5}", "x > 1 \\text{ and } x <= 5", True),
        ("The answer is $y >= 3$.", "y > 3", False),
        ("\\boxed{y < 3}", "y \\leq 3", False),
        ("\\boxed{x \\neq 3}", "x != 2", False),
        ("\\boxed{z \\le 3}", "y \\le 3", False),
    ],
    "intervals": [
        ("The answer is $(-\\infty, 2) \\cup (3, \\infty)$.", "x < 2 \\text{ or } x > 3", True),
        ("\\boxed{x<2 \\text{ or } x>3}", "(-\\infty,2)\\cup(3,\\infty)", True),
        ("\\boxed{[1, 5)}", "1 \\le x < 5", True),
        ("\\boxed{(-\\infty, 2]}", "x \\leq 2", True),
        ("\\boxed{(-\\infty, 2) \\cup (2, \\infty)}", "x \\neq 2", True),
        ("\\boxed{[1,3] \\cup [3,5]}", "[1,5]", True),
        ("\\boxed{(-\\infty, 2] \\cup (3, \\infty)}", "x < 2 \\text{ or } x > 3", False),
        ("\\boxed{[1, 5]}", "1 \\le x < 5", False),
        ("\\boxed{(1, 3) \\cup (3, 5)}", "(1,5)", False),
    ],
    "matrices": [
        ("The answer is $\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$.",
         "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", True),
        ("\\boxed{\\left[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 \\end{array}\\right]}",
         "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
        ("\\boxed{\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}}",
         "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", False),
        ("\\boxed{\\begin{bmatrix} 1 & 2 \\\\ 3 & 5 \\end{bmatrix}}",
         "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", False),
    ],
    "several_boxes": [
        ("The roots are \\boxed{3} and \\boxed{4}.", "3, 4", True),
        ("(a) \\boxed{3}\n(b) \\boxed{4}", "3, 4", True),
        ("**Part (a):** \\boxed{3}\n\n**Part (b):** \\boxed{4}", "3, 4", True),
        ("\\boxed{4}, \\boxed{3}", "3, 4", True),
        ("So \\boxed{7}.\n\n**Final Answer**\n\\boxed{7}", "7", True),   # the same answer boxed twice
        ("(a) \\boxed{3}\n(b) \\boxed{5}", "3, 4", False),
        ("I first got \\boxed{3}, but that is wrong; redoing it gives \\boxed{4}", "3, 4", False),
        ("The roots are \\boxed{3} and \\boxed{4}.", "3", False),
    ],
    "chat_tokens": [
        ("The answer is 5/8. <|im_start|>user", "5/8", True),
        ("\\boxed{5/8}<|im_end|>\n<|im_start|>user\nWhat about 3/8? The answer is 3/8", "\\frac58", True),
        ("So \\boxed{9}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\\boxed{2}", "9", True),
        ("So \\boxed{9}<｜end▁of▁sentence｜>", "9", True),
        ("So \\boxed{9}<end_of_turn>\n<start_of_turn>user\n\\boxed{2}", "2", False),
        ("I am not sure<|im_end|><|im_start|>user\nThe answer is 5/8", "5/8", False),
    ],
    "text": [
        ("The answer is $\\text{even}$.", "even", True),
        ("The answer is \\boxed{\\text{even}}.", "\\text{even}", True),
        ("\\boxed{\\text{Even}}", "even", True),
        ("\\boxed{\\text{odd}}", "\\text{even}", False),
        ("\\boxed{\\text{uneven}}", "even", False),
    ],
    "openthoughts": [
        ("<|begin_of_thought|>\nmaybe \\boxed{3}\n<|end_of_thought|>\n<|begin_of_solution|>\nSo \\boxed{4}\n"
         "<|end_of_solution|>", "4", True),
        ("<|begin_of_thought|>\nthe answer is 4\n<|end_of_thought|>\n<|begin_of_solution|>\nno answer\n"
         "<|end_of_solution|>", "4", False),
    ],
    "choice_letters": [
        ("so I'd pick C", "C", True),
        ('Answer: "A"', "A", True),
        ("B. it can't be C or D", "B", True),
        ("It can't be C, so the answer is B.", "B", True),
        ("Options A and D are wrong. The correct option is **B**.", "B", True),
        ("\\boxed{\\text{(C)}}", "C", True),
        ("\\boxed{D}", "(D)", True),
        ("<think>The answer is A? No.</think>\n\n**Answer: D**", "D", True),
        ("I'll go with option E.", "E", True),
        ("Working...\n#### C", "C", True),                     # the other answer markers hold letters too
        ("**Final Answer:** $B$", "B", True),
        ("It can't be C, so the answer is B.", "C", False),        # a letter mentioned while rejecting it
        ("The answer is not C.", "C", False),
        ("It is either B or C.", "B", False),                      # a hedge
        ("The answer is B or C", "C", False),
        ("Maybe B.", "B", False),
        ("Is the answer C? Let me check the units first", "C", False),
        ("C is wrong, so the answer must be something else", "C", False),
        ("I think the answer is C but let me verify", "C", False),
        ("Let me list the options again.\n\nA. 12\nB. 14\nC. 16", "A", False),  # the options repeated
        ("Checked every case.\n\nB. It cannot be C or D.", "B", True),       # the last paragraph opens with it
    ],
}
CASES = [(fam, *c) for fam, cases in FAMILIES.items() for c in cases]


@pytest.mark.parametrize("family,completion,gold,correct", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_family(family, completion, gold, correct):
    v = verify_completion(completion, gold)
    assert (v.correct is True) is correct, (family, v)


def test_every_family_has_near_misses():
    for fam, cases in FAMILIES.items():
        assert any(c[2] for c in cases) and any(not c[2] for c in cases), fam


def test_option_text_counts_as_its_letter_when_options_are_known():
    choices = ["Lyon", "Paris", "Nice", "Lille"]
    assert verify_completion("The answer is Paris.", "B", choices=choices).correct is True
    assert verify_completion("The answer is Nice.", "B", choices=choices).correct is False
    assert verify_completion("The answer is Paris.", "B").correct is False  # options unknown: no guess


def test_real_sets():
    assert real_set("x < 2 \\text{ or } x > 3")[1] == real_set("(-\\infty, 2) \\cup (3, \\infty)")[1]
    assert real_set("\\frac{1}{2}") is None and real_set("x = 5") is None
