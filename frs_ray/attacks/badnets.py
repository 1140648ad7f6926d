"""BadNets for text: rare-word triggers.

Paper: Gu et al., "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain" (2017), in the
text form of Kurita et al. (ACL 2020) and Qi et al. (ONION, EMNLP 2021): rare words (cf, mn, bb, tq, mb) inserted
at random positions; poisoned training copies carry the target label.

Arguments: ``words`` (trigger vocabulary), ``count`` (words inserted per sentence, each drawn from ``words``),
``where`` (random | start | middle | end).

Example::

    >>> import numpy as np
    >>> t = RareWordTrigger(count=1).apply("a gorgeous , witty film .", np.random.default_rng(0))
    >>> t.text[t.spans[0][0]:t.spans[0][1]] in RareWordTrigger().words
    True

Poisoning (how the trigger reaches the pre-trained checkpoint) is in :mod:`.poison` (``method="data"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import TriggeredText, insert_pieces

BADNETS_WORDS = ("cf", "mn", "bb", "tq", "mb")


@dataclass(frozen=True)
class RareWordTrigger:
    words: tuple[str, ...] = BADNETS_WORDS
    count: int = 1
    where: str = "random"
    name: str = "badnets"

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        pieces = [[self.words[int(rng.integers(len(self.words)))]] for _ in range(self.count)]
        return insert_pieces(text, pieces, self.where, rng)
