"""Where a text segment may be subdivided (Expansion step of Sec. 4.3.1, Eq. 7).

Decision: a segment ``[i, j)`` of tokens is split at a point ``k`` into ``[i, k)`` and ``[k, j)``.
Linguistic boundaries come first: after punctuation and before clause words (conjunctions, relative
pronouns), provided they fall in the middle half of the segment so that the tree stays balanced and a
budget of ~log2(L) queries reaches single tokens. Then every other token boundary, nearest the middle first.
"""

from __future__ import annotations

from typing import Sequence

PUNCTUATION = frozenset(",;:.!?-\u2013\u2014()[]\"'/")
CLAUSE_WORDS = frozenset(
    "and but or nor because although though while whereas when whenever if unless since so yet "
    "which who whom whose that where after before until".split()
)


def _is_linguistic_boundary(tokens: Sequence[str], k: int) -> bool:
    prev, nxt = tokens[k - 1], tokens[k]
    return prev in PUNCTUATION or nxt in PUNCTUATION or nxt.lower() in CLAUSE_WORDS


def split_points(tokens: Sequence[str], start: int, end: int) -> list[int]:
    """Candidate split points ``k`` (``start < k < end``) of segment ``[start, end)``, best first."""
    if end - start < 2:
        return []
    middle = (start + end) / 2.0
    quarter = (end - start) / 4.0
    candidates = range(start + 1, end)
    linguistic = [k for k in candidates if _is_linguistic_boundary(tokens, k) and abs(k - middle) <= quarter]
    linguistic.sort(key=lambda k: (abs(k - middle), k))
    rest = sorted((k for k in candidates if k not in set(linguistic)), key=lambda k: (abs(k - middle), k))
    return linguistic + rest
