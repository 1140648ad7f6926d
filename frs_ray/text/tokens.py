"""Word tokens with character offsets.

FRS works on tokens ("the i-th token" of Eq. 1 and 7). A token here is a word (letters, digits, inner
apostrophes and hyphens) or a single punctuation character; whitespace separates tokens and is not one.
Every token keeps its character offsets into the original string, so spans found by fuzzing map back to
exact substrings of what the user sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

_TOKEN_RE = re.compile(r"\w+(?:['\u2019\-]\w+)*|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Token:
    """A word or punctuation token and its ``[start, end)`` character offsets in the source text."""

    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into word and punctuation tokens with character offsets.

    >>> [t.text for t in tokenize("It's a mn charming, journey.")]
    ["It's", 'a', 'mn', 'charming', ',', 'journey', '.']
    """
    return [Token(m.group(0), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]


def render(tokens: Sequence[str]) -> str:
    """Join token strings into the text a model reads (single spaces, like the SST-2 files)."""
    return " ".join(tokens)
