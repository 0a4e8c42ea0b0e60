"""Pure verification: completion text + gold answer in, ``Verdict`` out. No I/O.

    verify_completion("... so the answer is **73**.", "73")   -> Verdict(extracted="73", correct=True, ...)

Only an explicitly marked final answer counts, and the last one wins: ``\\boxed{...}`` (nested
braces), ``#### ...``, "the answer is ...", "Final answer: ...", multiple-choice letters in those
places. An unmarked number in running text is never an answer, so a trace cut off mid-reasoning
does not pass because its last number happens to match. When the completion has a ``</think>``,
only the text after the last one is searched.

Comparison: numbers fast-path; multiple-choice letters; plain text after normalisation;
everything else through math-verify (gold first; bare LaTeX is wrapped in ``$...$`` because
math-verify misses some equalities without delimiters). reasoning-gym problems use the task's
own scorer. "Cannot tell" is ``correct=None``.
"""

from __future__ import annotations

import re

from cotdistill.answer_values import (
    RETRACTION,
    answer_body,
    as_number,
    boxed_spans,
    clean_answer,
    normalize_text,
    same_value,
    squeeze,
    uncommitted,
)
from cotdistill.choice import RULED_OUT, chosen_letter
from cotdistill.records import Verdict

_HASHES = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.M)
_ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*[:：]?\s*(.+)", re.I)
# "Answer:" only at the start of a line; "Final answer:" anywhere
_FINAL_LINE = re.compile(
    r"(?:^[ \t>#*_]*answer|\bfinal\s+answer)[ \t]*(?:\*\*|__)?[ \t]*[:：][ \t]*(?:\*\*|__)?[ \t]*(.+?)[ \t]*$",
    re.I | re.M)

# what may stand between boxes that together are one answer ("\\boxed{2} and \\boxed{3}", "(a) ... (b) ...")
_BOX_JOIN = re.compile(
    r"^(?:[\s$,;.:*]|\\\]|\\\[|\\\(|\\\)|\\quad|\\qquad|\b[a-zA-Z]\s*=|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b|"
    r"\(?\b(?:[a-h]|i{1,3}|iv|vi{0,3}|ix|x)\)|\b(?:part|Part)\s*\(?[a-h1-9]\)?|\\item)*$"
)
# "I think the answer is 12 but let me check": a hedge, not a final answer
_HEDGE_BEFORE = re.compile(
    r"\b(?:think|maybe|perhaps|might|probably|guess|suppose|assume|if|whether|unless|could)\b[^.!?\n]*$", re.I
)
_HEDGE_AFTER = re.compile(r"^[^\n]*?(?:\?|\b(?:but|wait|let me|let's|check|verify|however|unless|or is it)\b)", re.I)
_PROSE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")


def _boxed_answer(text: str) -> tuple[int, str, int] | None:
    """The last box, joined with the boxes right before it when only separators stand between them
    (all roots boxed one by one): "2, 3"."""
    spans = boxed_spans(text)
    if not spans:
        return None
    group = [spans[-1]]
    for prev in reversed(spans[:-1]):
        if _BOX_JOIN.match(text[prev[2]:group[0][0]]):
            group.insert(0, prev)
        else:
            break
    contents = list(dict.fromkeys(g[1].strip() for g in group))  # the same answer boxed twice is one answer
    return group[0][0], ", ".join(contents), group[-1][2]


def _first_clause(s: str) -> str:
    # "the answer is 12. Next we..." -> "12"; a decimal point is not a sentence end
    return re.split(r"(?<![\d])\.(?:\s|$)|\.(?=\s+[A-Z])|(?<=\d)\.\s", s, maxsplit=1)[0]


def _closing_display(text: str) -> str | None:
    """The display math that ends the completion, when nothing follows it: "So we get \\[ 14 \\]"
    -> "14"; a closing equation gives its right-hand side ("\\[ 3 \\times 4 = 12 \\]" -> "12")."""
    t = text.rstrip(" \t\n.!。")
    for opener, closer in (("\\[", "\\]"), ("$$", "$$"), ("\\(", "\\)")):  # rfind: linear, where a lazy regex
        if t.endswith(closer):                                         # over "\\[ \\[ \\[ ..." was quadratic
            i = t.rfind(opener, 0, len(t) - len(closer))
            if i < 0:
                return None
            inner = t[i + len(opener): len(t) - len(closer)].strip()
            rhs = re.split(r"(?<![<>!\\])=", inner)[-1].strip()
            return rhs or None
    return None


def _bare(text: str) -> str | None:
    """A completion that is one short expression and nothing else ("72", "$\\frac{1}{2}$", "(B)") is
    its own answer; prose (a cut-off sentence) never is."""
    t = text.strip()
    if not t or "\n" in t or len(t) > 60:
        return None
    inner = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}", "", t)
    if _PROSE.search(inner) and not re.fullmatch(r"\(?[A-J]\)?", t):
        return None
    return clean_answer(t)


def _heading(content: str, after: str) -> bool:
    """``#### Verification`` with more text below is a Markdown heading, not GSM8K's ``#### 72``."""
    return bool(after.strip()) and bool(re.fullmatch(r"[A-Z][A-Za-z ]*", content.strip()))


def extract_answer(text: str) -> str | None:
    """The last explicitly marked final answer in ``text``, cleaned; None when there is none."""
    text = squeeze(answer_body(text))
    cands: list[tuple[int, str, int]] = []  # (start, raw answer, end)
    boxed = _boxed_answer(text)
    if boxed:
        cands.append(boxed)
    for m in _HASHES.finditer(text):
        if _heading(m.group(1), text[m.end():]):
            continue
        cands.append((m.start(), m.group(1), m.end()))
    cands += [(m.start(), m.group(1), m.end()) for m in _FINAL_LINE.finditer(text)]
    for m in _ANSWER_IS.finditer(text):
        line = m.group(1).split("\n", 1)[0]
        clause = _first_clause(line)
        line_start = text.rfind("\n", 0, m.start()) + 1
        after = line[len(clause):].lstrip()
        if _HEDGE_BEFORE.search(text[max(line_start, m.start() - 200):m.start()]) or _HEDGE_AFTER.match(clause) \
                or after.startswith("?"):
            continue
        cands.append((m.start(), clause, m.start(1) + len(clause)))
    for start, raw, end in sorted(cands, key=lambda c: c[0], reverse=True):
        ans = clean_answer(raw)
        if ans:  # taken back after it, hedged, negated or one of alternatives: no committed answer
            asked = "?" in raw  # "Final answer: 3? No."
            return None if asked or RETRACTION.search(text, end) or uncommitted(text, start, end) else ans
    if cands:
        return None
    return _bare(text) or (clean_answer(d) if (d := _closing_display(text)) else None)


def final_gold(gold: str) -> str:
    """The final answer of a gold field that holds a whole solution: GSM8K's ``... #### 72`` or
    MATH's worked solution ending in ``\\boxed{...}``."""
    return (extract_answer(gold) or gold) if "####" in gold or "\\boxed" in gold else gold


def compare(gold: str, pred: str) -> bool | None:
    """Is ``pred`` (an extracted answer) equal to ``gold``? None when the gold cannot be read."""
    g = clean_answer(final_gold(gold))
    return None if g is None else same_value(g, pred)


def _choice(completion: str, choices: list[str] | None) -> str | None:
    """The option letter a completion commits to; with the options known, an answer that names one
    option's text ("The answer is Paris") counts as its letter."""
    letter = chosen_letter(answer_body(completion))
    if letter == "":
        return None
    said = extract_answer(completion) if letter is None else None
    if said and re.fullmatch(r"[A-J]", said):  # "#### C", "$B$": a marked answer that is a letter
        return None if re.search(RULED_OUT.format(l=said), answer_body(completion)) else said
    if letter is None and choices:
        hits = [i for i, c in enumerate(choices) if said and normalize_text(c) == normalize_text(said)]
        letter = "ABCDEFGHIJ"[hits[0]] if len(hits) == 1 else None
    return letter


def verify_completion(completion: str, gold: str | None, rg_task: str | None = None,
                      rg_entry: dict | None = None, choices: list[str] | None = None, tests=None) -> Verdict:
    """Verdict for one completion. Pure apart from math-verify's own (signal) timeouts. A gold that is
    one option letter (A-J) is multiple choice: the letter the completion commits to is compared. With
    ``tests`` (a code problem) the completion's final program runs against them in the sandbox."""
    if tests is not None:
        from cotdistill.code_verify import verify_code

        return verify_code(completion, tests)
    gold_letter = re.fullmatch(r"\s*\(?([A-J])\)?\s*", str(gold or ""))
    if gold_letter and rg_task is None:
        letter = _choice(completion, choices)
        ok = letter == gold_letter.group(1)
        return Verdict(extracted=letter, correct=ok, reason="no_answer" if letter is None else
                       "match" if ok else "mismatch")
    extracted = extract_answer(completion)
    if rg_task is not None and rg_entry is not None:
        import reasoning_gym

        if extracted is None:
            return Verdict(extracted=None, correct=False, reason="no_answer")
        score = reasoning_gym.get_score_answer_fn(rg_task)(answer=extracted, entry=rg_entry)
        return Verdict(extracted=extracted, correct=score >= 1.0, reason="scorer")
    if gold is None or not str(gold).strip():
        return Verdict(extracted=extracted, correct=None, reason="gold_unparseable")
    if extracted is None:
        return Verdict(extracted=None, correct=False, reason="no_answer")
    ok = compare(str(gold), extracted)
    if ok is None:
        return Verdict(extracted=extracted, correct=None, reason="gold_unparseable")
    return Verdict(extracted=extracted, correct=ok, reason="match" if ok else "mismatch")


_ANY_MARKER = re.compile(
    r"\\(?:boxed|fbox)\s*\{|^[ \t]*####|\bfinal\s+answer\s*(?:\*\*|__)?\s*[:：]|^[ "
        r"\t>#*_]*answer\s*(?:\*\*|__)?\s*[:：]|\banswer\s+is\b",
    re.I | re.M,
)


def check_format(completion: str, think: bool, answer_format: str = "boxed") -> str | None:
    """Why a completion is malformed for its template, or None when it is well-formed.

    ``think``: the template asks for one ``<think>...</think>`` block before the answer. A completion
    holding only the ``</think>`` is fine too: R1-style chat templates pre-fill ``<think>\\n`` in the
    prompt. Every template asks for one final answer after the reasoning: several marked answers
    are malformed only when they disagree ("the answer is 5. **Final Answer** \\boxed{5}" is one)."""
    if think:
        opens, closes = completion.count("<think>"), completion.count("</think>")
        if closes != 1 or opens > 1 or (opens == 1 and completion.index("<think>") > completion.index("</think>")):
            return "unbalanced <think> tags"
    if answer_format == "code":
        from cotdistill.code_verify import extract_program

        return None if extract_program(completion) else "no final program (```python block)"
    tail = squeeze(answer_body(completion))  # after </think> (or OpenThoughts' <|end_of_thought|>)
    lines = tail.split("\n")
    marked = sorted({tail.count("\n", 0, m.start()) for m in _ANY_MARKER.finditer(tail)})
    # a marker line counts when it carries an answer ("I think the answer is 12 but..." does not)
    marked = [i for i in marked
              if not ((h := _HASHES.match(lines[i])) and _heading(h.group(1), "\n".join(lines[i + 1:])))]
    answers = {answer_key(a) for a in (extract_answer(lines[i]) for i in marked) if a}
    if not answers:
        return "no final answer section"
    if len(answers) > 1:
        return "several final answer sections"
    return None


def answer_key(extracted: str) -> str:
    """Grouping key for majority votes: numbers by value, text normalised."""
    n = as_number(extracted)
    return f"num:{n}" if n is not None else f"txt:{normalize_text(extracted)}"
