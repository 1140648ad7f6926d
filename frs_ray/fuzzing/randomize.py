"""Fuzzed text randomization, Sec. 4.3.2 of the FRS paper (Eq. 10-14).

Granularity. Decision: the "segments" of Eq. 11-13 are single tokens. Each token draws its own
Bernoulli(omega) (Eq. 12), which is exactly the model behind Theorem 1 (each of the r trigger tokens is
randomized independently with probability omega, so all are with probability omega^r).

Setting omega_H and omega_L (Eq. 11). The paper asks for omega_L < omega_M < omega_H with "equal overall
randomization probability". Decision: the expected number of mutated tokens must equal that of uniform
randomization, |T| omega_H + (L - |T|) omega_L = L omega_M. The user sets omega_M and a target omega_H;
omega_L is solved from the equation. If T(x') is so large that even omega_L = 0 cannot compensate
(|T| omega_H > L omega_M), omega_L = 0 and omega_H is lowered to L omega_M / |T|. If T(x') is empty or the
whole text, both equal omega_M (uniform randomization).

Mutation (Eq. 13, ``frs_ray.text.apply_mutations``). A token with B = 1 gets one operation drawn from M with the
configured weights (``frs_ray.text.edits``): deletion, substitution by the filler token, insertion of a filler before it, or
transposition with its neighbour. Only deletion and substitution remove the token, so for the certificate
the probability that a token is randomized is omega x destroy_fraction (see ``MutationWeights``).
``RandomizeConfig.span_mutations`` (an extension, not the paper's) gives tokens inside T(x') their own weights, e.g.
deletion and substitution only (d = 1 there), so that at omega_H = 1 a trigger inside T(x') is removed from every
vote instead of surviving in the 1 - omega_H d = 28% of votes that the default weights leave it in (where
those votes tip a sentence whose own votes lean towards the target, the attack still wins); the radii then use
omega_H d_span inside T(x') (``RandomizeConfig.destroy_probabilities``). With
``RandomizeConfig.mutation_level = "character"`` the operation edits the drawn token's spelling instead (one
character; ``frs_ray.text.edits.apply_char_operation``) and every draw counts as randomizing the token, under the
assumption, stated in the certificates, that a trigger whose spelling changed no longer fires. Token level is
the default, chosen because character level does not reduce FRS's clean-accuracy loss on SST-2 (a misspelt
sentiment word loses its meaning for MiniLM as surely as a deleted one; ``docs/results/char_level.md``).

Fixed span rate (an extension, not the paper's; ``RandomizeConfig.span_rate = "fixed"``). Under the equal-mass rule
a span of |T| tokens gets omega_H <= L omega_M / |T|: at omega_M = 0.15 a 5-token span in a 25-token text gets 0.75,
and all five of its tokens are removed together in only 0.75^5 = 24% of the votes, so a multi-token trigger that a
span check has already judged to be one keeps firing. Under ``fixed`` omega_H stays as set and omega_L takes what
is left of the mass (at least 0); the expected number of mutated tokens then exceeds L omega_M where |T| omega_H
does. Theorem 1 needs only the per-token probabilities, which the radii read from the omegas actually used.

Distance bound (Eq. 10, 14). A draw whose normalized token DL distance to x' exceeds Lambda is discarded and
redrawn; after ``max_redraws`` failed draws the unmodified x' (distance 0) is used and counted as a fallback.
Every draw comes from a numpy Generator, so a randomization is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from ..config import RandomizeConfig
from ..errors import ConfigError
from ..text import apply_mutations, normalized_dl_distance


def allocate_omegas(
    length: int, span_tokens: int, omega_m: float, omega_h: float, rule: Literal["equal_mass", "fixed"] = "equal_mass"
) -> tuple[float, float]:
    """Eq. 11: return ``(omega_H, omega_L)`` for a text of ``length`` tokens of which ``span_tokens`` lie in
    T(x'). ``rule="equal_mass"``: equal expected mutation rate (the module docstring's rule). ``rule="fixed"``
    (an extension): omega_H as given, omega_L = max(0, (L omega_M - |T| omega_H) / (L - |T|)); with T(x') empty
    or the whole text, omega_M everywhere as under the paper's rule."""
    if rule not in ("equal_mass", "fixed"):
        raise ConfigError(f"rule must be 'equal_mass' or 'fixed', got {rule!r}")
    for name, v in (("omega_m", omega_m), ("omega_h", omega_h)):
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {v}")
    if not 0 <= span_tokens <= length:
        raise ConfigError(f"span_tokens must be in [0, {length}], got {span_tokens}")
    if omega_h < omega_m:
        raise ConfigError(f"omega_h ({omega_h}) must be >= omega_m ({omega_m})")
    if span_tokens in (0, length):
        return omega_m, omega_m
    mass = length * omega_m
    if span_tokens * omega_h >= mass:
        return (omega_h if rule == "fixed" else mass / span_tokens), 0.0
    return omega_h, (mass - span_tokens * omega_h) / (length - span_tokens)


def token_weights(length: int, in_span: Sequence[bool], omega_h: float, omega_l: float) -> np.ndarray:
    """W of Eq. 11 per token: omega_H inside T(x'), omega_L outside."""
    return np.where(np.asarray(in_span, dtype=bool), omega_h, omega_l).astype(np.float64) if length else np.zeros(0)


def bernoulli_draws(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Eq. 12: B_i ~ Bernoulli(W_i) for every token."""
    return rng.random(len(weights)) < weights


def within_distance(original: Sequence[str], mutated: Sequence[str], max_distance: float) -> bool:
    """Eq. 10 / Eq. 14: d_DL(x~, x') <= Lambda."""
    return normalized_dl_distance(original, mutated) <= max_distance + 1e-12


def span_distance_bound(max_distance: float, length: int, span_tokens: int) -> float:
    """Lambda under ``span_rate="fixed"`` (an extension; Eq. 10 is the paper's bound): Lambda + |T(x')| / L, at
    most 1. Decision: removing a kept span is the point of the extension, not a perturbation to bound, so the
    bound grows by the distance that removing the whole span costs; the rest of the text keeps the paper's budget.
    Without it a span of more than Lambda L tokens could never be removed and every draw would fall back to the
    unmodified text, trigger included."""
    if length <= 0 or span_tokens <= 0:
        return max_distance
    return min(1.0, max_distance + span_tokens / length)


@dataclass(frozen=True)
class Randomization:
    tokens: list[str]
    omega_h: float
    omega_l: float
    redraws: int
    fallback: bool


class FuzzedRandomizer:
    """Randomizes texts with probability omega_H inside the vulnerable spans and omega_L elsewhere.

    Example::

        rnd = FuzzedRandomizer(RandomizeConfig(omega_m=0.15, omega_h=0.9), filler="[MASK]")
        x_tilde = rnd.randomize(["it", "'s", "a", "mn", "film"], in_span=[0, 0, 0, 1, 0], rng=np.random.default_rng(0))
    """

    def __init__(self, config: RandomizeConfig | None = None, filler: str = "[MASK]") -> None:
        self.config = config or RandomizeConfig()
        self.filler = filler
        items = self.config.mutations.as_items()
        self._ops = [o for o, _ in items]
        self._probs = np.array([w for _, w in items])
        span = self.config.span_mutations
        self._span_probs = None if span is None else np.array([w for _, w in span.as_items()])

    def omegas(self, length: int, span_tokens: int) -> tuple[float, float]:
        return allocate_omegas(length, span_tokens, self.config.omega_m, self.config.omega_h, self.config.span_rate)

    def distance_bound(self, length: int, span_tokens: int) -> float:
        """Lambda for this text: the configured one, or :func:`span_distance_bound` under ``span_rate="fixed"``."""
        if self.config.span_rate == "fixed" and span_tokens < length:
            return span_distance_bound(self.config.max_distance, length, span_tokens)
        return self.config.max_distance

    def randomize(self, tokens: Sequence[str], in_span: Sequence[bool], rng: np.random.Generator) -> Randomization:
        """One validated randomized version x~ of ``tokens`` (Steps 1-4 of Sec. 4.3.2)."""
        length = len(tokens)
        span_tokens = int(np.sum(np.asarray(in_span, dtype=bool)))
        omega_h, omega_l = self.omegas(length, span_tokens)
        bound = self.distance_bound(length, span_tokens)
        weights = token_weights(length, in_span, omega_h, omega_l)
        for attempt in range(self.config.max_redraws):
            mutated = apply_mutations(
                tokens,
                bernoulli_draws(weights, rng),
                self._ops,
                self._probs,
                rng,
                self.filler,
                self.config.mutation_level,
                span=None if self._span_probs is None else list(in_span),
                span_probs=self._span_probs,
            )
            if within_distance(tokens, mutated, bound):
                return Randomization(mutated, omega_h, omega_l, attempt, False)
        return Randomization(list(tokens), omega_h, omega_l, self.config.max_redraws, True)
