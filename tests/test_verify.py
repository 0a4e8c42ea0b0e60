"""Table-driven tests of answer extraction and comparison (pure functions)."""

import pytest

from cotdistill.verify import compare, extract_answer, verify_completion

EXTRACT = [
    # boxed
    ("So we get \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("nested \\boxed{\\sqrt{\\frac{a}{b}}} done", "\\sqrt{\\frac{a}{b}}"),
    ("first \\boxed{1} then corrected \\boxed{2}", "2"),
    ("$\\boxed{x^2+1}$", "x^2+1"),
    ("\\fbox{7}", "7"),
    ("\\boxed {12}", "12"),
    ("The final answer is $\\boxed{3}$. I hope it is correct.", "3"),
    ("\\boxed{(1, 2)}", "(1, 2)"),
    ("\\boxed{\\{1,2,3\\}}", "\\{1,2,3\\}"),
    ("unclosed \\boxed{12", None),
    # ####
    ("work\n#### 72", "72"),
    ("#### 1,234", "1,234"),
    ("#### 18 dollars", "18"),
    ("#### $18.50", "18.50"),
    ("#### 5\nsome trailing chatter\n#### 6", "6"),
    # the answer is
    ("Therefore, the answer is 17.", "17"),
    ("So the answer is 3.5. Next question", "3.5"),
    ("The answer is: **73**", "73"),
    ("the final answer is $-4$.", "-4"),
    ("Thus the answer is 12 apples.", "12 apples"),  # a word off the unit list stays: "3 thousand" is not 3
    ("Thus the answer is 12 meters.", "12"),
    ("Thus the answer is -12 m/s.", "-12"),
    ("The answer is (B) because it fits.", "B"),
    ("The answer is Paris.", "Paris"),
    ("the answer is 50%", "50"),
    # Final answer:
    ("Final answer: 9", "9"),
    ("**Final Answer:** 144", "144"),
    ("Final answer: **B**", "B"),
    ("reasoning...\nAnswer: (C)", "C"),
    ("Final answer: 12 cm.", "12"),
    ("Final answer: \\(\\frac{3}{4}\\)", "\\frac{3}{4}"),
    ("Final answer: 2\\sqrt{2}", "2\\sqrt{2}"),
    ("Final answer: $x = 5$", "x = 5"),
    ("Final answer: 90^\\circ", "90"),
    ("Final answer: 10\\text{ cm}", "10"),
    # last marked answer wins across formats
    ("\\boxed{3}\nActually, Final answer: 4", "4"),
    ("Final answer: 4\nwait no \\boxed{5}", "5"),
    # unmarked numbers are not answers
    ("Let me compute 12 + 30 = 42", None),
    ("<think>the sum is 42 so", None),
    ("We have 5 apples and 3 pears, total 8", None),
    ("", None),
    # think blocks
    ("<think>maybe \\boxed{1}</think>The result is \\boxed{2}", "2"),
    ("<think>the answer is 1</think>no marked answer here", None),
    ("<think>reasoning</think>\nFinal answer: 7", "7"),
    # several boxes that together are the answer; a box after prose is not joined
    ("so x = \\(\\boxed{2}\\) and \\(\\boxed{3}\\).", "2, 3"),
    ("\\boxed{1}, \\boxed{4}", "1, 4"),
    ("$x=\\boxed{2}$ and $x=\\boxed{3}$", "2, 3"),
    ("we first had \\boxed{1} but then found \\boxed{4}", "4"),
    # hedges and headings
    ("I think the answer is 12 but let me check the carry", None),
    ("Maybe the answer is 3? Let me verify.", None),
    ("So the answer is 12, but wait", None),
    ("\\boxed{72}\n\n#### Verification\nCheck: 72 - 42 = 30.", "72"),
    # bare answers: one short expression, never prose
    ("72", "72"),
    ("  $\\frac{1}{2}$ ", "\\frac{1}{2}"),
    ("(B)", "B"),
    ("So we get 12", None),
    ("The total is 7", None),
    # text answers
    ("\\boxed{\\text{(C)}}", "C"),
    ("\\boxed{\\text{No}}", "No"),
]


@pytest.mark.parametrize("text,expected", EXTRACT)
def test_extract(text, expected):
    assert extract_answer(text) == expected


COMPARE = [
    # exactness: no relative tolerance; commas only as thousands separators
    ("1000000", "1000001", False),
    ("0.0000001", "0.0000009", False),
    ("12", "1,2", False),
    ("1/3", "0.333333", True),
    ("1/3", "0.33", False),
    # lists of answers (several boxes) match as sets; tuples keep their order
    ("2, 3", "3, 2", True),
    ("\\{2, 3\\}", "3, 2", True),
    ("2 \\text{ and } 3", "2, 3", True),
    ("2, 3", "2, 4", False),
    ("(1, 2)", "(2, 1)", False),
    ("no", "No", True),
    ("42", "42", True),
    ("42", "42.0", True),
    ("1234", "1,234", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\frac{1}{2}", "0.5", True),
    ("3", "4", False),
    ("-4", "4", False),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+2x+1", "(x+2)^2", False),
    ("(1, 2)", "(1,2)", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\pi", "3.14", False),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{2}", True),
    ("B", "B", True),
    ("B", "C", False),
    ("(B)", "B", True),
    ("Paris", "paris", True),
    ("Paris", "London", False),
    ("yes", "Yes.", True),
    ("#### 72", "72", True),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72", True),
    ("18", "eighteen dollars", False),
    ("$18", "18", True),
    ("1e3", "1000", True),
    ("(1, 2)", "(1, 3)", False),
    ("(1, 2)", "(2, 1)", False),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("(1, 2, 3)", "(1, 2)", False),
    ("[1, 2]", "[1,2.0]", True),
]


@pytest.mark.parametrize("gold,pred,expected", COMPARE)
def test_compare(gold, pred, expected):
    assert compare(gold, pred) is expected


VERDICTS = [
    ("so \\boxed{8}", "8", True, "match"),
    ("so \\boxed{9}", "8", False, "mismatch"),
    ("I computed 3 + 5 = 8", "8", False, "no_answer"),  # truncated: last number matches, not marked
    ("\\boxed{8}", None, None, "gold_unparseable"),
    ("\\boxed{8}", "", None, "gold_unparseable"),
]


@pytest.mark.parametrize("completion,gold,correct,reason", VERDICTS)
def test_verdicts(completion, gold, correct, reason):
    v = verify_completion(completion, gold)
    assert v.correct is correct and v.reason == reason


def test_reasoning_gym_scorer_is_used():
    import reasoning_gym

    entry = dict(reasoning_gym.create_dataset("chain_sum", size=1, seed=2)[0])
    good = verify_completion(f"Final answer: {entry['answer']}", None, "chain_sum", entry)
    bad = verify_completion("Final answer: 123456789", None, "chain_sum", entry)
    assert good.correct is True and good.reason == "scorer" and bad.correct is False


def test_case_count():
    assert len(EXTRACT) + len(COMPARE) + len(VERDICTS) >= 60


FORMAT = [
    ("<think>a</think>\\boxed{1}", True, None),
    ("<think>a\\boxed{1}", True, "unbalanced <think> tags"),
    ("<think>a</think><think>b</think>\\boxed{1}", True, "unbalanced <think> tags"),
    ("</think>x<think>\\boxed{1}", True, "unbalanced <think> tags"),
    ("<think>a</think>no answer", True, "no final answer section"),
    ("<think>a</think>\\boxed{1}\nFinal answer: 2", True, "several final answer sections"),
    ("<think>a</think>The final answer is $\\boxed{3}$.", True, None),  # two markers, one section
    ("work\n#### 5", False, None),
    ("work only", False, "no final answer section"),
]


@pytest.mark.parametrize("completion,think,expected", FORMAT)
def test_check_format(completion, think, expected):
    from cotdistill.verify import check_format

    assert check_format(completion, think) == expected


def test_answer_key_groups_equal_values():
    from cotdistill.verify import answer_key

    assert answer_key("1,000") == answer_key("1000.0") != answer_key("1001")
    assert answer_key("Paris.") == answer_key("paris")


@pytest.mark.parametrize("gold, final", [
    ("Natalia sold 48 clips.\n#### 72", "72"),                     # GSM8K
    ("So $x = 2$, hence \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),   # a MATH worked solution
    ("\\frac{1}{2}", "\\frac{1}{2}"),                              # already final
    ("7", "7"),
])
def test_final_gold(gold, final):
    from cotdistill.verify import final_gold

    assert final_gold(gold) == final


# #44's false accepts, each beside its near miss the other way: (gold, completion, correct)
FALSE_ACCEPTS = [
    ("3", r"\boxed{3x}", False), ("3", r"\boxed{3 thousand}", False), ("3", r"\boxed{3 minus one}", False),
    ("3", r"\boxed{3 is wrong}", False), ("3", r"\boxed{3 or four}", False), ("3x", r"\boxed{3y}", False),
    ("2.5", r"\boxed{2.5 dozen}", False), ("3", r"\boxed{3 m}", True), ("2.5", r"\boxed{2.5 kg}", True),
    ("12", r"\boxed{12 dollars}", True), ("5", r"\boxed{5 \text{ cm}}", True), ("5", r"\boxed{5 USD}", True),
    ("5", r"\boxed{€5}", True), ("5", r"\boxed{€5 thousand}", False),
    ("3", r"\boxed{-3 meters}", False), ("5", "The answer is -5 m/s.", False), ("-5", r"\boxed{-5 m/s}", True),
    ("-3", r"\boxed{-3 meters}", True),
    ("3", r"\boxed{1 = 3}", False), ("3", r"\boxed{2 = 3}", False), ("3", r"\boxed{x = 3}", True),
    ("12", r"\boxed{3 \times 4 = 12}", True), ("13", r"\boxed{3 \times 4 = 13}", False),
    ("x = 3", r"\boxed{x = 3}", True),
    ("3", r"\boxed{2 \lor 3}", False), ("3", r"\boxed{2 \text{ or } 3}", False),
    ("2, 3", r"\boxed{2 \text{ or } 3}", True),
    ("(1, 2)", r"\boxed{1 < x < 2}", False), ("1 < x < 2", r"\boxed{(1, 2)}", False),
    ("(1, 2)", r"\boxed{(1,2)}", True),
    ("(-\\infty, 2)", r"\boxed{x < 2}", True), ("[1,5]", r"\boxed{[1,3] \cup [3,5]}", True),
    ("1000000000000000001", r"\boxed{1.0 \times 10^{18}}", False), ("10^{18}", r"\boxed{1.0 \times 10^{18}}", True),
    ("1000", r"\boxed{10^3}", True), ("1331000", r"\boxed{110^3}", True),
    ("3", "The answer is 3. Wait, no, that is wrong: it is 2.", False),
    ("3", "The answer is 3. Let me verify: 1+2=3, correct.", True),
    ("B", "(B) or (C)", False), ("B", "Answer: B, C", False), ("B", "I pick B, C and D", False),
    ("B", r"\boxed{A, B, C, D}", False), ("B", "B. No wait, it is actually C.", False),
    ("B", "The answer is B.", True), ("B", "(B) Paris", True), ("C", "B. No wait, it is actually C.", False),
]


@pytest.mark.parametrize("gold,completion,correct", FALSE_ACCEPTS)
def test_false_accepts_are_closed_and_near_misses_kept(gold, completion, correct):
    v = verify_completion(completion, gold)
    assert v.correct is correct, v


# a second attack on the verifier (hedges around boxes, one-sided readings, several letters): each must not count
NOT_COMMITTED = [
    ("3", r"Either \boxed{3} or 4."), ("3", r"\boxed{3} (or possibly 4)"), ("3", r"\boxed{3} or maybe 4"),
    ("3", r"The answer is not \boxed{3}."), ("3", r"It is not \boxed{3}"), ("3", r"Is the answer \boxed{3}?"),
    ("3", r"If the answer were \boxed{3}, we would be done, but it is not."), ("3", r"\boxed{3} is incorrect."),
    ("3", r"\boxed{3} is the wrong answer."), ("3", "\\boxed{3}\n\nNope, that is not it."),
    ("3", r"Possibly \boxed{3}"), ("3", "The answer is 3. Or 4."), ("3", "Final answer: 3\nor 4"),
    ("3", "#### 3\nor 4"), ("3", "Final answer: 3? No."), ("3", "Answer: 3\n\nBut really it is 4."),
    ("3", r"\boxed{\not 3}"), ("3", r"\boxed{\geq 3}"), ("3", r"\boxed{< 3}"), ("3", r"\boxed{\approx 3}"),
    ("3", r"\boxed{3 \approx 4}"), ("3", r"\boxed{3\hspace{1cm}4}"), ("3", r"\boxed{3 \ldots}"),
    ("3", "\\boxed{3\u200b4}"), ("3", "\\boxed{3\u0338}"), ("3", r"\boxed{\(3\) \(4\)}"),
    ("3", r"\boxed{3 \text{ thousand}}"), ("3", r"\boxed{3!}"), ("3", "Final answer: !3"),
    ("4", r"\boxed{3 \Rightarrow 4}"), ("4", r"\boxed{3 \in 4}"), ("4", r"\boxed{3 \cap 4}"),
    ("4", r"\boxed{$3$ $4$}"), ("4", r"\boxed{3 \boxed{4}}"), ("3", r"\boxed{1000000! + 1}"),
    ("3", r"\boxed{9^{9^{9}} + 1}"), ("3", r"\boxed{\binom{10^{6}}{500000}}"), ("B", r"\boxed{B} (or C)"),
    ("B", r"\boxed{B}, maybe C"), ("B", "Answer: B; C"), ("B", "Answer: B|C"), ("B", "Answer: B C"),
    ("B", "Answer: B\nC"), ("B", "Answer: **B** (C also works)"), ("B", "The answer is B...or C"),
    ("B", "It is not the case that the answer is B."), ("B", r"B is wrong, so \boxed{B}"),
    ("B", "\\boxed{B}\n\nHmm, B is wrong. It must be C."),
]
COMMITTED = [
    ("3", r"Therefore, if we add them, the answer is \boxed{3}."), ("3", r"We get $x=3$, so \boxed{3}."),
    ("3", r"\[\boxed{3}\]"), ("3", r"Thus, the answer is 3. **Final Answer** \boxed{3}"),
    ("45", r"\boxed{45 \text{ percent}}"), ("x \\geq 2", r"\boxed{x \ge 2}"), ("[2, \\infty)", r"\boxed{x \geq 2}"),
    ("\\pm 2", r"\boxed{\pm 2}"), ("10", "\\[ 3 + 7 = 10 \\]"), ("B", "I'd pick C? No: it's wrong. So I pick B."),
    ("B", "The correct option is **B**."),
]


@pytest.mark.parametrize("gold,completion", NOT_COMMITTED)
def test_uncommitted_or_one_sided_answers_do_not_count(gold, completion):
    assert verify_completion(completion, gold).correct is not True


@pytest.mark.parametrize("gold,completion", COMMITTED)
def test_committed_answers_still_count(gold, completion):
    assert verify_completion(completion, gold).correct is True


@pytest.mark.parametrize("completion,reason", [
    ("</think>" + "if " * 16000 + ". the answer is 3", "match"),  # the last clause commits; the hedges are before it
    ("</think>" + "\\[ " * 16000, "no_answer"), ("</think>" + "\\( " * 16000, "no_answer"),
    ("<think>x</think>" + "\\boxed{" * 800 + "1" + "}" * 800, "mismatch"),  # boxes past 16 deep are not read
])
def test_hostile_traces_get_their_verdict(completion, reason):
    """Each took seconds (quadratic regexes, nested boxes); bench_verify.py measures the stage with them."""
    assert verify_completion(completion, "3").reason == reason


# issue #44 item 2: the families the peers' own test cases (data/peer_cases.jsonl) read and this verifier missed,
# each with near misses that must stay rejected
PEER_FAMILIES = [
    # no marker at all: the last math span or number of a complete last sentence that states a result
    ("x >= 5", r"Therefore $x \geq 5$ is the solution.", True), ("x < 3", r"We find that $x \lt 3$.", True),
    ("x \\neq 5", "The solution is $x != 5$", True), ("2/3", "So the probability that Alice wins is 2/3.", True),
    ("(7,6)", "So the ordered pair $(x, y)$ that solves the system is $(7, 6)$. <|im_start|>user", True),
    ("12", "Therefore, there are 12 sequences that meet the three conditions. I hope it is correct.", True),
    ("100%", "Therefore, the minimum error increases by 100%.", True), ("9", "Answer $ 9 $", True),
    (r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}",
     r"Special matrix: $ \left[\begin{array}{cc}1 & 2 \\3 & 4\end{array}\right] $", True),
    ("18", "She sells them for $2 each, which is 9 * 2 = 18", False),  # cut off: no complete sentence
    ("5", "We get 2 + 3 = 5. Now multiply by 4.", False), ("5", "Step 1: compute 5.", False),
    ("5", "The answer cannot be 5.", False), ("5", "It is not 5.", False), ("18", "Is it 18?", False),
    ("18", "Maybe it is 18.", False), ("18", "It is 18. Wait, no.", False), ("6", "It is 5 or 6.", False),
    ("18", "The answer must be 18, unless I erred.", False), ("3", "So x is 3 thousand.", False),
    ("3", "So x = 3x.", False), ("3", "The result is 3 minus one.", False), ("3", "The result is -3 meters.", False),
    ("5", "It equals 5 if n is even.", False), ("8", "Thus the sum is 7 when n > 2, else 8.", False),
    ("2/3", "The chance is 2/3 at most.", False), ("2/3", "The chance is less than 2/3.", False),
    ("5", "x is greater than 5.", False), ("5", "It is at least 5.", False), ("5", "So it is 5 or so.", False),
    ("5", "The total is 5 but I doubt it.", False), ("5", "The number is 5 squared.", False),
    ("9", "Answer $ \n 9 \n $", False), ("9", "Answer \\( \n 9 \n \\)", False), ("5", "5? No.", False),
    # a marked answer written as a sentence is the value it states
    ("120", "Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", True),
    ("34", "Final Answer: The largest $n$ is 34.", True), ("5", "Final Answer: The value is not 5.", False),
    # decimal commas, currency and percent words around a bare number
    ("1000.99", "1000,99", True), ("1.22", "1,22", True), ("0,111", "0.111", True), ("1000.99", "1,000.99$", True),
    ("28\\%", "28 percent", True), ("28\\%", "$28$ pct", True),
    ("2.3", "2,3", False), ("0.1", "0,1", False), ("150", "1,50", False), ("12", "1,2", False),
    ("28\\%", "28 dozen", False), ("3", "3 apples", False),
    # relations: a negated variable, a variable's approximate value or its set
    ("x < 1", "$-x > -1$", True), ("x <= 1", "$-x >= -1$", True), ("x < 1", "$-x > 1$", False),
    ("11", r"$x\approx11$", True), ("3", r"\boxed{3 \approx 4}", False), ("[-2, 7]", r"$x \in [-2,7]$", True),
    ("[-2, 7]", r"$x \in [-2,8]$", False), ("1/3", r"$\frac{1}{3} \textbf{meters}$", True),
    # several answers: points in any order, parts boxed apart, math spans joined by "and"
    ("(5, 8), (8, 5)", r"$$\boxed{(x, y) = (5, 8) \quad \text{and} \quad (8, 5)}$$", True),
    ("(5, 8), (8, 5)", r"\boxed{(8, 5), (5, 8)}", True), ("(5, 8), (8, 5)", r"\boxed{(5, 8), (5, 8)}", False),
    ("(5, 8)", r"\boxed{(8, 5)}", False),
    ("(3, 3), (1, 1)", r"$$\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}$$", True),
    ("12\\text{ and }13", 'Final Answer: The final answer is \\"$12 $ and $13 $\\". I hope it is correct.', True),
    ("12", "The answer is $12$ and $13$.", False),
    # free-text option letters, and a gold text that commits to a letter
    ("C", "thinking about it I think the correct answer is C", True),
    ("B", "It's not A because it doesn't make sense, therefore I think it's B", True),
    ("D", "The answer is for sure D, it can't be A or B", True), ("A", "I think it is a.", False),
    ("B", "therefore I think it's B or C", False), ("Alina and the answer is\n(C) Cecile", "C", True),
    ("Alina and the answer is\n(C) Cecile", "A", False), ("The answer is a prime", "A", False),
]


@pytest.mark.parametrize("gold,completion,correct", PEER_FAMILIES)
def test_peer_families_read_and_near_misses_refused(gold, completion, correct):
    assert (verify_completion(completion, gold).correct is True) == correct, verify_completion(completion, gold)


# the attack review of the fallback above (helper, 2026-12-08): each was accepted by the first version of it
ATTACKED = [
    ("5", "So the count is ≥ 5."), ("5", "So x is between 3 and 5."), ("5", "So the count is 3-5."),
    ("5", "The value is by no means 5."), ("5", "The value is anything but 5."), ("5", "Therefore 5 is impossible."),
    ("5", "So we might get 5."), ("5", "So the count is likely 5."),
    ("3", "We have 5 cases. The answer follows from case 3."),
    ("3", "The ratio is 5:3."), ("5", "The total is x + 5."), ("5", "The result is - 5."), ("5", "The result is 5!."),
    ("3", "The roots are 2 and 3."), ("7", "The answer to part (a) is 4 and part (b) is 7."), ("6", "Let x = 6."),
    ("6", "We need to show that the result is 6."), ("5", "Wrong answer: $5$."), ("5", "Guess: $5$."),
    ("3", r"\boxed{\pi \approx 3}"), ("5", r"\boxed{\neq \approx 5}"), ("3", r"Thus $\pi \approx 3$."),
    ("B", "I think the answer is B, though I'm not sure."), ("B", "I doubt it's B."),
    ("B", "The student claims it's B."),
    ("B", "The answer is B. Just kidding."), (r"\boxed{C}", "The answer is C(5, 2) = 10"),
]


@pytest.mark.parametrize("gold,completion", ATTACKED)
def test_the_attacked_fallback_readings_are_refused(gold, completion):
    assert verify_completion(completion, gold).correct is not True


# the rest of the review's findings, and the peers' gold shapes read since
REVIEWED = [
    ("1,25", r"\boxed{1.25}", False), ("1,25", r"\boxed{1, 25}", True), ("0.5", "So the roots are 0,50.", False),
    ("0.1", r"\boxed{0,100}", False), ("1000.99", "1000,99", True), ("0,111", "0.111", True),
    ("2, 3", r"\boxed{3} \text{ for part (a) and } \boxed{2}", False),
    ("2, 3", r"\boxed{2} \text{ for part (a) and } \boxed{3}", True), ("3, 2", r"\boxed{2} and \boxed{3}", True),
    ("(12, 13)", "Final answer: $12$ and $13$", False), ("(1, 2)", r"\boxed{1, 2}", False),
    ("5", r"It is not \( 5 \)", False), ("5", r"It cannot be \[5\]", False), ("5", r"Perhaps \[ 5 \]", False),
    ("5", r"So we get \[ 5 \]", True), ("42", "I don't know.<eos>The answer is 42.", False),
    ("42", "I don't know.<|end_of_text|>The answer is 42.", False), ("B", "The answer is B. No.", False),
    ("B", "The answer is B. Nah, D.", False), ("B", "\\boxed{B}\nNo, D.", False),
    ("5", "The answer is 5. No other value works.", True),
    (r"\boxed{1} papers and \boxed{2} bins", r"$\boxed{1,2}$", True),
    (r"\boxed{1} no no no no no \boxed{2}", r"$\boxed{1,2}$", False),
    ("C Cecile", "The answer is C", False), ("C Major", r"\boxed{C}", False), ("A Lion", r"\boxed{A}", False),
    ("1", r"\boxed{x \approx " + "+".join(f"\\frac{{{i}}}{{x+{i}}}" for i in range(60)) + "}", False),
]


@pytest.mark.parametrize("gold,completion,correct", REVIEWED)
def test_the_reviewed_readings(gold, completion, correct):
    assert (verify_completion(completion, gold).correct is True) == correct, verify_completion(completion, gold)


# the second attack review (helper, 2026-12-08): each was accepted before
SECOND_REVIEW = [
    ("7", "Final answer: 5. Hmm, could also be 7."), ("7", r"\boxed{3. Possibly 7}"), ("7", "#### 3. Maybe 7"),
    ("8", "Final answer: 5. 6. 7. 8."), ("7", r"So we get \[ 3. Hmm 7 \]"), ("7", "The total is $3. Hmm 7$."),
    ("7", r"\boxed{3 \\ 7}"), ("7", r"\boxed{3 ~ 7}"), ("7", r"\boxed{3 | 7}"), ("7", r"\boxed{3 \vert 7}"),
    ("7", r"\boxed{3 \enspace 7}"), ("7", r"\boxed{3 \cr 7}"), ("7", "\\boxed{3\n7}"),
    ("6", "Final Answer: The total is 5. Wait, no, it's 6."), ("5", "Final Answer: The total is 5. Or maybe 6."),
    ("5", "Final answer: The number of apples is 5. Wait, I made an error; the number is 9."),
    ("5", "I am not sure about the setup; The total is 5."), ("5", "I'm not sure at all. The total is 5."),
    ("5", "I think the total is 5."), ("5", "Assuming x = 3: the total is 5."), ("5", "At step 2 the total is 5."),
    ("5", "There are 5 million people."), ("5", "There are 5 extra apples."), ("5", "Answer key: $5$."),
    ("5", "Sum of errors: $5$."), ("5", "Partial sum: $5$."), ("5", "First answer: $5$."),
    ("15", "Thrice the total is 15."), ("5", "My first attempt is 5."),
    (r"\boxed{2} and \boxed{3}", r"(a) \boxed{2} (b) \boxed{2} (c) \boxed{3}"),
    ("5", r"\boxed{((4!)!)! = 5}"), ("5", r"\boxed{(10!)! = 5}"),
]
# and its wrong refusals: a "No." that answers a question is no retraction
STILL_COMMITTED = [
    ("5", "The answer is 5. Is 5 odd? No."), ("5", "The answer is 5.\n\nIs it negative? No, it's positive."),
    ("x < 1", "$-x > -1$"), ("y_{1}=-2 x^{2}+4 x+3, y_{2}=3 x^{2}+12 x+10",
                            r"\(y_1 = \boxed{-2(x - 1)^2 + 5} \) and \( y_2 = \boxed{3(x + 2)^2 - 2} \)"),
    ("x^2 + 9", r"\boxed{x^2 + 3^2}"),
]


@pytest.mark.parametrize("gold,completion", SECOND_REVIEW)
def test_the_second_review_readings_are_refused(gold, completion):
    import time

    t = time.perf_counter()
    assert verify_completion(completion, gold).correct is not True
    assert time.perf_counter() - t < 3  # the factorial towers spent two 5 s math-verify timeouts


@pytest.mark.parametrize("gold,completion", STILL_COMMITTED)
def test_answers_the_review_fixes_must_still_read(gold, completion):
    assert verify_completion(completion, gold).correct is True, verify_completion(completion, gold)
