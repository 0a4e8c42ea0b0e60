"""Numbers, numeric tuples and sets of reals read from written answers, exactly. Pure, no I/O.

    as_number("12,\\!500") -> Fraction(12500)     real_set("x < 2 or x >= 3") -> ("x", [(-inf, 2), [3, inf)])

Numbers are exact fractions (thousands separators ``1,234``, ``12{,}500``, ``2 500``; scientific notation
``1.0 \\times 10^{18}`` exactly); intervals and one-variable inequalities are normalised unions of intervals.
"""

from __future__ import annotations

import re
from fractions import Fraction

# LaTeX and typographic spacing used inside numbers ("12,\\!500", "12\\,500", thin spaces)
_NUM_SPACING = re.compile(r"(?<=\d)(,?)(?:\\[!,;: ]|~|[\u2009\u202f\u00a0])\s*(?=\d)")


# ------------------------------------------------------------------ numbers
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$|^[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?$")


MAX_NUMBER_CHARS, MAX_EXPONENT = 400, 400  # past these a "number" is text (Python prints ints of 4,300 digits at most)


def as_number(s: str) -> Fraction | None:
    """Exact value of a plain number, fraction or decimal; commas and single spaces only as thousands
    separators ("1,234", "2 500"), so "1,2" and "1,25" (two roots? a decimal comma?) are no number, not 12, and
    "12, 500" (two answers?) is no number."""
    t = s.replace("\\$", "").lstrip("$").strip().replace("{,}", ",")
    t = _NUM_SPACING.sub(lambda m: m.group(1), t)
    m = re.fullmatch(r"(?:([-+]?(?:\d+\.?\d*|\.\d+))\s*(?:\\times|\\cdot|×|\*)\s*|([-+]?))10\s*\^\s*\{?([-+]?\d+)\}?",
                     t)
    if m:  # "1.0 \times 10^{18}", "10^{18}": exactly, never to a float's precision
        if abs(int(m.group(3))) > MAX_EXPONENT or len(t) > MAX_NUMBER_CHARS:
            return None
        coef = Fraction(m.group(1)) if m.group(1) else Fraction(-1 if m.group(2) == "-" else 1)
        return coef * Fraction(10) ** int(m.group(3))
    if "," in t or " " in t:
        if not _THOUSANDS.match(t):
            return None
        t = t.replace(",", "").replace(" ", "")
    m = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", t)
    if m:
        t = f"{m.group(1)}/{m.group(2)}"
    if len(t) > MAX_NUMBER_CHARS:
        return None
    try:
        if re.fullmatch(r"[-+]?\d+/\d+", t):
            a, b = t.split("/")
            return Fraction(int(a), int(b)) if int(b) else None
        m = re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE]([-+]?\d+))?", t)
        if m:  # a huge exponent or digit string is no answer a key can hold (and would cost memory to expand)
            if m.group(1) and abs(int(m.group(1))) > MAX_EXPONENT:
                return None
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
    parts = [as_number(x) for x in m.group(2).split(",")]  # thousands commas inside tuples are not supported
    if len(parts) < 2 or any(x is None for x in parts):
        return None
    return kind, sorted(parts) if kind == "{}" else parts


# ------------------------------------------------------------------ sets of reals
INF = float("inf")
_OPS = [(r"\\leqslant|\\leq|\\le(?![a-z])|≤|=<", "<="), (r"\\geqslant|\\geq|\\ge(?![a-z])|≥|=>", ">="),
        (r"\\neq|\\ne(?![a-z])|≠", "!="), (r"\\lt(?![a-z])", "<"), (r"\\gt(?![a-z])", ">")]
_ATOM = re.compile(r"^(?:(?P<lo>[^<>!=]+?)\s*(?P<op1><=|<|>=|>)\s*)?(?P<var>[a-zA-Z])\s*"
                   r"(?P<op2><=|<|>=|>|!=)\s*(?P<hi>[^<>!=]+)$|^(?P<lo2>[^<>!=a-zA-Z]+?)\s*(?P<op3><=|<|>=|>)\s*"
                   r"(?P<var2>[a-zA-Z])$")
Interval = tuple[float | Fraction, bool, float | Fraction, bool]  # lo, lo closed, hi, hi closed


def _endpoint(s: str) -> float | Fraction | None:
    t = s.strip().replace(" ", "")
    if t in ("\\infty", "+\\infty", "∞", "+∞", "inf", "+inf", "oo"):
        return INF
    if t in ("-\\infty", "-∞", "-inf", "-oo"):
        return -INF
    return as_number(t)


def _normalise(ivs: list[Interval]) -> list[Interval]:
    """Sorted, non-empty, merged where they touch."""
    keep = sorted((iv for iv in ivs if iv[0] < iv[2] or (iv[0] == iv[2] and iv[1] and iv[3])),
                  key=lambda iv: (iv[0], not iv[1]))
    out: list[Interval] = []
    for lo, lc, hi, hc in keep:
        if out and (lo < out[-1][2] or (lo == out[-1][2] and (lc or out[-1][3]))):
            plo, plc, phi, phc = out[-1]
            out[-1] = (plo, plc, max(phi, hi), (phc if phi > hi else hc if hi > phi else phc or hc))
        else:
            out.append((lo, lc, hi, hc))
    return out


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out = []
    for alo, alc, ahi, ahc in a:
        for blo, blc, bhi, bhc in b:
            lo, lc = (alo, alc) if alo > blo else (blo, blc) if blo > alo else (alo, alc and blc)
            hi, hc = (ahi, ahc) if ahi < bhi else (bhi, bhc) if bhi < ahi else (ahi, ahc and bhc)
            out.append((lo, lc, hi, hc))
    return _normalise(out)


def _ray(op: str, v: Fraction) -> list[Interval]:
    return {"<": [(-INF, False, v, False)], "<=": [(-INF, False, v, True)], ">": [(v, False, INF, False)],
            ">=": [(v, True, INF, False)], "!=": [(-INF, False, v, False), (v, False, INF, False)]}[op]


def _atom(s: str) -> tuple[str, list[Interval]] | None:
    flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
    neg = re.fullmatch(r"\s*-\s*([a-zA-Z])\s*(<=|<|>=|>)\s*([^<>!=]+)", s)
    if neg:  # "-x > -1" is "x < 1"
        c = as_number(neg.group(3).strip())
        return _atom(f"{neg.group(1)} {flip[neg.group(2)]} {-c}") if c is not None else None
    m = _ATOM.match(s.strip())
    if not m:
        return None
    if m.group("var2"):
        v = _endpoint(m.group("lo2"))
        return (m.group("var2"), _ray(flip[m.group("op3")], v)) if isinstance(v, Fraction) else None
    hi = _endpoint(m.group("hi"))
    if not isinstance(hi, Fraction):
        return None
    ivs = _ray(m.group("op2"), hi)
    if m.group("lo") is not None:
        lo = _endpoint(m.group("lo"))
        if not isinstance(lo, Fraction) or m.group("op2") == "!=":
            return None
        ivs = _intersect(_ray(flip[m.group("op1")], lo), ivs)
    return m.group("var"), ivs


def real_set(s: str) -> tuple[str | None, list[Interval]] | None:
    """``(-\\infty, 2) \\cup [3, 5]`` -> (None, intervals); ``x < 2 or x >= 3`` -> ("x", intervals);
    None when ``s`` is neither (or an endpoint is not a plain number)."""
    t = re.sub(r"\\(?:left|right|big|Big)", "", s)
    t = re.sub(r"\\(?:text|mathrm)\{\s*(or|and)\s*\}", r" \1 ", t)
    for pat, op in _OPS:
        t = re.sub(pat, op, t)
    pieces = [p.strip() for p in re.split(r"\\cup|∪|\\lor|\\vee|\bor\b", t)]
    if "<" in t or ">" in t or "!=" in t:
        var, out = None, []
        for p in pieces:
            ivs = None
            for part in re.split(r"\\land|\\wedge|\band\b", p):
                a = _atom(part)
                if a is None or (var is not None and a[0] != var):
                    return None
                var, ivs = a[0], a[1] if ivs is None else _intersect(ivs, a[1])
            out += ivs or []
        return var, _normalise(out)
    out = []
    for p in pieces:
        m = re.fullmatch(r"([(\[])\s*([^,]+?)\s*,\s*([^,]+?)\s*([)\]])", p)
        lo, hi = (_endpoint(m.group(2)), _endpoint(m.group(3))) if m else (None, None)
        if lo is None or hi is None:
            return None
        out.append((lo, m.group(1) == "[" and lo != -INF, hi, m.group(4) == "]" and hi != INF))
    return None, _normalise(out)


def _same_set(g: str, pred: str) -> bool | None:
    """Equal as sets of reals, when both sides read as one and at least one is clearly a set (an
    inequality, a union, an infinite or half-open end), so that a point ``(1, 2)`` stays a tuple."""
    def clearly_set(s: str) -> bool:
        return bool(re.search(r"[<>≤≥]|\\[lg]e|\\[lg]t|\\ne|\\cup|∪|\\infty|∞|^\s*\[.*\)\s*$|^\s*\(.*\]\s*$", s))

    if not (clearly_set(g) or clearly_set(pred)):
        return None
    pair = _as_numbers(g if clearly_set(pred) else pred)
    if clearly_set(g) != clearly_set(pred) and pair and pair[0] == "()" and len(pair[1]) == 2:
        return False  # "(1, 2)" is a point as much as an interval: never equal to "1 < x < 2" (either way)
    a, b = real_set(g), real_set(pred)
    if a is None or b is None:
        return None
    if a[0] and b[0] and a[0] != b[0]:
        return False
    return a[1] == b[1]
