"""Is one written answer equal to another? Pure value comparison, no extraction, no I/O.

    same_value("12,\\!500", "12500") -> True      same_value("y >= 3", "y > 3") -> False

Numbers exactly (thousands separators: ``1,234``, ``12{,}500``, ``12,\\!500``, ``2 500``); numeric
tuples and sets; intervals and one-variable inequalities as sets of reals (``x < 2 or x > 3`` equals
``(-\\infty, 2) \\cup (3, \\infty)``); plain text after normalisation; everything else through
math-verify. ``None`` is "cannot tell" (the gold cannot be read).
"""

from __future__ import annotations

import re
import threading

from cotdistill.answer_numbers import (  # noqa: F401 (MAX_* re-exported: the numbers' limits, one place)
    _NUM_SPACING,
    MAX_EXPONENT,
    MAX_NUMBER_CHARS,
    _as_numbers,
    _same_number,
    _same_set,
    as_number,
    real_set,
)

# a chat template's turn markers: what follows one is not the completion (a model that ran past its stop)
_CHAT_TOKEN = re.compile(
    r"<\|im_(?:start|end)\|>|<\|eot_id\|>|<\|start_header_id\|>|<\|endoftext\|>|<end_of_turn>|<start_of_turn>|"
    r"<｜end▁of▁sentence｜>|<｜(?:User|Assistant)｜>|<\|(?:user|assistant|end)\|>|</s>|<eos>|<\|end_of_text\|>|<\|eom_id\|>")
# display math that closes the completion: "So we get \\[ 14 \\]"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?$|^[-+]?\.\d+$")
# units a number may carry and still be that number: a list, never an arbitrary word ("3 thousand", "3 is wrong",
# "2.5 dozen", "3x" are not 3 or 2.5)
_UNIT = (r"(?:[kcmµun]?m|km|mm|cm|[km]?g|mg|lbs?|oz|s|ms|secs?|seconds?|mins?|minutes?|h|hrs?|hours?|days?|weeks?|"
         r"months?|years?|yrs?|ft|feet|foot|in|inch(?:es)?|yds?|yards?|mi|miles?|mph|kph|[km]?l|liters?|litres?|"
         r"milliliters?|gallons?|gal|cups?|quarts?|pints?|degrees?|°[CF]?|%|dollars?|cents?|euros?|pounds?|"
         r"USD|EUR|GBP|JPY|CNY|INR|yen|yuan|rupees?|percent|per cent|pct|\\?\$|€|£|¥|₹|"
         r"(?:centi|milli|kilo)?(?:meters?|metres?|grams?)|ounces?|tons?|tonnes?|[km]?W|watts?|V|volts?|amps?|J|"
         r"joules?|N|newtons?|Pa|Hz|[KMGT]B|bytes?|units?|square units|sq\.? ?(?:units|ft|m|cm)|"
         r"(?:square|cubic) (?:units|feet|meters|metres|centimeters|inches))")
_NUM_WITH_UNIT = re.compile(
    r"^([-+]?)(?:\\?\$|€|£|¥|₹)?(\d[\d,]*(?:\.\d+)?)"
    r"(?:\s*(?:" + _UNIT + r"(?:\s*/\s*" + _UNIT + r")?(?:\^?[23²³])?\.?|\\%))?$")
_CHOICE = re.compile(r"^\(?([A-J])\)?(?:[.:,]|\s|$)")
_MORE_LETTERS = re.compile(r"\([A-J]\)|(?:^|,|;|\||\bor\b|\band\b|&|/)\s*\(?[A-J]\)?(?![A-Za-z0-9])|"
                           r"(?<![A-Za-z])[A-J](?=\s*(?:$|[.,;:)|/&\n]))")


# the text after an answer takes it back: "The answer is 3. Wait, no, that is wrong: it is 2."
RETRACTION = re.compile(
    r"\b(?:wait|oops|scratch\s+that|(?<!\?\s)(?<!\?\s\s)no,?\s+(?:it(?:'s|\s+is)|actually)|actually,?\s+(?:no|it(?:'s|\s+is))|"
    r"that(?:'s|\s+is|\s+was)\s+(?:wrong|incorrect|not\s+(?:right|correct))|I\s+(?:was|am)\s+wrong|"
    r"(?:made|make)\s+(?:a|an)\s+(?:mistake|error)|correction\s*:|nope|not\s+it\b|cannot\s+be\s+right|"
    r"but\s+really|just\s+kidding|\bnah\b|(?<![?\w])(?<!\?\s)no\s*[.!,;]|^\s*no\s*$)", re.I | re.M)


# an answer the text around it does not commit to: "Either \\boxed{3} or 4", "It is not \\boxed{3}", "3? No."
_UNSURE_BEFORE = re.compile(r"(?:\bnot|n't|\bcannot|\bnever|\beither|\bpossibly|\bmaybe|\bperhaps|\bprobably|\bif|"
                            r"\bwhether|"
                            r"\bunless|\bsuppose|\bassume|\bguess|\bis\s+the\s+answer)\b[^,;:.!?\n]*$", re.I)
_UNSURE_AFTER = re.compile(r"^[^\n]*?\b(?:not\s+(?:sure|confident|certain)|unsure)\b|"
                           r"^[\s.,;:!)*$}\]|]*(?:\?|\(?\s*or\b|\bmaybe\b|\bperhaps\b|\bpossibly\b|\bbut\b|"
                           r"(?:is|was)\s+(?:the\s+)?(?:not|incorrect|wrong|false)\b)", re.I)


def uncommitted(text: str, start: int, end: int) -> bool:
    """Whether the answer at text[start:end] is hedged, negated, asked about or one of alternatives, judged by its
    own clause before it and the next 80 characters after it (bounded: 200 characters back at most)."""
    before = text[max(0, start - 200):start]
    clause = re.split(r"[,;:.!?\n]", before)[-1]
    return bool(_UNSURE_BEFORE.search(clause) or _UNSURE_AFTER.match(text[end:end + 80]))


MAX_BOX_DEPTH = 16  # boxes nested deeper are not answers (and would cost quadratic copies of their contents)
MAX_ANSWER_CHARS = 2000  # an answer longer than this equals only the same text
_WHITESPACE_RUN = re.compile(r"\s{16,}")


def squeeze(text: str) -> str:
    """Runs of whitespace cut to 15 characters (line breaks kept first): no answer is in them, and regexes that
    backtrack over a run (``\\s*...\\s*``) stay linear."""
    return _WHITESPACE_RUN.sub(lambda m: m.group(0)[:15], text)


def boxed_spans(text: str) -> list[tuple[int, str, int]]:
    """(start, content, end) of every closed ``\\boxed{...}`` (nested braces), in order of start; an unclosed one
    (a truncated trace) is no answer. One pass over the text."""
    opens = {m.end() - 1: m.start() for m in _BOXED.finditer(text)}  # the box's "{" -> where "\\boxed" starts
    if not opens:
        return []
    out, stack, boxes = [], [], 0
    for i, ch in enumerate(text):
        if ch == "{":
            box = i in opens
            stack.append((i, box))
            boxes += box
        elif ch == "}" and stack:
            j, box = stack.pop()
            if box:
                if boxes <= MAX_BOX_DEPTH:
                    out.append((opens[j], text[j + 1:i], i + 1))
                boxes -= 1
    return sorted(out)


def answer_body(text: str) -> str:
    """The part of a completion that holds its final answer: after the last ``</think>`` (or
    OpenThoughts' ``<|end_of_thought|>``), before any chat-template turn marker that follows."""
    text = _CHAT_TOKEN.split(text, 1)[0]
    for end in ("</think>", "<|end_of_thought|>"):
        if end in text:
            text = text.rsplit(end, 1)[1]
    return text.replace("<|begin_of_solution|>", "").replace("<|end_of_solution|>", "")


def strip_wrappers(s: str) -> str:
    prev, rounds = None, 0
    while prev != s and rounds < MAX_BOX_DEPTH:  # a bounded number of layers: "$\\boxed{**3**}$." needs three
        rounds += 1
        prev = s
        s = s.strip()
        s = s[2:-2] if len(s) > 3 and s.startswith('\\"') and s.endswith('\\"') else s  # JSON-escaped quotes
        s = s.strip("`*_\"'“”").strip()  # markdown emphasis and quotes, balanced or not
        s = re.sub(r"^\$([^$]+)\$(\s*(?:,|and|or)\s*)\$([^$]+)\$$", r"$\1\2\3$", s)  # "$12$ and $13$": one answer
        for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) > len(a) + len(b) - 1 and s.startswith(a) and s.endswith(b):
                s = s[len(a): len(s) - len(b)].strip()
        boxed = boxed_spans(s)
        if len(boxed) == 1 and boxed[0][0] == 0 and s.endswith("}"):
            s = boxed[0][1]
        s = s.rstrip(".,;:。")
        s = (s.rstrip("!") if not re.search(r"[\d)}\]]!+$", s) else s).strip()  # "3!" is six, not three
    return s


def clean_answer(raw: str) -> str | None:
    """Normalise a marked answer: emphasis, $...$, trailing punctuation/units, choice letters."""
    s = strip_wrappers(re.sub(r"(?<!\\)\\\\(?=[a-zA-Z])", r"\\", raw))  # "\\\\le": a JSON-escaped "\\le"
    whole = re.fullmatch(r"\\(?:text|textbf|mbox|mathrm|textrm)\{([^{}]*)\}", s)
    if whole:  # \text{(C)}, \text{yes}: the text is the answer
        s = strip_wrappers(whole.group(1))
    else:
        # \text{ cm}, not \text{ thousand}
        s = re.sub(r"\s*\\(?:text|textbf|textrm|mbox|mathrm)\{\s*(" + _UNIT + r")\s*\}\s*$", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?$", "", s).strip()
    s = _NUM_SPACING.sub(lambda m: m.group(1), s)
    s = re.sub(r"(?<!\\)\\[!,;:](?![A-Za-z])", "", s)
    s = re.sub(r"(?<!\\)\\ ", " ", s).strip()  # "\\ " is a space; "\\\\ " (a matrix row break) is not
    s = re.sub(r"\s*(?:\\%|%|percent|per\s+cent|pct)$", "", s).strip() if _NUMBER.match(
        re.sub(r"\s*(?:\\?%|percent|per\s+cent|pct)$", "", s).strip()) else s
    m = _CHOICE.match(s)
    if m and (len(s) <= 3 or s[m.end() - 1:m.end()] in (" ", ".", ":", ",") and s.startswith("(")) \
            and not _MORE_LETTERS.search(s, m.end()):  # "(B) or (C)", "B, C": several letters are no choice
        return m.group(1)
    m = _NUM_WITH_UNIT.match(s)
    if m and not _NUMBER.match(s):
        s = m.group(1) + m.group(2)  # the sign stays: "-3 meters" is -3
    s = strip_wrappers(s)
    return s or None


# ------------------------------------------------------------------ text, LaTeX, lists
def normalize_text(s: str) -> str:
    s = strip_wrappers(s).lower()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"[\s]+", " ", s)
    return s.strip(" .,;:!\"'")


def _texty(s: str) -> bool:
    return "\\" not in s and bool(re.search(r"[A-Za-z]{2,}", s)) and not re.search(r"[\^=+*/<>]|sqrt|frac|pi\b", s)


def _matrix_style(s: str) -> str:
    """Every matrix bracket style written one way: math-verify reads ``pmatrix``; ``bmatrix``,
    ``vmatrix``-free variants and ``\\left[\\begin{array}{cc}...\\end{array}\\right]`` are the same matrix."""
    s = re.sub(r"\\left\s*[\[(]\s*\\begin\{array\}\{[^}]*\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}\s*\\right\s*[\])]", r"\\end{pmatrix}", s)
    return re.sub(r"\\(begin|end)\{[bB]matrix\}", r"\\\1{pmatrix}", s)


def _math_verify(gold: str, pred: str) -> bool | None:
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    t = 5 if main else None  # math-verify's timeouts use signal.alarm: main thread only

    def wrap(x: str) -> str:
        x = _matrix_style(x)
        return x if "$" in x or "\\(" in x or "\\[" in x or "\\boxed" in x else f"${x}$"

    g = parse(wrap(gold), parsing_timeout=t)
    if not g:
        return None
    p = parse(wrap(pred), parsing_timeout=t)
    if not p:
        return False
    return bool(verify(g, p, timeout_seconds=t))


def _parts(s: str) -> list[str] | None:
    """Top-level comma / "and" separated parts of an answer list ("2, 3", "2 \\text{ and } 3");
    None for a single answer."""
    t = re.sub(r"\\text\{\s*(and|or)\s*\}", ",", re.sub(r"\\q?quad\b", " ", s))
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


_HUGE_NUMBER = re.compile(  # digits as_number refused (too long, exponent past MAX_EXPONENT)
    r"[-+]?[\d.,]+(?:[eE][-+]?\d+)?|(?:[-+]?[\d.]+\s*(?:\\times|\\cdot)\s*)?10\s*\^\s*\{?[-+]?\d+\}?")
_EXPLOSIVE = re.compile(r"\d{3,}\s*!|[)}]\s*!|!\s*!|\\binom\s*\{\s*(?:\d{4,}|\d+\s*\^)|\^\s*\{[^{}]*\^|\^\s*\w+\s*\^|"
                        r"\^\s*\{?\s*\d{4,}")
_TOP_EQ = re.compile(r"(?<![<>!=\\])=(?!=)")
_VARIABLE = re.compile(  # x, x_1, \theta, f(x), (x, y)
    r"[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+|[a-zA-Z]\([a-zA-Z]\)|\(\s*[a-zA-Z](?:\s*,\s*[a-zA-Z])+\s*\)")
_DISJUNCTION = re.compile(r"\\lor\b|\\vee\b|\bor\b|\\text\{\s*or\s*\}")


_TOKEN = re.compile(r"\\[a-zA-Z]+|[\^_{]")


def _complexity(s: str) -> int:
    """LaTeX commands, scripts and groups: what sympy's parse and simplify cost grows with."""
    return len(_TOKEN.findall(s))


def settle_equation(g: str, pred: str) -> str | None:
    """An answer written as an equation, read against a gold that is not one: ``x = 3`` is 3 (the left side is the
    variable), ``3 \\times 4 = 12`` is 12 (both sides agree); ``1 = 3`` is no answer (None): the sides disagree."""
    for rel in ("\\approx", "\\in"):  # "x \\approx 11" is 11, "x \\in [-2, 7]" is [-2, 7]: the variable's value
        m = re.fullmatch(r"\s*([a-zA-Z](?:_\{?\w+\}?)?)\s*" + re.escape(rel) + r"(?![a-zA-Z])\s*(.+)", pred, re.S)
        if m and rel not in g and not _suspicious(m.group(2)) - _suspicious(g):  # a letter, never \pi or \neq
            return settle_equation(g, m.group(2))
    if _TOP_EQ.search(g) or not _TOP_EQ.search(pred):
        return pred
    sides = [x.strip() for x in _TOP_EQ.split(pred)]
    if sides and _VARIABLE.fullmatch(sides[0]):
        sides = sides[1:]
    if not sides or not all(sides) or len(sides) > 4:  # a chain of five equal sides is no answer worth parsing
        return None
    for a, b in zip(sides, sides[1:]):
        na, nb = as_number(a), as_number(b)
        if na is None and _complexity(a) + _complexity(b) > 3 * _complexity(g) + 48:
            return None  # a chain too involved to check against a gold this simple
        same = na == nb if na is not None and nb is not None else _math_verify(b, a)
        if not same:
            return None
    return sides[-1]


_SUSPICIOUS = re.compile(
    r"\\(?:not|neg|n?geq?|n?leq?|geqslant|leqslant|approx|sim|simeq|cong|equiv|propto|[Rr]ightarrow|[Ll]eftarrow|to|"
    r"implies|iff|in|ni|notin|mid|nmid|land|lor|wedge|vee|cap|cup|setminus|subset|subseteq|supset|hspace|hskip|"
    r"phantom|vphantom|hphantom|ldots|dots|cdots|boxed|fbox|pm|mp|text|textbf|mbox|mathrm|vert|Vert|enspace|"
    r"nobreakspace|cr|ldotp|newline|quad|qquad)(?![a-zA-Z])|\\\\(?![a-zA-Z])|\\\||"
    r"[<>≤≥≈≠∈∉∧∨¬!~|\n]|\\[()\[\]]|(?<!\\)\$|[\u200b-\u200f\u2060\ufeff\u0300-\u036f\u20d0-\u20ff]")
_SAME_TOKEN = {"\\ge": "≥", "\\geq": "≥", "\\geqslant": "≥", "\\le": "≤", "\\leq": "≤", "\\leqslant": "≤",
               "\\textbf": "\\text", "\\mbox": "\\text", "\\mathrm": "\\text", "\\lor": "\\vee", "\\land": "\\wedge",
               "\\ldots": "\\dots", "\\cdots": "\\dots", "\\Rightarrow": "\\implies"}


def _suspicious(s: str) -> set[str]:
    """Relations, negations, spacing, delimiters and invisible marks in an answer, written one way each: a
    prediction with one its gold lacks is not the gold's value, whatever math-verify reads of it."""
    return {_SAME_TOKEN.get(m.group(0), m.group(0)) for m in _SUSPICIOUS.finditer(s)}


def _decimal_comma(g: str, pred: str) -> bool:
    """A decimal comma, read only where the other side writes the same digits with a point: a prediction "1000,99"
    for 1000.99, a gold "0,111" or "1000,99" that cannot be a list of roots. "1,25" stays two roots for a gold, and
    "0,50" is not 0.5 (nor is "2,3" 2.3 as a gold)."""
    p, gs = pred.strip(), g.strip()
    if re.fullmatch(r"[-+]?\d+,\d\d|[-+]?0,\d{3,}", p) and p.replace(",", ".") == gs:
        return True
    return bool(re.fullmatch(r"[-+]?0,\d{3,}|[-+]?\d{4,},\d\d", gs)) and gs.replace(",", ".") == p


def _compare_one(g: str, pred: str) -> bool | None:
    if re.fullmatch(r"[A-J]", g):
        return pred.strip().upper() == g
    if _decimal_comma(g, pred):
        return True
    parts = _parts(pred) if re.match(r"\s*[(\[]", g) and not re.match(r"\s*[(\[]", pred) else None
    if parts and all(as_number(x) is not None for x in parts):
        return False  # "12 and 13", "1, 2": several answers, not the point or interval (12, 13)
    settled = settle_equation(g, pred)
    if settled is None:
        return False
    pred = settled
    gold_sides = _TOP_EQ.split(g)
    if len(gold_sides) == 2 and not _TOP_EQ.search(pred) and _VARIABLE.fullmatch(gold_sides[0].strip()):
        g = gold_sides[1].strip()  # a gold "y_1 = -2x^2 + 4x + 3" states y_1's value: "-2(x - 1)^2 + 5" is that value
    gn, pn = as_number(g), as_number(pred)
    if gn is not None and pn is not None:
        return _same_number(gn, pn, pred)
    if gn is not None and _HUGE_NUMBER.fullmatch(pred.strip()):
        return False  # a number too long or too large to read exactly is not the gold's (and costs sympy seconds)
    gs, ps = _as_numbers(g), _as_numbers(pred)
    if gs is not None and ps is not None and gs[0] == ps[0]:  # numeric tuples/sets: no LaTeX parser needed
        return len(gs[1]) == len(ps[1]) and all(a == b for a, b in zip(gs[1], ps[1]))
    same_set = _same_set(g, pred)
    if same_set is not None:
        return same_set
    if re.search(r"[.;!?]\s+\S", pred) and not re.search(r"[.;!?]\s+\S", g):
        return False  # "5. Hmm, could also be 7", "3. Possibly 7": math-verify would read the last number
    if _suspicious(pred) - _suspicious(g):
        return False  # "\\not 3", "\\geq 3", "3 \\approx 4", "3\\hspace{1cm}4", "3!", "3 \\text{ thousand}" are not 3
    if normalize_text(g) == normalize_text(pred):
        return True
    if _texty(g) and _texty(pred):
        return False
    if gn is not None and pn is None and not re.search(r"\\|\d", pred):
        return False  # numeric gold, wordy prediction
    if _complexity(pred) > 3 * _complexity(g) + 24:
        return False  # 60 nested \\frac for a gold of 1: no written answer; seconds of sympy (no timeout in threads)
    res = _math_verify(g, pred)
    if res is None and _texty(g):
        return False
    return res


def _unbracket(s: str) -> str:
    m = re.fullmatch(r"\\\{(.*)\\\}|\{(.*)\}", s.strip())
    return (m.group(1) if m.group(1) is not None else m.group(2)) if m else s


def same_value(g: str, pred: str) -> bool | None:
    """Is the cleaned answer ``pred`` equal to the cleaned gold ``g``? A list of answers (several
    boxes, "2 and 3", a set) matches in any order."""
    if len(pred) > MAX_ANSWER_CHARS or len(g) > MAX_ANSWER_CHARS:
        return normalize_text(g) == normalize_text(pred)
    if _EXPLOSIVE.search(pred) and not _EXPLOSIVE.search(g):
        return False  # 1000000!, 9^{9^{9}}, \\binom{10^6}{...}: no gold's value, and seconds of sympy each
    if (settled := settle_equation(g, pred)) is not None:
        pred = settled  # "(x, y) = (5, 8), (8, 5)" is its right side, before it is split into parts
    ordered = re.fullmatch(r"⟨(.*)⟩", pred, re.S)
    if ordered:  # parts labelled (a), (b), ... in the completion: each part against the gold's part in its place
        gp, pp = _parts(_unbracket(g)), _parts(ordered.group(1))
        if gp and pp:
            return len(gp) == len(pp) and all(
                bool(_compare_one(clean_answer(a) or a, clean_answer(b) or b)) for a, b in zip(gp, pp))
        pred = ordered.group(1)
    gp, pp = _parts(_unbracket(g)), _parts(_unbracket(pred))
    if gp is None and _DISJUNCTION.search(pred) and not _DISJUNCTION.search(g) and real_set(pred) is None:
        return False  # "2 \\lor 3", "3 or 4": no single answer for a gold that is one
    one = _compare_one(g, pred)
    if one:
        return True
    if (
        gp
        and pp
        and len(gp) == len(pp)
        and (not (g.strip().startswith(("(", "[")) and pred.strip().startswith(("(", "[")))
             or all(x.startswith("(") and x.endswith(")") for x in gp + pp))  # points, in any order
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
