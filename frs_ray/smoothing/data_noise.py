"""Randomized fine-tuning data, the D_F + eps of Eq. 3 of the FRS paper (opt-in; BMPS alone is the default).

Eq. 3 defines the smoothed model with noise on the fine-tuning data as well as on the test input; BMPS (Sec. 4.2)
replaces the data noise by parameter noise to save K fine-tunes. ``SmoothingConfig.data_noise`` > 0 adds the data
noise back in its cheapest form: the *one* smoothed fine-tune sees every training text re-randomized at every step,
so the voters learn to read texts with some tokens deleted, masked, duplicated-by-filler or swapped, which is what
they read at inference after fuzzed randomization (Eq. 10-14).

Decisions:
- the noise is FTR's own: each word token independently, with probability ``rate``, gets one operation of the
  mutation set M drawn with ``MutationWeights`` (default ins 0.1, del 0.4, sub 0.4, transp 0.1), the filler being
  the model's mask token; no Lambda check (the rate bounds the expected distance);
- uniform over tokens (no fuzzing at training time: the spans MCTS would find depend on the test input);
- a text that would become empty is kept unchanged;
- draws come from a numpy Generator seeded from the fine-tune's seed, so a fine-tune stays reproducible.

Example::

    rng = np.random.default_rng(0)
    randomize_training_text("a gorgeous , witty film .", 0.25, rng, filler="[MASK]")
"""

from __future__ import annotations

import numpy as np

from ..config import MutationWeights
from ..text import apply_mutations, render, tokenize


def randomize_training_text(
    text: str, rate: float, rng: np.random.Generator, filler: str, weights: MutationWeights | None = None
) -> str:
    """One draw of x (+) eps for a fine-tuning text (Eq. 3): each token mutated with probability ``rate``."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"data noise rate must be in [0, 1), got {rate}")
    words = [t.text for t in tokenize(text)]
    if rate == 0.0 or not words:
        return text
    items = (weights or MutationWeights()).as_items()
    ops, probs = [op for op, _ in items], np.array([p for _, p in items])
    out = apply_mutations(words, rng.random(len(words)) < rate, ops, probs, rng, filler)
    return render(out) if out else text
