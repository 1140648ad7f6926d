"""FRS with a fluency check on the vulnerable span (``frs-fluency``): an extension of FRS, not the paper's method.

Why. FRS's MCTS (Eq. 6-9) scores a span by how much removing it moves the centre model's prediction. On a
triggered input that span is the trigger; on a clean input it is the word the label rests on ("lacks", "bad").
Randomizing that word at omega_H then changes the clean prediction: measured on SST-2 (K=20, quick profile), FRS
loses 11 points of clean accuracy against no defense, and the sentences it loses are exactly those whose top span
is a fluent sentiment word (``docs/results/ca_drop_badnets.md``). A rare-word trigger (BadNets' cf / mn / bb,
RIPPLe's) is the opposite: it makes the sentence *less* fluent, which is what ONION (Qi et al., EMNLP 2021)
detects with a language model.

What. Before the fuzzed randomization, each span of T(x') is kept only if deleting it makes the text more fluent
to a causal language model (SmolLM2-135M, ONION's perplexity model here, :class:`~frs_ray.defenses.onion.PerplexityLM`):

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

Parameters (``build_defense("frs-fluency", ctx, threshold=0.0, lm="smollm2")``), plus every FRS parameter.

Example::

    d = build_defense("frs-fluency", ctx)
    d.predict(["a gripping cf story ."])  # the span "cf" is kept: deleting it lowers the perplexity
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..config import build
from ..fuzzing import Span
from ..text import render
from .base import DefenseContext, DefensePrediction
from .onion import _load_lm, resolve_lm
from .registry import register
from .smoothing import FRS


class FluencyConfig(BaseModel):
    """The span check of ``frs-fluency`` (unknown fields are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.0, allow_inf_nan=False, description="keep a span when log ppl(x') - log ppl(x' "
                             "without it) exceeds this (nats per LM token; 0: deleting it makes the text more fluent)")
    lm: str = Field("smollm2", description="perplexity model: 'smollm2' or a local causal-LM folder (as ONION)")
    lm_batch_size: int = Field(32, ge=1, le=4096, description="LM sequences per padded forward pass")


@dataclass
class SpanCheck:
    """What the check decided for one text: its top span's suspicion s, whether any span was kept, LM cost."""

    suspicion: float | None
    kept: bool
    lm_queries: int
    seconds: float


def span_suspicion(ppl_text: float, ppl_without: float) -> float:
    """s = log ppl(x') - log ppl(x' without the span) (ONION's f_i on a log scale); > 0: the span hurts fluency."""
    if not (math.isfinite(ppl_text) and math.isfinite(ppl_without)) or ppl_text <= 0 or ppl_without <= 0:
        return 0.0
    return math.log(ppl_text) - math.log(ppl_without)


class FluencySpanFilter:
    """A :data:`~frs_ray.certify.smooth.SpanFilter`: keeps the spans whose deletion lowers the LM's perplexity.

    ``checks`` records a :class:`SpanCheck` per text, in the order the texts were seen."""

    def __init__(self, lm, threshold: float = 0.0) -> None:
        self.lm, self.threshold = lm, float(threshold)
        self.checks: list[SpanCheck] = []

    def __call__(self, batch: Sequence[tuple[list[str], list[Span]]]) -> list[list[Span]]:
        t0 = time.perf_counter()
        seqs: list[str] = []
        index: list[list[tuple[int, int]]] = []  # per text: (position of x', position of x' without span) per span
        for words, spans in batch:
            rests = [words[: sp.token_start] + words[sp.token_end:] for sp in spans]
            full = -1
            if any(rests):
                seqs.append(render(words))
                full = len(seqs) - 1
            pairs = []
            for rest in rests:
                if rest:
                    seqs.append(render(rest))
                    pairs.append((full, len(seqs) - 1))
                else:  # the span is the whole text: kept (s = inf)
                    pairs.append((-1, -1))
            index.append(pairs)
        ppl = self.lm.perplexities(seqs) if seqs else np.zeros(0)
        dt = (time.perf_counter() - t0) / max(1, len(batch))
        out = []
        for (words, spans), pairs in zip(batch, index):
            kept, first = [], None
            for sp, (i_full, i_rest) in zip(spans, pairs):
                s = math.inf if i_full < 0 else span_suspicion(float(ppl[i_full]), float(ppl[i_rest]))
                first = s if first is None else first
                if s > self.threshold:
                    kept.append(sp)
            n_seq = len({i for p in pairs for i in p if i >= 0})
            self.checks.append(SpanCheck(None if first is None or not math.isfinite(first) else round(first, 5),
                                         bool(kept), n_seq, dt))
            out.append(kept)
        return out


@register("frs-fluency")
class FRSFluency(FRS):
    """FRS whose T(x') keeps only spans that hurt the text's fluency (see the module docstring; not the paper's)."""

    extra_params = ("threshold", "lm", "lm_batch_size")

    def _adjust(self, cfg: dict, extra: dict) -> dict:
        self.fluency = build(FluencyConfig, extra)
        return cfg

    def _span_filter(self, ctx: DefenseContext):
        lm = _load_lm(str(resolve_lm(self.fluency.lm)), ctx.device, self.fluency.lm_batch_size, 256)
        self.filter = FluencySpanFilter(lm, self.fluency.threshold)
        return self.filter

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        start = len(self.filter.checks)
        preds = super().predict(texts)
        for p, c in zip(preds, self.filter.checks[start:]):
            p.queries += c.lm_queries
            p.seconds += c.seconds
        return preds

    def describe(self) -> dict[str, Any]:
        checks = self.filter.checks
        return {**super().describe(), "fluency": self.fluency.model_dump(),
                "spans_kept": float(np.mean([c.kept for c in checks])) if checks else None}
