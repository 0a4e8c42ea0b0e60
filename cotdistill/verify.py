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
    # an unclosed \boxed{ (truncated trace) is no answer
    return [(a, b) for a, b, _ in _boxed_spans_with_end(text)]


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
    whole = re.fullmatch(r"\\(?:text|textbf|mbox|mathrm|textrm)\{([^{}]*)\}", s)
    if whole:  # \text{(C)}, \text{yes}: the text is the answer
        s = _strip_wrappers(whole.group(1))
    else:
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


# what may stand between boxes that together are one answer ("\\boxed{2} and \\boxed{3}")
_BOX_JOIN = re.compile(
    r"^(?:[\s$,;.]|\\\]|\\\[|\\\(|\\\)|\\quad|\\qquad|\b[a-zA-Z]\s*=|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b)*$"
)
# "I think the answer is 12 but let me check": a hedge, not a final answer
_HEDGE_BEFORE = re.compile(
    r"\b(?:think|maybe|perhaps|might|probably|guess|suppose|assume|if|whether|unless|could)\b[^.!?\n]*$", re.I
)
_HEDGE_AFTER = re.compile(r"^[^\n]*?(?:\?|\b(?:but|wait|let me|let's|check|verify|however|unless|or is it)\b)", re.I)
_PROSE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")


def _boxed_answer(text: str) -> tuple[int, str] | None:
    """The last box, joined with the boxes right before it when only separators stand between them
    (all roots boxed one by one): "2, 3"."""
    spans = _boxed_spans_with_end(text)
    if not spans:
        return None
    group = [spans[-1]]
    for prev in reversed(spans[:-1]):
        if _BOX_JOIN.match(text[prev[2]:group[0][0]]):
            group.insert(0, prev)
        else:
            break
    return group[0][0], ", ".join(g[1] for g in group)


def _boxed_spans_with_end(text: str) -> list[tuple[int, str, int]]:
    out = []
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.start(), text[m.end(): i - 1], i))
    return out


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
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    cands: list[tuple[int, str]] = []
    boxed = _boxed_answer(text)
    if boxed:
        cands.append(boxed)
    for m in _HASHES.finditer(text):
        if _heading(m.group(1), text[m.end():]):
            continue
        cands.append((m.start(), m.group(1)))
    cands += [(m.start(), m.group(1)) for m in _FINAL_LINE.finditer(text)]
    for m in _ANSWER_IS.finditer(text):
        line = m.group(1).split("\n", 1)[0]
        clause = _first_clause(line)
        line_start = text.rfind("\n", 0, m.start()) + 1
        after = line[len(clause):].lstrip()
        if _HEDGE_BEFORE.search(text[line_start:m.start()]) or _HEDGE_AFTER.match(clause) or after.startswith("?"):
            continue
        cands.append((m.start(), clause))
    for _, raw in sorted(cands, key=lambda c: c[0], reverse=True):
        ans = clean_answer(raw)
        if ans:
            return ans
    return _bare(text) if not cands else None


# ------------------------------------------------------------------ comparison
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain number, fraction or decimal; commas only as thousands separators
    ("1,234"), so "1,2" is not 12."""
    t = s.replace("\\$", "").lstrip("$").strip().replace("{,}", ",")
    if "," in t:
        if not _THOUSANDS.match(t):
            return None
        t = t.replace(",", "")
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


def _same_number(gold: Fraction, pred: Fraction, pred_text: str) -> bool:
    """Exact equality; a decimal written with 6 or more places may round a gold that has no finite
    decimal (1/3 ~ 0.333333), nothing looser (1000000 != 1000001, 1e-7 != 9e-7)."""
    if gold == pred:
        return True
    places = re.search(r"\.(\d+)$", pred_text.strip())
    if places and len(places.group(1)) >= 6 and "e" not in pred_text.lower():
        step = Fraction(1, 10 ** len(places.group(1)))
        return abs(gold - pred) <= step / 2
    return False


_SEQ = re.compile(r"^(\(|\[|\\\{)(.*)(\)|\]|\\\})$")


def _as_numbers(s: str) -> tuple[str, list[Fraction]] | None:
    """'(1, 2)' -> ('()', [1, 2]); '\\{3,1\\}' -> ('{}', [1, 3]) (sets sorted); else None."""
    m = _SEQ.match(s.replace(" ", ""))
    if not m:
        return None
    kind = {"(": "()", "[": "[]", "\\{": "{}"}[m.group(1)]
    if kind[1] != m.group(3)[-1]:
        return None
    parts = [_as_number(x) for x in m.group(2).split(",")]  # thousands commas inside tuples are not supported
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


def _parts(s: str) -> list[str] | None:
    """Top-level comma / "and" separated parts of an answer list ("2, 3", "2 \\text{ and } 3");
    None for a single answer."""
    t = re.sub(r"\\text\{\s*(and|or)\s*\}", ",", s)
    t = re.sub(r"\s+(?:and|or)\s+", ",", t)
    parts, depth, cur = [], 0, ""
    for ch in t:
        depth += ch in "({[" and 1 or ch in ")}]" and -1 or 0
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    parts = [p for p in parts if p]
    return parts if len(parts) > 1 else None


def _compare_one(g: str, pred: str) -> bool | None:
    if re.fullmatch(r"[A-J]", g):
        return pred.strip().upper() == g
    gn, pn = _as_number(g), _as_number(pred)
    if gn is not None and pn is not None:
        return _same_number(gn, pn, pred)
    gs, ps = _as_numbers(g), _as_numbers(pred)
    if gs is not None and ps is not None and gs[0] == ps[0]:  # numeric tuples/sets: no LaTeX parser needed
        return len(gs[1]) == len(ps[1]) and all(a == b for a, b in zip(gs[1], ps[1]))
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


def _unbracket(s: str) -> str:
    m = re.fullmatch(r"\\\{(.*)\\\}|\{(.*)\}", s.strip())
    return (m.group(1) if m.group(1) is not None else m.group(2)) if m else s


def compare(gold: str, pred: str) -> bool | None:
    """Is ``pred`` (an extracted answer) equal to ``gold``? None when the gold cannot be read.
    A list of answers (several boxes, "2 and 3", a set) matches in any order."""
    gold = final_gold(gold)
    g = clean_answer(gold)
    if g is None:
        return None
    one = _compare_one(g, pred)
    if one:
        return True
    gp, pp = _parts(_unbracket(g)), _parts(_unbracket(pred))
    if (
        gp
        and pp
        and len(gp) == len(pp)
        and not (g.strip().startswith(("(", "[")) and pred.strip().startswith(("(", "[")))
    ):
        left = list(pp)
        for a in gp:
            hit = next(
                (i for i, b in enumerate(left) if _compare_one(clean_answer(a) or a, clean_answer(b) or b)), None
            )
            if hit is None:
                return False
            left.pop(hit)
        return True
    return one


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


_ANY_MARKER = re.compile(
    r"\\(?:boxed|fbox)\s*\{|^[ \t]*####|\bfinal\s+answer\s*(?:\*\*|__)?\s*[:：]|^[ "
        r"\t>#*_]*answer\s*(?:\*\*|__)?\s*[:：]|\banswer\s+is\b",
    re.I | re.M,
)


def check_format(completion: str, think: bool) -> str | None:
    """Why a completion is malformed for its template, or None when it is well-formed.

    ``think``: the template asks for one ``<think>...</think>`` block before the answer. A completion
    holding only the ``</think>`` is fine too: R1-style chat templates pre-fill ``<think>\\n`` in the
    prompt. Every template asks for one final answer after the reasoning: several marked answers
    are malformed only when they disagree ("the answer is 5. **Final Answer** \\boxed{5}" is one)."""
    if think:
        opens, closes = completion.count("<think>"), completion.count("</think>")
        if closes != 1 or opens > 1 or (opens == 1 and completion.index("<think>") > completion.index("</think>")):
            return "unbalanced <think> tags"
    tail = completion.rsplit("</think>", 1)[1] if "</think>" in completion else completion
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
    n = _as_number(extracted)
    return f"num:{n}" if n is not None else f"txt:{normalize_text(extracted)}"
