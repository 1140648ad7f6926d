"""The four Damerau-Levenshtein operations at token level and the normalized DL distance.

The mutation set M of the paper (Sec. 4.3.1 Step 3, Sec. 4.3.2 Step 3) is {insertion, deletion,
substitution, transposition}. Decision (the paper does not say what a mutation inserts or substitutes):
the new token is a *filler* token chosen by the caller, by default the model's mask/unknown token, so that a
mutation removes information without injecting new words (a random vocabulary word could itself be a
trigger such as "cf"). Each operation is one DL edit, so a single mutation moves the text by exactly one
unit of DL distance.

Character level (``level="character"``, an option of the randomization, see ``RandomizeConfig.mutation_level``):
a mutated token gets one character-level DL edit instead (:func:`apply_char_operation`): a random lowercase letter
inserted, one character deleted (a one-character token disappears), one character replaced by a different random
letter, or two adjacent different characters swapped. The paper measures DL distance in characters in its
Appendix K ("not" = 3, "great" -> "awful" = 5) and says FTR should "damage the triggers' dedicated structure while
keeping genuine features intact" (Sec. 4.3): a misspelt rare-word trigger is no longer the trigger, while a
misspelt ordinary word often keeps its meaning for a subword model. Every character edit changes the token's
spelling, so each one "randomizes" the token in the sense of Theorem 1 under the assumption that a trigger whose
spelling changed no longer fires (stated in the certificates).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rapidfuzz.distance import DamerauLevenshtein

OPERATIONS: tuple[str, ...] = ("insertion", "deletion", "substitution", "transposition")
LEVELS: tuple[str, ...] = ("token", "character")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def apply_char_operation(token: str, op: str, rng: np.random.Generator) -> str:
    """One character-level DL edit of ``token`` (the empty string when a one-character token loses its character).

    - insertion: a random lowercase letter at a random position (0..len);
    - deletion: remove a random character;
    - substitution: replace a random character by a different random lowercase letter;
    - transposition: swap a random pair of adjacent, different characters (a substitution where there is none,
      e.g. a one-character token, so that the spelling always changes).
    """
    if op not in OPERATIONS:
        raise ValueError(f"unknown mutation operation {op!r}; expected one of {OPERATIONS}")
    n = len(token)
    if op == "transposition":
        pairs = [j for j in range(n - 1) if token[j] != token[j + 1]]
        if pairs:
            j = pairs[int(rng.integers(len(pairs)))]
            return token[:j] + token[j + 1] + token[j] + token[j + 2 :]
        op = "substitution"
    if op == "insertion" or n == 0:
        j = int(rng.integers(n + 1))
        return token[:j] + LETTERS[int(rng.integers(len(LETTERS)))] + token[j:]
    j = int(rng.integers(n))
    if op == "deletion":
        return token[:j] + token[j + 1 :]
    choices = [c for c in LETTERS if c != token[j].lower()]
    return token[:j] + choices[int(rng.integers(len(choices)))] + token[j + 1 :]


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


def apply_mutations(
    tokens: Sequence[str],
    draws: np.ndarray,
    ops: Sequence[str],
    op_probs: np.ndarray,
    rng: np.random.Generator,
    filler: str,
    level: str = "token",
    span: Sequence[bool] | None = None,
    span_probs: np.ndarray | None = None,
) -> list[str]:
    """Eq. 13 of the FRS paper: mutate each token with B = 1 by an operation drawn from M (``ops`` with
    probabilities ``op_probs``); consolidate into x~. Shared by fuzzed randomization (``frs_ray.fuzzing``) and the
    randomized fine-tuning data (``frs_ray.smoothing.data_noise``).

    ``span_probs`` (with ``span``, a mask over ``tokens``): the operation of a drawn token inside the span is drawn
    with these probabilities instead (``RandomizeConfig.span_mutations``); one draw per mutated token either way, so
    the random stream is the same as without it.

    ``level="token"`` edits the token sequence (:func:`apply_operation`); ``level="character"`` edits the spelling
    of the drawn token (:func:`apply_char_operation`; a token left empty is dropped). Operations are applied right
    to left, and each drawn token's operation is applied to that token wherever it is by then: a transposition of
    the last token swaps it with its left neighbour, which is not yet processed, so positions are tracked rather
    than assumed (otherwise the neighbour's own draw would land on the moved token, and a trigger there would
    escape the operation Theorem 1 counts on).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown mutation level {level!r}; expected one of {LEVELS}")
    if (span is None) != (span_probs is None):
        raise ValueError("span and span_probs go together")
    if span is not None and len(span) != len(tokens):
        raise ValueError(f"span mask has {len(span)} entries for {len(tokens)} tokens")
    out = list(tokens)
    origin: list[int | None] = list(range(len(out)))  # the original index of each entry of out (None: a filler)
    for i in sorted(np.flatnonzero(draws).tolist(), reverse=True):
        probs = span_probs if span is not None and span[i] else op_probs
        op = ops[int(rng.choice(len(ops), p=probs))]
        if i >= len(tokens):
            continue
        at = origin.index(i)
        if level == "token":
            out = apply_operation(out, at, op, filler)
            origin = apply_operation(origin, at, op, None)
        else:
            new = apply_char_operation(out[at], op, rng)
            out = out[:at] + ([new] if new else []) + out[at + 1 :]
            origin = origin[:at] + ([i] if new else []) + origin[at + 1 :]
    return out


def normalized_dl_distance(a: Sequence[str], b: Sequence[str]) -> float:
    """Normalized Damerau-Levenshtein distance between two token sequences (d_DL of Eq. 1 and 10).

    Unrestricted DL distance (rapidfuzz) divided by the longer length, so it lies in [0, 1]; 0 for two
    empty sequences.
    """
    if not a and not b:
        return 0.0
    return float(DamerauLevenshtein.normalized_distance(list(a), list(b)))
