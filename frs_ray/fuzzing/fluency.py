"""A fluency check on FRS's vulnerable spans T(x') (a :data:`~frs_ray.certify.smooth.SpanFilter`; not in the paper).

A span is kept only if deleting it makes the text more fluent to a causal language model
(:class:`~frs_ray.backends.lm.PerplexityLM`, SmolLM2-135M by default):

    s(span) = log ppl(x') - log ppl(x' without the span) > threshold      (default threshold 0)

s is ONION's suspicion f_i = p0 - p_i (Qi et al., EMNLP 2021) for a whole span, on a log scale (nats per LM token),
so that one threshold fits short and long texts. A rare-word trigger makes a sentence less fluent (s > 0); the
sentiment word MCTS finds in a clean sentence usually does not. A span that is the whole text is kept (nothing is
left to compare). The check is deterministic given x', so a smoothed classifier that uses it is still a fixed
function of x'. Cost: 2 LM sequences per text with a span (x' and x' without it).

Used by the ``frs-fluency`` defense (``frs_ray.defenses.fluency``) and by the service (``span_check: fluency``).

Example::

    from frs_ray.backends.lm import PerplexityLM, resolve_lm
    check = FluencySpanFilter(PerplexityLM(resolve_lm("smollm2")))
    kept = check([(words, spans)])[0]      # the spans of T(x') that hurt fluency
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..text import render
from .mcts import Span


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

    ``checks`` records a :class:`SpanCheck` per text, in the order the texts were seen (unless ``keep_checks`` is
    false, as in a long-running service); ``last_reports`` holds the per-text report of the last call (suspicion,
    kept, LM sequences as ``queries``), which :meth:`FRSClassifier.prepare` copies into the certificate
    (``span_check``, ``queries["span_check"]``)."""

    def __init__(self, lm, threshold: float = 0.0, keep_checks: bool = True) -> None:
        self.lm, self.threshold, self.keep_checks = lm, float(threshold), keep_checks
        self.checks: list[SpanCheck] = []
        self.last_reports: list[dict] = []

    def __call__(self, batch: Sequence[tuple[list[str], list[Span]]]) -> list[list[Span]]:
        t0 = time.perf_counter()
        seqs: list[str] = []
        index: list[list[tuple[int, int]]] = []  # per text: (position of x', position of x' without span) per span
        for words, spans in batch:
            rests = [words[: sp.token_start] + words[sp.token_end :] for sp in spans]
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
        out, reports = [], []
        for (words, spans), pairs in zip(batch, index):
            kept, first = [], None
            for sp, (i_full, i_rest) in zip(spans, pairs):
                s = math.inf if i_full < 0 else span_suspicion(float(ppl[i_full]), float(ppl[i_rest]))
                first = s if first is None else first
                if s > self.threshold:
                    kept.append(sp)
            n_seq = len({i for p in pairs for i in p if i >= 0})
            suspicion = None if first is None or not math.isfinite(first) else round(first, 5)
            if self.keep_checks:
                self.checks.append(SpanCheck(suspicion, bool(kept), n_seq, dt))
            reports.append(
                {"name": "fluency", "suspicion": suspicion, "kept": len(kept), "queries": n_seq, "threshold": self.threshold}
            )
            out.append(kept)
        self.last_reports = reports
        return out


__all__ = ["FluencySpanFilter", "SpanCheck", "span_suspicion"]
