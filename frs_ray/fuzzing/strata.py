"""Span-length strata for the transplant check's threshold (``length_strata``; an extension of FRS used by
``frs-transplant``, not the paper's method).

Why. With one threshold, the clean texts that keep a span are those whose span is a whole decisive clause of 4 or
more tokens ("is a pretty amazing accomplishment ."): inserted into a reference, a clause carries its own
sentiment and moves the reference nearly as much as a trigger does. A rare-word trigger (LWP, RIPPLe_a) is one or
two tokens and, on such victims, moves the references less than the clean clauses do, so the single threshold set
by the clean clauses drops it (``docs/results/transplant_length*.md``). A short clean span moves the references
much less than a short trigger: the strata let each length range have the threshold its own clean spans set.

What. ``edges`` = (e_1 < e_2 < ... < e_{S-1}) split span lengths (in tokens) into S strata: [1, e_1],
(e_1, e_2], ..., (e_{S-1}, inf). A span is kept when its score exceeds its stratum's threshold.

Calibration (:func:`stratified_thresholds`, clean texts only). Text i has, per stratum b it has a span in, its
best span score s_ib there (a joint span counts in the stratum of its length). With n texts and n_b of them having
a stratum-b score, stratum b's threshold is the smallest value that at most floor(q_b * n_b) of its n_b scores
exceed, with q_b = target_keep * n / sum_b n_b. Guarantee on the calibration texts: a text keeps a span only when
one of its scores passes, so at most sum_b floor(q_b * n_b) <= target_keep * n texts keep one: the same bound as
the one-threshold rule (with one span per text sum_b n_b = n and q_b = target_keep). On a new clean text
exchangeable with the calibration ones (one span per text, continuous scores), stratum b's threshold is the
(k_b + 1)-th largest of n_b exchangeable scores, k_b = floor(q_b n_b), so given the strata's counts the new text
keeps its span with probability sum_b p_b (k_b + 1) / (n_b + 1) (p_b: the chance its span falls in stratum b),
which is at most target_keep + sum_b p_b / (n_b + 1), about target_keep + S / n: each stratum costs about one
calibration text's share more than the one-threshold rule's target_keep + 1 / n (a Monte-Carlo test checks the
formula). A stratum with no calibration score gets threshold 1.0: the statistics (a mean rise of a probability, a share) are
at most 1, so nothing of that length is kept.

The strata only change which spans form T(x'); the check stays a deterministic function of x' (the certificate's
argument in :mod:`frs_ray.fuzzing.transplant` holds unchanged).
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np

from ..errors import ConfigError

NEVER = 1.0  # a threshold no statistic exceeds (both are at most 1)


def check_edges(edges: Sequence[int]) -> tuple[int, ...]:
    """``edges`` as a tuple, or a clear error unless they are increasing integers >= 1."""
    out = tuple(edges)
    if any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1 for e in out) or list(out) != sorted(set(out)):
        raise ConfigError(
            "transplant: length_strata must be increasing integers >= 1 (the longest span, in tokens, of each "
            f"stratum but the last; e.g. [1, 3]: 1 token, 2-3, 4 or more), got {list(edges)}"
        )
    return tuple(int(e) for e in out)


def stratum_of(edges: Sequence[int], length: int) -> int:
    """The stratum of a span of ``length`` tokens: 0 for [1, e_1], 1 for (e_1, e_2], ..., len(edges) for the rest."""
    return bisect.bisect_left(edges, length)


def threshold_keeping(values: Sequence[float], keep: float) -> float:
    """The smallest of ``values`` that at most floor(keep * len(values)) of them exceed (the check's quantile rule)."""
    desc = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    k = int(math.floor(keep * len(desc) + 1e-9))
    return float(desc[k]) if k < len(desc) else float(desc[-1])


def stratified_thresholds(best: Sequence[dict[int, float]], n_strata: int, target_keep: float) -> list[float]:
    """One threshold per stratum from clean texts' best scores per stratum (``best[i][b]``; see the module
    docstring): at most ``target_keep`` of the texts have a score above its stratum's threshold."""
    counts = [sum(1 for d in best if b in d) for b in range(n_strata)]
    total = sum(counts)
    if total == 0:
        return [NEVER] * n_strata
    q = target_keep * len(best) / total
    return [threshold_keeping([d[b] for d in best if b in d], q) if counts[b] else NEVER for b in range(n_strata)]


def keep_rate(best: Sequence[dict[int, float]], thresholds: Sequence[float]) -> float:
    """The share of texts with a score above its stratum's threshold."""
    if not best:
        return 0.0
    return float(np.mean([any(s > thresholds[b] for b, s in d.items()) for d in best]))


__all__ = ["NEVER", "check_edges", "keep_rate", "stratified_thresholds", "stratum_of", "threshold_keeping"]
