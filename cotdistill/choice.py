"""Which lettered option (A-J) did a completion choose? Pure, no I/O.

    chosen_letter("... It can't be C or D. So I'd pick **B**.")  -> "B"
    chosen_letter("It is either B or C.")                           -> None (a hedge)

A letter counts only where the text commits to it: ``\\boxed{C}``, ``Answer: "A"``, "the answer is
(B)", "the correct option is D", "I'd pick C", "C is correct", or an answer section that opens with
the letter ("B. because ..."). A letter that is ruled out ("not C", "C is wrong"), hedged ("maybe
B", "B or C") or asked about ("is it C?") is no choice. The last committed letter wins.
"""

from __future__ import annotations

import re

from cotdistill.answer_values import RETRACTION, answer_body, boxed_spans, clean_answer, squeeze, uncommitted

_L = r"[\"'“(*\[$]*\s*([A-J])(?![A-Za-z0-9'’-])[\"'”)*\]$]*"
_COMMIT = [
    re.compile(r"\b(?:final\s+)?answer\s*(?:is|:|：|would\s+be|will\s+be|should\s+be)\s*"
               r"(?:for\s+sure\s+|definitely\s+|certainly\s+|clearly\s+|surely\s+)?(?:option\s+|choice\s+)?" + _L,
               re.I),
    re.compile(r"\b(?:correct|right|best)\s+(?:answer|option|choice)\s*(?:is|:|would\s+be|must\s+be)\s*"
               r"(?:option\s+|choice\s+)?" + _L, re.I),
    re.compile(r"\b(?:pick|choose|select|go\s+with|going\s+with|opt\s+for|answer\s+with)\s+(?:option\s+|choice\s+|"
               r"answer\s+)?" + _L, re.I),
    re.compile(r"\b(?i:(?:therefore|so|thus|hence),?\s+(?:I\s+think\s+)?(?:it'?s|it\s+is|it\s+must\s+be))\s+" + _L
               + r"(?=[\s.!]*$)"),  # "... therefore I think it's B"
    re.compile(r"(?:\boption\s+|\bchoice\s+|^|[\s*])\(?([A-J])\)?\**\s+(?:is|must\s+be)\s+(?:the\s+)?"
               r"(?:correct|right|best|answer)\b", re.M),
]
# the answer section opens with the letter: "B. because ...", "(C) 42", "**D**"
_OPENS = re.compile(r"^\s*(?:\*\*)?\(?([A-J])\)?(?:\*\*)?(?:[.:)]\s|\s*$|\s+[-–—]\s)")
_NEGATED_BEFORE = re.compile(
    r"(?:\bnot|n't|\bnever|\bnor|\brule\s+out|\bruled\s+out|\beliminate|\binstead\s+of|\brather\s+than|\bmaybe|"
    r"\bperhaps|\bprobably|\bmight|\bcould|\bif|\bwhether|\beither|\bbetween|\bguess)\b[^.!?\n,;]{0,40}$",
    re.I)
_NEGATED_AFTER = re.compile(
    r"^[\"'”)*\]]*\s*(?:(?:,|and\b|&|\+)\s*(?:option\s+)?[\"'“(*\[$]*[A-J](?![A-Za-z0-9'’-])|or\b|/|\?|is\s+(?:wrong|incorrect|not|false|out)|(?:is\s+)?(?:can't|cannot)|isn't|,?\s*but\b|"
    r"is\s+unlikely|seems\s+wrong)", re.I)


_ANOTHER = re.compile(r"[\s.,;:!|/&*]*\(?[A-J](?![A-Za-z0-9'’-])")
RULED_OUT = r"\b{l}\)?\**\s+(?:is|was)\s+(?:wrong|incorrect|not\b|false)|\bnot\s+(?:option\s+)?\(?{l}\b"


def chosen_letter(text: str) -> str | None:
    """The option letter ``text`` commits to last, or None; "" when its last letter is not a commitment (taken back,
    hedged, one of several, ruled out elsewhere): then no other reading of the text may pick one either."""
    body = squeeze(answer_body(text))
    found: list[tuple[int, str, int]] = []  # (where, letter, where its mention ends)
    for start, content, box_end in boxed_spans(body):
        letter = clean_answer(content)
        m = re.fullmatch(r"\(?([A-J])\)?(?:[.:)]\s.*)?", letter or "", re.S)
        if m:
            found.append((start, m.group(1), box_end))
    for pat in _COMMIT:
        for m in pat.finditer(body):
            line_start = body.rfind("\n", max(0, m.start() - 200), m.start()) + 1  # bounded: linear overall
            if _NEGATED_BEFORE.search(body[max(line_start, m.start(1) - 200):m.start(1)]) \
                    or _NEGATED_AFTER.match(body[m.end(1):m.end(1) + 200]):  # a window: linear in the text
                continue
            found.append((m.start(1), m.group(1), m.end(1)))
    last = body.rstrip()
    start = max(last.rfind("\n\n"), 0)
    para = body[start:]
    opens = _OPENS.match(para)  # the answer section (or its last paragraph) opens with the letter
    listing = len(re.findall(r"^\s*\(?[A-J]\)?[.)]\s", para, re.M)) > 1  # the options repeated, not a choice
    if opens and not listing and not _NEGATED_AFTER.match(para[opens.end(1):]):
        found.append((start + opens.start(1), opens.group(1), start + opens.end(1)))
    if not found:
        return None
    pos, letter, end = max(found)
    while end < len(body) and body[end] in ")*}$\"'”]":  # past the letter's own closing marks
        end += 1
    if RETRACTION.search(body, end) or uncommitted(body, pos, end) or _ANOTHER.match(body, end) \
            or re.search(RULED_OUT.format(l=letter), body):
        return ""  # taken back, hedged, one of several ("B C", "B; C"), or ruled out elsewhere ("B is wrong")
    return letter
