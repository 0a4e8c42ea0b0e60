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
import threading
from fractions import Fraction

from cotdistill.records import Verdict

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.M)
_ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*[:：]?\s*(.+)", re.I)
# "Answer:" only at the start of a line; "Final answer:" anywhere
_FINAL_LINE = re.compile(
    r"(?:^[ \t>#*_]*answer|\bfinal\s+answer)[ \t]*(?:\*\*|__)?[ \t]*[:：][ \t]*(?:\*\*|__)?[ \t]*(.+?)[ \t]*$",
    re.I | re.M)
_NUMBER = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?$|^[-+]?\.\d+$")
_NUM_WITH_UNIT = re.compile(r"^[-+]?\$?(\d[\d,]*(?:\.\d+)?)(?:\s*[A-Za-z%°][A-Za-z%°\s/.²³]*)?$")
_CHOICE = re.compile(r"^\(?([A-J])\)?(?:[.:,]|\s|$)")


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    out = []
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:  # an unclosed \boxed{ (truncated trace) is no answer
            out.append((m.start(), text[m.end(): i - 1]))
    return out


def _strip_wrappers(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = s.strip().strip("`*_").strip()  # markdown emphasis, balanced or not
        for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) > len(a) + len(b) - 1 and s.startswith(a) and s.endswith(b):
                s = s[len(a): len(s) - len(b)].strip()
        boxed = _boxed_spans(s)
        if len(boxed) == 1 and boxed[0][0] == 0 and s.endswith("}"):
            s = boxed[0][1]
        s = s.rstrip(".,;:!。").strip()
    return s


def clean_answer(raw: str) -> str | None:
    """Normalise a marked answer: emphasis, $...$, trailing punctuation/units, choice letters."""
    s = _strip_wrappers(raw)
    s = re.sub(r"\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z ]*\}\s*$", "", s)  # \text{ cm}
    s = re.sub(r"\^\s*\{?\\circ\}?$", "", s).strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\ ", " ").strip()
    s = re.sub(r"\\%$|%$", "", s).strip() if _NUMBER.match(re.sub(r"\\?%$", "", s).strip()) else s
    m = _CHOICE.match(s)
    if m and (len(s) <= 3 or s[m.end() - 1:m.end()] in (" ", ".", ":", ",") and s.startswith("(")):
        return m.group(1)
    m = _NUM_WITH_UNIT.match(s)
    if m and not _NUMBER.match(s):
        s = m.group(1)
    s = _strip_wrappers(s)
    return s or None


def _first_clause(s: str) -> str:
    # "the answer is 12. Next we..." -> "12"; a decimal point is not a sentence end
    return re.split(r"(?<![\d])\.(?:\s|$)|\.(?=\s+[A-Z])|(?<=\d)\.\s", s, maxsplit=1)[0]


def extract_answer(text: str) -> str | None:
    """The last explicitly marked final answer in ``text``, cleaned; None when there is none."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    cands: list[tuple[int, str]] = list(_boxed_spans(text))
    cands += [(m.start(), m.group(1)) for m in _HASHES.finditer(text)]
    cands += [(m.start(), m.group(1)) for m in _FINAL_LINE.finditer(text)]
    for m in _ANSWER_IS.finditer(text):
        line = m.group(1).split("\n", 1)[0]
        cands.append((m.start(), _first_clause(line)))
    for _, raw in sorted(cands, key=lambda c: c[0], reverse=True):
        ans = clean_answer(raw)
        if ans:
            return ans
    return None


# ------------------------------------------------------------------ comparison
def _as_number(s: str) -> Fraction | None:
    t = s.replace(",", "").replace("\\$", "").lstrip("$").strip()
    m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", t)
    if m:
        t = f"{m.group(1)}/{m.group(2)}"
    try:
        if re.fullmatch(r"[-+]?\d+/\d+", t):
            a, b = t.split("/")
            return Fraction(int(a), int(b)) if int(b) else None
        if re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None


_SEQ = re.compile(r"^(\(|\[|\\\{)(.*)(\)|\]|\\\})$")


def _as_numbers(s: str) -> tuple[str, list[Fraction]] | None:
    """'(1, 2)' -> ('()', [1, 2]); '\\{3,1\\}' -> ('{}', [1, 3]) (sets sorted); else None."""
    m = _SEQ.match(s.replace(" ", ""))
    if not m:
        return None
    kind = {"(": "()", "[": "[]", "\\{": "{}"}[m.group(1)]
    if kind[1] != m.group(3)[-1]:
        return None
    parts = [_as_number(x) for x in m.group(2).split(",")]
    if len(parts) < 2 or any(x is None for x in parts):
        return None
    return kind, sorted(parts) if kind == "{}" else parts


def normalize_text(s: str) -> str:
    s = _strip_wrappers(s).lower()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"[\s]+", " ", s)
    return s.strip(" .,;:!\"'")


def _texty(s: str) -> bool:
    return "\\" not in s and bool(re.search(r"[A-Za-z]{2,}", s)) and not re.search(r"[\^=+*/]|sqrt|frac|pi\b", s)


def _math_verify(gold: str, pred: str) -> bool | None:
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    t = 5 if main else None  # math-verify's timeouts use signal.alarm: main thread only

    def wrap(x: str) -> str:
        return x if "$" in x or "\\(" in x or "\\[" in x or "\\boxed" in x else f"${x}$"

    g = parse(wrap(gold), parsing_timeout=t)
    if not g:
        return None
    p = parse(wrap(pred), parsing_timeout=t)
    if not p:
        return False
    return bool(verify(g, p, timeout_seconds=t))


def final_gold(gold: str) -> str:
    """The final answer of a gold field that holds a whole solution: GSM8K's ``... #### 72`` or
    MATH's worked solution ending in ``\\boxed{...}``."""
    return (extract_answer(gold) or gold) if "####" in gold or "\\boxed" in gold else gold


def compare(gold: str, pred: str) -> bool | None:
    """Is ``pred`` (an extracted answer) equal to ``gold``? None when the gold cannot be read."""
    gold = final_gold(gold)
    g = clean_answer(gold)
    if g is None:
        return None
    if re.fullmatch(r"[A-J]", g):
        return pred.strip().upper() == g
    gn, pn = _as_number(g), _as_number(pred)
    if gn is not None and pn is not None:
        return abs(gn - pn) <= Fraction(1, 10**6) * max(1, abs(gn))
    gs, ps = _as_numbers(g), _as_numbers(pred)
    if gs is not None and ps is not None and gs[0] == ps[0]:  # numeric tuples/sets: no LaTeX parser needed
        return len(gs[1]) == len(ps[1]) and all(abs(a - b) <= Fraction(1, 10**6) * max(1, abs(a))
                                                for a, b in zip(gs[1], ps[1]))
    if normalize_text(g) == normalize_text(pred):
        return True
    if _texty(g) and _texty(pred):
        return False
    if gn is not None and pn is None and not re.search(r"\\|\d", pred):
        return False  # numeric gold, wordy prediction
    res = _math_verify(g, pred)
    if res is None and _texty(g):
        return False
    return res


def verify_completion(completion: str, gold: str | None, rg_task: str | None = None,
                      rg_entry: dict | None = None) -> Verdict:
    """Verdict for one completion. Pure apart from math-verify's own (signal) timeouts."""
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


_ANY_MARKER = re.compile(r"\\(?:boxed|fbox)\s*\{|^[ \t]*####|\bfinal\s+answer\s*(?:\*\*|__)?\s*[:：]|^[ \t>#*_]*answer\s*(?:\*\*|__)?\s*[:：]|\banswer\s+is\b",
                         re.I | re.M)


def check_format(completion: str, think: bool) -> str | None:
    """Why a completion is malformed for its template, or None when it is well-formed.

    ``think``: the template asks for exactly one ``<think>...</think>`` block before the answer.
    Every template asks for exactly one final-answer section (a line carrying an answer marker)
    after the reasoning."""
    if think:
        opens, closes = completion.count("<think>"), completion.count("</think>")
        if opens != 1 or closes != 1 or completion.index("<think>") > completion.index("</think>"):
            return "unbalanced <think> tags"
    tail = completion.rsplit("</think>", 1)[1] if "</think>" in completion else completion
    sections = {tail.count("\n", 0, m.start()) for m in _ANY_MARKER.finditer(tail)}
    if not sections:
        return "no final answer section"
    if len(sections) > 1:
        return "several final answer sections"
    return None


def answer_key(extracted: str) -> str:
    """Grouping key for majority votes: numbers by value, text normalised."""
    n = _as_number(extracted)
    return f"num:{n}" if n is not None else f"txt:{normalize_text(extracted)}"
