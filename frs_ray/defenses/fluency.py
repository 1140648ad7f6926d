"""FRS with a fluency check on the vulnerable span (``frs-fluency``): an extension of FRS, not the paper's method.

Why. FRS's MCTS (Eq. 6-9) scores a span by how much removing it moves the centre model's prediction. On a
triggered input that span is the trigger; on a clean input it is the word the label rests on ("lacks", "bad").
Randomizing that word at omega_H then changes the clean prediction: on SST-2 FRS loses clean accuracy against no
defense, and the sentences it loses are exactly those whose top span is a fluent sentiment word
(``docs/results/ca_drop_badnets.md``). A rare-word trigger (BadNets' cf / mn / bb,
RIPPLe's) is the opposite: it makes the sentence *less* fluent, which is what ONION (Qi et al., EMNLP 2021)
detects with a language model.

What. Before the fuzzed randomization, each span of T(x') is kept only if deleting it makes the text more fluent
to a causal language model (SmolLM2-135M, ONION's perplexity model here, :class:`~frs_ray.backends.lm.PerplexityLM`; the check is
:class:`~frs_ray.fuzzing.fluency.FluencySpanFilter`):

    s(span) = log ppl(x') - log ppl(x' without the span) > threshold      (default threshold 0)

s is ONION's suspicion f_i = p0 - p_i for a whole span, on a log scale (nats per LM token), so that one threshold
fits short and long texts. A dropped span gets omega_L like the rest of the text; with no span kept, T(x') is
empty and the randomization is uniform (omega_M everywhere, :func:`~frs_ray.fuzzing.randomize.allocate_omegas`),
i.e. exactly ``uniform`` smoothing for that text, with the same voters and the same draws.

Decisions:

- A span that is the whole text is kept (nothing is left to compare; FRS's behaviour).
- The check is deterministic given x' (the LM has no randomness), so the smoothed classifier is still a fixed
  function of x' and Theorem 1 holds as for FRS. Radius reported: the conditional one (omega_H, "trigger in the
  kept T(x')") where a span is kept, else the unconditional one (omega_M, valid wherever the trigger is).
- Cost: 2 LM sequences per text (x' and x' without its span), counted in ``queries`` and ``seconds``.
- Limitation, by design: a *fluent* trigger (AddSent's sentence, negation or sentiment words, a reordering)
  does not lower fluency when deleted, so the check drops its span and such inputs get uniform smoothing only.

Results: ``docs/results/eval.md`` (CA drop and ASR against BadNets, RIPPLe_a and AddSent; summary in
``docs/results/notes.md``).

Parameters (``build_defense("frs-fluency", ctx, threshold=0.0, lm="smollm2")``), plus every FRS parameter.

Example::

    d = build_defense("frs-fluency", ctx)
    d.predict(["a gripping cf story ."])  # the span "cf" is kept: deleting it lowers the perplexity
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from ..backends.lm import load_lm, resolve_lm
from ..config import StrictConfig, build
from ..fuzzing.fluency import FluencySpanFilter
from .base import DefenseContext
from .registry import register
from .smoothing import FRS


class FluencyConfig(StrictConfig):
    """The span check of ``frs-fluency`` (unknown fields are rejected)."""

    threshold: float = Field(
        0.0,
        allow_inf_nan=False,
        description="keep a span when log ppl(x') - log ppl(x' "
        "without it) exceeds this (nats per LM token; 0: deleting it makes the text more fluent)",
    )
    lm: str = Field("smollm2", description="perplexity model: 'smollm2' or a local causal-LM folder (as ONION)")
    lm_batch_size: int = Field(32, ge=1, le=4096, description="LM sequences per padded forward pass")


@register("frs-fluency")
class FRSFluency(FRS):
    """FRS whose T(x') keeps only spans that hurt the text's fluency (see the module docstring; not the paper's)."""

    extra_params = ("threshold", "lm", "lm_batch_size")

    @classmethod
    def check_extra(cls, extra: dict[str, Any]) -> FluencyConfig:
        return build(FluencyConfig, extra)

    def _adjust(self, cfg: dict, extra: dict) -> dict:
        self.fluency = self.check_extra(extra)
        return cfg

    def _span_filter(self, ctx: DefenseContext):
        lm = load_lm(str(resolve_lm(self.fluency.lm)), ctx.device, self.fluency.lm_batch_size, 256)
        self.filter = FluencySpanFilter(lm, self.fluency.threshold)
        return self.filter

    # predict: FRS's. The check's LM sequences are in the certificate's queries["span_check"] (its report), its
    # time inside the certificate's seconds["randomize"] (it runs between the fuzzing and the randomization).

    def describe(self) -> dict[str, Any]:
        checks = self.filter.checks
        return {
            **super().describe(),
            "fluency": self.fluency.model_dump(),
            "spans_kept": float(np.mean([c.kept for c in checks])) if checks else None,
        }
