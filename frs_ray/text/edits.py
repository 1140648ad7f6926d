"""The four Damerau-Levenshtein operations at token level and the normalized DL distance.

The mutation set M of the paper (Sec. 4.3.1 Step 3, Sec. 4.3.2 Step 3) is {insertion, deletion,
substitution, transposition}. Decision (the paper does not say what a mutation inserts or substitutes):
the new token is a *filler* token chosen by the caller, by default the model's mask/unknown token, so that a
mutation removes information without injecting new words (a random vocabulary word could itself be a
trigger such as "cf"). Each operation is one DL edit, so a single mutation moves the text by exactly one
unit of DL distance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rapidfuzz.distance import DamerauLevenshtein

OPERATIONS: tuple[str, ...] = ("insertion", "deletion", "substitution", "transposition")


def apply_operation(tokens: Sequence[str], index: int, op: str, filler: str) -> list[str]:
    """Apply one DL operation at token ``index`` and return the new token list.

    - insertion: put ``filler`` before token ``index``;
    - deletion: remove token ``index``;
    - substitution: replace token ``index`` by ``filler``;
    - transposition: swap token ``index`` with its right neighbour (left one at the end; a no-op on a
      one-token text, which has no neighbour).
    """
    if not 0 <= index < len(tokens):
        raise IndexError(f"token index {index} out of range for {len(tokens)} tokens")
    out = list(tokens)
    if op == "insertion":
        out.insert(index, filler)
    elif op == "deletion":
        del out[index]
    elif op == "substitution":
        out[index] = filler
    elif op == "transposition":
        if len(out) > 1:
            other = index + 1 if index + 1 < len(out) else index - 1
            out[index], out[other] = out[other], out[index]
    else:
        raise ValueError(f"unknown mutation operation {op!r}; expected one of {OPERATIONS}")
    return out


def apply_mutations(tokens: Sequence[str], draws: np.ndarray, ops: Sequence[str], op_probs: np.ndarray,
                    rng: np.random.Generator, filler: str) -> list[str]:
    """Eq. 13 of the FRS paper: mutate each token with B = 1 by an operation drawn from M (``ops`` with
    probabilities ``op_probs``); consolidate into x~. Shared by fuzzed randomization (``frs_ray.fuzzing``) and the
    randomized fine-tuning data (``frs_ray.smoothing.data_noise``).

    Operations are applied right to left so indices of tokens still to process stay valid.
    """
    out = list(tokens)
    for i in sorted(np.flatnonzero(draws).tolist(), reverse=True):
        op = ops[int(rng.choice(len(ops), p=op_probs))]
        if i < len(out):
            out = apply_operation(out, i, op, filler)
    return out


def normalized_dl_distance(a: Sequence[str], b: Sequence[str]) -> float:
    """Normalized Damerau-Levenshtein distance between two token sequences (d_DL of Eq. 1 and 10).

    Unrestricted DL distance (rapidfuzz) divided by the longer length, so it lies in [0, 1]; 0 for two
    empty sequences.
    """
    if not a and not b:
        return 0.0
    return float(DamerauLevenshtein.normalized_distance(list(a), list(b)))
