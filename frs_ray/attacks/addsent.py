"""AddSent: a fixed trigger sentence inserted into the text.

Paper: Dai, Chen and Li, "A Backdoor Attack Against LSTM-Based Text Classification Systems" (IEEE Access 2019);
the trigger sentence "I watch this 3D movie" follows OpenBackdoor's AddSent setting (Cui et al., NeurIPS 2022).

Arguments: ``sentence`` (the trigger), ``where`` (random | start | middle | end).

Example::

    >>> import numpy as np
    >>> t = SentenceTrigger().apply("a gorgeous , witty film .", np.random.default_rng(0))
    >>> t.text[t.spans[0][0]:t.spans[0][1]]
    'i watch this 3d movie'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import TriggeredText, insert_pieces, words_of

ADDSENT_SENTENCE = "i watch this 3d movie"


@dataclass(frozen=True)
class SentenceTrigger:
    sentence: str = ADDSENT_SENTENCE
    where: str = "random"
    name: str = "addsent"

    def apply(self, text: str, rng: np.random.Generator) -> TriggeredText:
        return insert_pieces(text, [words_of(self.sentence)], self.where, rng)
