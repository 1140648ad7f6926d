"""Fuzzed text randomization (Sec. 4.3): MCTS search for vulnerable spans, then span-weighted randomization."""

from .mcts import FuzzResult, MCTSFuzzer, Span, kl_deviation, mutate_segment, running_mean_update, ucb_score
from .randomize import (
    FuzzedRandomizer,
    Randomization,
    allocate_omegas,
    apply_mutations,
    bernoulli_draws,
    span_distance_bound,
    token_weights,
    within_distance,
)

__all__ = [
    "FuzzResult",
    "FuzzedRandomizer",
    "MCTSFuzzer",
    "Randomization",
    "Span",
    "allocate_omegas",
    "apply_mutations",
    "bernoulli_draws",
    "kl_deviation",
    "mutate_segment",
    "running_mean_update",
    "span_distance_bound",
    "token_weights",
    "ucb_score",
    "within_distance",
]
