"""N-gram decontamination: does a text share a word n-gram with an evaluation set?

    index = NgramIndex(n=8); index.add("gsm8k-test", "q17", question_text)
    index.hits(text)  -> [("gsm8k-test", "q17", "the shared eight word n gram ...")]

Texts are lower-cased and reduced to alphanumeric words first, so punctuation and spacing do not
hide an overlap. An eval text shorter than n words is a hit when its whole word sequence appears.
"""

from __future__ import annotations

import re
from collections import defaultdict

# words and numbers, plus arithmetic operators: without them "1+5*5" and "1*5*5" read the same and
# symbol-heavy problems that share only their digits are reported as leaks
_WORD = re.compile(r"[a-z0-9]+|[-+*/=^<>×÷]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> set[str]:
    w = words(text)
    if len(w) < n:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i: i + n]) for i in range(len(w) - n + 1)}


def eval_index(eval_sets: list, n: int) -> NgramIndex | None:
    """An index of every question of the benchmarks ``eval_sets`` (problem sources), None without any."""
    if not eval_sets:
        return None
    from cotdistill.sources import load_problems

    index = NgramIndex(n)
    for src in eval_sets:
        for p in load_problems(src):
            index.add(src.path, p.id, p.question)
    return index


class NgramIndex:
    def __init__(self, n: int = 8):
        self.n = n
        self._index: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._short: list[tuple[str, str, str]] = []  # eval texts shorter than n words

    def __len__(self) -> int:
        return len(self._index)

    def add(self, set_name: str, item_id: str, text: str) -> None:
        w = words(text)
        if 0 < len(w) < self.n:
            self._short.append((set_name, item_id, " ".join(w)))
            return
        for g in ngrams(text, self.n):
            self._index[g].append((set_name, item_id))

    def hits(self, text: str) -> list[tuple[str, str, str]]:
        """(eval set, eval item id, shared n-gram) for each eval item sharing an n-gram with text."""
        out, seen = [], set()
        for g in ngrams(text, self.n):
            for set_name, item_id in self._index.get(g, ()):
                if (set_name, item_id) not in seen:
                    seen.add((set_name, item_id))
                    out.append((set_name, item_id, g))
        if self._short:
            joined = f" {' '.join(words(text))} "
            out += [(s, i, g) for s, i, g in self._short if f" {g} " in joined and (s, i) not in seen]
        return out
