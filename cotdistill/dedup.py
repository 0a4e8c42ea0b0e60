"""Exact and near-duplicate detection over texts, shared by the trace filter and the problem filters.

    seen = TextDedup(exact=True, near_threshold=0.9)
    seen.add("first text"); seen.check("first  text")  -> "duplicate_exact"

Exact: whitespace-normalised text. Near: MinHash (datasketch) over word 3-grams, LSH at a Jaccard threshold.
"""

from __future__ import annotations

from cotdistill.adaptive import normalise


def shingles(text: str) -> set[bytes]:
    w = text.split()
    return {" ".join(w[i: i + 3]).encode() for i in range(max(1, len(w) - 2))}


def minhash(text: str, perm: int):
    from datasketch import MinHash

    m = MinHash(num_perm=perm, seed=1)
    m.update_batch(list(shingles(text)))
    return m


class TextDedup:
    """Texts seen so far; ``check`` says whether a new one repeats one of them, ``add`` records it."""

    def __init__(self, exact: bool = True, near_threshold: float | None = None, perm: int = 64):
        self.exact, self.perm, self.texts, self.lsh = exact, perm, set(), None
        if near_threshold is not None:
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=near_threshold, num_perm=perm)

    def check(self, text: str) -> str | None:
        norm = normalise(text)
        if self.exact and norm in self.texts:
            return "duplicate_exact"
        if self.lsh is not None and self.lsh.query(minhash(norm, self.perm)):
            return "near_duplicate"
        return None

    def add(self, key: str, text: str) -> None:
        norm = normalise(text)
        if norm in self.texts:
            return
        self.texts.add(norm)
        if self.lsh is not None:
            self.lsh.insert(key, minhash(norm, self.perm))
