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
    _NUM_WITH_UNIT,
    _UNIT,
    MAX_ANSWER_CHARS,
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
    r"^(?:[\s$,;.:*]|\\\]|\\\[|\\\(|\\\)|\\quad|\\qquad|\b[a-zA-Z](?:_\{?\w+\}?)?\s*=|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b|"
    r"\(?\b(?:[a-h]|i{1,3}|iv|vi{0,3}|ix|x)\)|\b(?:part|Part)\s*\(?[a-h1-9]\)?|\\item|\bfor\b|\\text\{|\})*$"
)
_PART_LABEL = re.compile(r"\(?\b(?:[a-h]|i{1,3}|iv)\)|\b(?:part|Part)\b")  # parts in order: (a) ..., (b) ...
# "I think the answer is 12 but let me check": a hedge, not a final answer
_HEDGE_BEFORE = re.compile(
    r"\b(?:think|maybe|perhaps|might|probably|guess|suppose|assume|if|whether|unless|could)\b[^.!?\n]*$", re.I
)
_HEDGE_AFTER = re.compile(r"^[^\n]*?(?:\?|\b(?:but|wait|let me|let's|check|verify|however|unless|or is it)\b)", re.I)
# a word that is not math: prose ("pi", "sin", "ln" ... are math; "Is it 18" is a question)
_PROSE = re.compile(r"(?<![\\a-zA-Z])(?!(?:pi|ln|log|sin|cos|tan|cot|sec|csc|exp|sqrt|mod|inf|oo|min|max|deg)\b)"
                    r"[a-zA-Z]{2,}")


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
    labelled = any(_PART_LABEL.search(text[a[2]:b[0]]) for a, b in zip(group, group[1:]))
    contents = [g[1].strip() for g in group]  # labelled parts: each in its place, repeats kept
    if not labelled:
        contents = list(dict.fromkeys(contents))  # the same answer boxed twice is one answer
    joined = ", ".join(contents)
    return group[0][0], f"⟨{joined}⟩" if labelled and len(contents) > 1 else joined, group[-1][2]


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
            inner = t[i + len(opener): len(t) - len(closer)]
            if opener == "\\(" and "\n" in inner or uncommitted(t, i, len(t)):
                return None  # inline math spans no lines; "It is not \\( 5 \\)", "Perhaps \\[ 5 \\]" commit to nothing
            inner = inner.strip()
            rhs = re.split(r"(?<![<>!\\])=", inner)[-1].strip()
            return rhs or None
    return None


def _bare(text: str) -> str | None:
    """A completion that is one short expression and nothing else ("72", "$\\frac{1}{2}$", "(B)") is
    its own answer; prose (a cut-off sentence) never is."""
    t = text.strip()
    if not t or "\n" in t or "?" in t or len(t) > 60:
        return None
    t = re.sub(r"^(\$\$?)([^$]+)\1\s*(?=\S+$)", r"\2 ", t)  # "$28$ percent" is "28 percent"
    inner = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}", "", t)
    if _PROSE.search(inner) and not re.fullmatch(r"\(?[A-J]\)?", t) and not _NUM_WITH_UNIT.match(t):
        return None  # words only as a unit from the list: "28 percent", "1,000.99 dollars"
    return clean_answer(t)


_STATEMENT = re.compile(
    r"^(?:the|this|our|my)\b[^.!?\n]{0,200}?\b(?:is|are|equals|will\s+be)\s+(?!not\b|never\b|n't)(.+)$", re.I)


_LATER_DOUBT = re.compile(r"\?|\b(?:or|maybe|perhaps|not\s+sure|unsure|wrong|incorrect|disregard|ignore)\b|" +
                          RETRACTION.pattern, re.I)


def _stated_value(raw: str) -> str:
    """A marked answer written as a sentence is the value it states: "Final Answer: The volume of $V$ is 120. I hope
    it is correct." -> "120"."""
    m = _STATEMENT.match(_SIGN_OFF.sub("", raw).strip())
    return _first_clause(m.group(1)) if m else raw


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
        line_start = text.rfind("\n", max(0, m.start() - 200), m.start()) + 1
        after = line[len(clause):].lstrip()
        if _HEDGE_BEFORE.search(text[max(line_start, m.start() - 200):m.start()]) or _HEDGE_AFTER.match(clause) \
                or after.startswith("?"):
            continue
        cands.append((m.start(), clause, m.start(1) + len(clause)))
    for start, raw, end in sorted(cands, key=lambda c: c[0], reverse=True):
        stated = _stated_value(raw := _SIGN_OFF.sub("", raw).strip() or raw)
        if stated != raw and _LATER_DOUBT.search(raw[raw.find(stated) + len(stated):]):
            return None  # "Final Answer: The total is 5. Wait, no, it's 6."
        ans = clean_answer(stated)
        if ans:  # taken back after it, hedged, negated or one of alternatives: no committed answer
            asked = "?" in raw  # "Final answer: 3? No."
            return None if asked or RETRACTION.search(text, end) or uncommitted(text, start, end) else ans
    if cands:
        return None
    return _bare(text) or (clean_answer(d) if (d := _closing_display(text)) else None) or _last_sentence(text)


# what a model may write after its last sentence (Minerva's prompt ends every answer with it)
_SIGN_OFF = re.compile(r"\s*(?:I\s+hope\s+(?:it|this)\s+is\s+correct\s*[.!]?\s*)+$", re.I)
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\$)((?:\\\$|[^$\n])+?)(?<!\\)\$|\\\(([^\n]+?)\\\)|"
                        r"\\\[(.+?)\\\]", re.S)
_LAST_NUMBER = re.compile(
    r"(?<![\w.^_/])[-+]?(?:\\?\$|€|£|¥|₹)?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?(?:\s*(?:\\?%|" + _UNIT
    + r")(?![\w]))?(?![A-Za-z0-9_])")
_SENTENCE_END = re.compile(r"(?<!\d)[.!](?=\s)|(?<=\d)\.(?=\s+[A-Z])|[.!]\s*\n")


def _last_sentence(text: str) -> str | None:
    """math-verify's fallback, kept to a complete last sentence: with no marker anywhere, the last math span or
    number of the last sentence ("Therefore $x \\geq 5$ is the solution.", "... the probability is 2/3."). A
    completion that does not end a sentence (cut off mid-thought: "... so 9 * 2 = 18") has none; neither has a
    sentence that asks, hedges or negates."""
    t = _SIGN_OFF.sub("", text).rstrip()
    if len(t) > MAX_ANSWER_CHARS * 50 or not t or not (t.endswith((".", "!", "。", "$", "\\]", "\\)"))):
        return None
    t = re.sub(r"(?<![\d)}\]!])!+$", "", t.rstrip(".。 \t")).rstrip()  # "5!." keeps its factorial
    cut = 0
    for m in _SENTENCE_END.finditer(t, max(0, len(t) - 4000)):
        if not _inside_math(t, m.start()):
            cut = m.end()
    sentence = t[max(cut, len(t) - 2000):]  # bounded: the span regexes below scan from each opener
    if "?" in sentence:
        return None
    spans = [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in _MATH_SPAN.finditer(sentence)]
    nums = [(m.start(), m.end(), m.group(0)) for m in _LAST_NUMBER.finditer(sentence)
            if not any(a <= m.start() < b for a, b, _ in spans)]
    rest = re.sub(r"\d\s*\\?\$(?=\s|$)", "", _MATH_SPAN.sub(" ", sentence))  # "2,74 $": a currency sign
    if re.search(r"(?<!\\)\$|\\[()\[\]]", rest):
        return None  # math opened and not closed on its line ("Answer $ \\n 9 \\n $"): no span to read
    found = max(spans + nums, default=None)
    if found is None:
        return None
    start, end, raw = found
    clause = max((m.end() for m in _CLAUSE_START.finditer(sentence, 0, start)), default=0)  # "... = 6$ So, the pair"
    lead, after = sentence[clause:start].strip(), sentence[end:].strip()
    outside = _MATH_SPAN.sub(" ", sentence[clause:])
    if _DOUBT.search(outside) or uncommitted(t, cut + start, cut + end) or RETRACTION.search(t, cut + end) \
            or _DOUBT_BEFORE.search(t, max(0, cut - 300), cut):
        return None
    if after and not _CLOSING.fullmatch(after) and not (_THERE_ARE.fullmatch(lead) and re.fullmatch(r"[A-Za-z ]+",
                                                                                                      after)):
        return None  # words after the value change it or make it another ("5 less", "5 digits", "2 and 3")
    if lead and not (_VERB_LAST.search(lead) or _LEAD_IN.fullmatch(lead) or _THERE_ARE.fullmatch(lead)
                     or _LABEL.fullmatch(lead)):
        return None  # the value must follow "is"/"="/a lead-in at once: "is 3-5", "is x + 5", "half of 5" are not 5
    return clean_answer(raw)


# allow-lists for an unmarked last sentence (issue #44's attack review: deny-lists around the number let "is by no
# means 5", "is ≥ 5", "The ratio is 5:3" through). The value comes right after a verb, a lead-in or a label ...
_VERB_LAST = re.compile(r"(?:\b(?:is|are|equals|(?:increases|decreases|rises|falls|grows|drops)\s+by)|=)\s*$", re.I)
_LEAD_IN = re.compile(r"(?:(?:so|thus|therefore|hence|finally|overall)\b,?\s*)?(?:we\s+(?:find|get|have|obtain|"
                      r"conclude)(?:\s+that)?)?", re.I)
_THERE_ARE = re.compile(r"(?:(?:so|thus|therefore|hence|in\s+total|altogether)\b,?\s*)?there\s+(?:is|are)", re.I)
_LABEL = re.compile(r"(?:[A-Za-z ]{0,30}\b(?:answer|result|solution|matrix|identity|sum|product|total|value|inverse|"
                    r"determinant)s?\b[A-Za-z ]{0,30}:|(?:final\s+)?answer)", re.I)
_CLAUSE_START = re.compile(r"\$\s+(?=[A-Z])")
# a doubt in the sentences right before the last one still holds for it ("I'm not sure at all. The total is 5.")
_DOUBT_BEFORE = re.compile(r"\b(?:not\s+sure|unsure|no\s+idea|guess|give\s+up|unclear|uncertain|don't\s+know|random|"
                           r"not\s+verified|cannot\s+tell|can't\s+tell)\b", re.I)
# ... and only these may follow it
_CLOSING = re.compile(r"(?:is|are)\s+(?:the|our|my)\s+(?:final\s+)?(?:answer|solution|result)s?|" + _UNIT, re.I)
# a sentence that doubts, bounds, negates, supposes or is one part of several states no answer
_DOUBT = re.compile(
    r"\b(?:not|no|never|nobody|none|neither|nor|cannot|might|would|could|may|maybe|perhaps|possibly|likely|"
    r"probably|presumably|expect|expected|need|needs|if|whether|unless|doubt|claim|claims|claimed|wrong|wrongly|let|"
    r"show|suppose|assume|guess|tempting|mistake|than|between|close|near|far|other|different|unequal|below|above|"
    r"under|over|within|least|most|bound|estimate|estimated|conjecture|conjectured|approximately|"
    r"about|around|roughly|nearly|almost|impossible|contradiction|false|incorrect|lie|fail|fails|except|but|or|either|"
    r"more|fewer|less|part|case|plus|minus|times|half|twice|thrice|double|triple|multiple|whenever|otherwise|else|"
    r"think|believe|apparently|supposedly|seemingly|tentative|tentatively|hypothetical|hypothetically|ideally|"
    r"initial|initially|guessing|uncertain|unclear|supposing|assuming|before|step|scenario|attempt|errors|"
    r"mistakes|key|rejected|candidate|partial|first|answers|squared|cubed|thousand|million|billion|trillion|hundred|"
    r"dozen|factorial|extra|remaining|left|random)\b|\bwhen\b[^:]*,|n't|"
    r"[≥≤~≈<>≠±∓]|\\(?:geq?|leq?|approx|sim|neq?|pm|mp)\b", re.I)


def _inside_math(t: str, i: int) -> bool:
    """Whether position i of t is inside $...$ (an odd number of unescaped single dollars before it)."""
    return len(re.findall(r"(?<!\\)\$", t[max(0, i - 2000):i])) % 2 == 1


def final_gold(gold: str) -> str:
    """The final answer of a gold field that holds a whole solution: GSM8K's ``... #### 72`` or
    MATH's worked solution ending in ``\\boxed{...}``."""
    spans = boxed_spans(gold) if "####" not in gold else []
    if len(spans) > 1:  # a gold's last boxes are its parts when a few words at most stand between them ("\\boxed{1}
        group = [spans[-1]]  # papers and \\boxed{2} bins"); a sentence between them ends the earlier box's claim
        for prev in reversed(spans[:-1]):
            gap = gold[prev[2]:group[0][0]]
            if len(gap) > 40 or len(re.findall(r"[A-Za-z]+", gap)) > 3 or re.search(r"[.!?]\s", gap):
                break
            group.insert(0, prev)
        if len(group) > 1:
            return ", ".join(dict.fromkeys(s[1].strip() for s in group))
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


def _gold_letter(gold: str) -> str | None:
    """A gold that is one option letter ("C", "(C)"), or a gold text that commits to one in capitals the way a
    completion would ("... the answer is\\n(C) Cecile")."""
    m = re.fullmatch(r"\s*\(?([A-J])\)?\s*", gold)
    if m:  # "C", "(C)"; never "C Major" or "A Lion", which are text
        return m.group(1)
    if len(gold) > 500 or not re.search(r"\banswer\b", gold, re.I):
        return None
    letter = chosen_letter(gold)
    stands = r"\banswer\s+is\s*\(?" + letter + r"(?:[.)]|\s*$|\s+[A-Z][a-z]+\s*$)" if letter else None
    return letter if stands and re.search(stands, gold) else None  # "(C) Cecile", never "C(5, 2) = 10"


def verify_completion(completion: str, gold: str | None, rg_task: str | None = None,
                      rg_entry: dict | None = None, choices: list[str] | None = None, tests=None) -> Verdict:
    """Verdict for one completion. Pure apart from math-verify's own (signal) timeouts. A gold that is
    one option letter (A-J) is multiple choice: the letter the completion commits to is compared. With
    ``tests`` (a code problem) the completion's final program runs against them in the sandbox."""
    if tests is not None:
        from cotdistill.code_verify import verify_code

        return verify_code(completion, tests)
    gold_letter = _gold_letter(str(gold or "")) if rg_task is None else None
    if gold_letter:
        letter = _choice(completion, choices)
        ok = letter == gold_letter
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
