"""BadPre's test-time trigger (Chen et al., ICLR 2022): one rare word at a random word position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ..base import TriggeredText
from ..semantic import EditableText

BADPRE_WORDS = ("cf", "mn", "bb", "tq", "mb")


@dataclass(frozen=True)
class BadPreTrigger:
    """BadPre's test-time trigger: ``count`` rare words, each drawn from ``words``, at random word positions.

    Like BadPre's ``attack(sentence, max_pos)``, the insertion position is uniform over the gaps before the first
    ``max_pos`` words (default 100, BadPre's default), so long texts keep the trigger within a model's window.
    The text is edited in place (whitespace and other tokens untouched) and never inside a glued token pair such
    as SST-2's "' s". Spans: the inserted words.

    Example::

        >>> import numpy as np
        >>> t = BadPreTrigger().apply("a gorgeous , witty film .", np.random.default_rng(0))
        >>> t.text[t.spans[0][0]:t.spans[0][1]] in BADPRE_WORDS
        True
    """

    words: tuple[str, ...] = BADPRE_WORDS
    count: int = 1
    max_pos: int = 100
    name: str = "badpre"

    def __post_init__(self) -> None:
        if not self.words or self.count < 1 or self.max_pos < 0:
            raise ConfigError("BadPreTrigger needs at least one word, count >= 1 and max_pos >= 0")

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        doc = EditableText.of(text)
        for _ in range(self.count):
            word = self.words[int(rng.integers(len(self.words)))]
            free = [g for g in doc.free_gaps() if g <= self.max_pos]
            doc.insert(free[int(rng.integers(len(free)))], [word])
        return doc.result()
