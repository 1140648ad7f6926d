"""STRIP: reject inputs whose prediction survives heavy word replacement (low entropy = likely trojaned).

Papers: Yansong Gao, Change Xu, Derui Wang, Shiping Chen, Damith C. Ranasinghe, Surya Nepal. "STRIP: A Defence
Against Trojan Attacks on Deep Neural Networks." ACSAC 2019; its text variant in Yansong Gao, Yeonjae Kim, Bao
Gia Doan, Zhi Zhang, Gongxuan Zhang, Surya Nepal, Damith C. Ranasinghe, Hyoungshick Kim. "Design and Evaluation of
a Multi-Domain Trojan Detection Method on Deep Neural Networks." IEEE TDSC 2021. An empirical (uncertified)
run-time detector.

For an input x, N perturbed copies replace a share of x's words with words of held-out clean texts; the victim's
plain checkpoint labels every copy, and x's score is the mean Shannon entropy of the N predicted distributions.
A trigger keeps forcing its target label however the rest is replaced, so trojaned inputs have low entropy. The
threshold is the FRR-quantile of the entropies of held-out clean texts; an input scoring below it is rejected.

Decisions (where the papers leave room):

- Rejected inputs get ``vote_label = ABSTAIN``: wrong for CA/PA and never an attack success, like an abstention.
  Accepted inputs get the plain model's label on the unperturbed x. ``radius``/``certified_label`` are ``None``.
- Words are the project's word tokens (punctuation is a token); ``k = max(1, round_half_up(fraction * n))``
  distinct positions of x's n tokens are replaced, by words (tokens with a letter or digit) of ONE donor text drawn
  per copy; donor words are drawn without replacement unless the donor is shorter than k.
- Donors and calibration texts are disjoint seeded samples of ``ctx.train`` (texts with at least one word); when
  it is too small, both shrink in proportion (``describe()`` reports the sizes used).
- Threshold: the empirical quantile ``np.quantile(clean_entropies, frr)`` (numpy's linear interpolation), not the
  normal fit of the ACSAC paper; an input is rejected iff its entropy is strictly below it.
- Entropy in nats (``0 log 0 = 0``). A text without tokens cannot be perturbed: its copies are all
  the empty text.
- Seeding: each text's copies come from a generator seeded by (seed, sha256 of the text), so a text's score does
  not depend on its batch or position, and the calibration texts score the same in ``predict``.
- Cost: ``queries`` = N + 1; ``seconds`` = time of a chunk of 16 inputs (all copies batched) / chunk size.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from typing import Any, Sequence

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from ..certify.certificate import ABSTAIN
from ..config import StrictConfig, build
from ..errors import ConfigError
from ..text.tokens import render, tokenize
from .base import Defense, DefenseContext, DefensePrediction
from .registry import register

CHUNK = 16  # inputs whose copies are classified together (one progress step each)
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


class StripConfig(StrictConfig):
    """Settings of :class:`Strip` (unknown fields are rejected)."""

    n_perturb: int = Field(20, ge=1, le=10_000, description="perturbed copies N per input (queries = N + 1)")
    replace_fraction: float = Field(
        0.3, gt=0.0, le=1.0, description="share of an input's word tokens replaced in each copy by words of a held-out clean text"
    )
    frr: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description="false-rejection rate on clean calibration texts: the threshold is this quantile of their entropies",
    )
    n_calibration: int = Field(
        200, ge=2, le=1_000_000, description="clean texts from ctx.train whose entropies set the threshold"
    )
    n_donors: int = Field(
        200,
        ge=1,
        le=1_000_000,
        description="clean texts from ctx.train (disjoint from the calibration texts) whose words replace the input's",
    )
    seed: int | None = Field(None, description="seed of the text samples and perturbations (default: ctx.seed)")
    batch_size: int = Field(64, ge=1, le=4096, description="texts per classifier forward pass")
    max_length: int | None = Field(
        None, ge=8, le=8192, description="classifier tokens per text (default: the victim's fine-tuning max_length, else 128)"
    )


def replaced_count(n_tokens: int, fraction: float) -> int:
    """Tokens replaced per copy: ``max(1, round_half_up(fraction * n))``, at most n (0 for an empty text)."""
    return 0 if n_tokens == 0 else min(n_tokens, max(1, math.floor(fraction * n_tokens + 0.5)))


def text_rng(seed: int, text: str) -> np.random.Generator:
    """A generator fixed by ``seed`` and the text itself (independent of batch and position)."""
    digest = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed & 0xFFFFFFFF, digest])


def perturb(
    words: Sequence[str], donors: Sequence[Sequence[str]], n_copies: int, fraction: float, rng: np.random.Generator
) -> list[str]:
    """``n_copies`` texts, each ``words`` with :func:`replaced_count` distinct positions replaced by words of
    one randomly drawn donor (a non-empty word list)."""
    k = replaced_count(len(words), fraction)
    copies = []
    for _ in range(n_copies):
        donor = donors[int(rng.integers(len(donors)))]
        new = list(words)
        if k:
            picks = rng.choice(len(donor), size=k, replace=len(donor) < k)
            for pos, j in zip(rng.choice(len(words), size=k, replace=False), picks):
                new[int(pos)] = donor[int(j)]
        copies.append(render(new))
    return copies


def mean_entropy(probs: np.ndarray) -> float:
    """Mean Shannon entropy (nats) of the rows of ``probs`` (one distribution per row; 0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return float(np.mean(-(p * logs).sum(axis=1)))


def entropy_threshold(clean_entropies: Sequence[float], frr: float) -> float:
    """The ``frr``-quantile of the clean entropies (linear interpolation); inputs strictly below are rejected."""
    return float(np.quantile(np.asarray(clean_entropies, dtype=np.float64), frr))


def is_rejected(entropy: float, threshold: float) -> bool:
    """STRIP's decision: an entropy strictly below the threshold marks a (suspected) trojaned input."""
    return entropy < threshold


@register("strip")
class Strip(Defense):
    """STRIP (Gao et al. 2019/2021): abstain on inputs whose label survives random word replacement.

    Args:
        ctx: the defense context; ``ctx.plain_checkpoint`` classifies, ``ctx.train`` gives donors and calibration.
        n_perturb, replace_fraction, frr, n_calibration, n_donors, seed, batch_size, max_length: see
            :class:`StripConfig`.

    Example::

        strip = Strip(ctx, n_perturb=20, frr=0.05)
        [p] = strip.predict(["a gripping cf story ."])
        p.vote_label  # ABSTAIN when the copies' mean entropy is below strip.threshold
    """

    params_model = StripConfig

    name = "strip"
    certified = False

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        self.ctx = ctx
        self.config: StripConfig = build(StripConfig, params)  # type: ignore[assignment]
        cfg = self.config
        self.seed = cfg.seed if cfg.seed is not None else int(ctx.seed)
        pool = [t for t in ctx.train.texts if any(c.isalnum() for c in t)]
        if len(pool) < 3:
            raise ConfigError(f"STRIP needs at least 3 clean training texts with words (ctx.train has {len(pool)})")
        want = cfg.n_calibration + cfg.n_donors
        n_cal = cfg.n_calibration if want <= len(pool) else max(2, len(pool) * cfg.n_calibration // want)
        n_don = min(cfg.n_donors, len(pool) - n_cal)
        picked = random.Random(self.seed).sample(range(len(pool)), n_cal + n_don)
        self.donor_texts = [pool[i] for i in picked[:n_don]]
        self.calibration_texts = [pool[i] for i in picked[n_don:]]
        self.donors = [[t.text for t in tokenize(x) if any(c.isalnum() for c in t.text)] for x in self.donor_texts]
        self.classifier = ctx.plain_classifier(cfg.max_length, batch_size=cfg.batch_size)
        self.calibration_entropies = self._run(self.calibration_texts, "strip calibration")[1]
        self.threshold = entropy_threshold(self.calibration_entropies, cfg.frr)

    def scores(self, texts: Sequence[str]) -> tuple[list[int], list[float]]:
        """Per text: the plain model's label on the unperturbed text, and the mean entropy of its N copies."""
        copies = []
        for x in texts:
            words = [t.text for t in tokenize(x)]
            copies.append(x)
            copies.extend(
                perturb(words, self.donors, self.config.n_perturb, self.config.replace_fraction, text_rng(self.seed, x))
            )
        probs = self.classifier.predict_proba(copies).reshape(len(texts), self.config.n_perturb + 1, -1)
        return [int(np.argmax(p[0])) for p in probs], [mean_entropy(p[1:]) for p in probs]

    def _run(self, texts: Sequence[str], desc: str) -> tuple[list[int], list[float], list[float]]:
        """:meth:`scores` in chunks of :data:`CHUNK` inputs, with per-input seconds and a progress bar."""
        labels: list[int] = []
        ents: list[float] = []
        secs: list[float] = []
        bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not self.ctx.progress)
        for s in range(0, len(texts), CHUNK):
            chunk = texts[s : s + CHUNK]
            started = time.perf_counter()
            lab, ent = self.scores(chunk)
            secs += [(time.perf_counter() - started) / len(chunk)] * len(chunk)
            labels += lab
            ents += ent
            bar.update(len(chunk))
        bar.close()
        return labels, ents, secs

    def describe(self) -> dict[str, Any]:
        ents = np.asarray(self.calibration_entropies)
        calibration = {
            "threshold": self.threshold,
            "n_calibration": len(self.calibration_texts),
            "n_donors": len(self.donors),
            "rejected_share": float(np.mean(ents < self.threshold)),
            "entropy_quantiles": {str(q): float(np.quantile(ents, q)) for q in QUANTILES},
        }
        return {
            **super().describe(),
            **self.config.model_dump(),
            "seed": self.seed,
            "threshold": self.threshold,
            "calibration": calibration,
            "plain_checkpoint": str(self.ctx.plain_checkpoint),
        }

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        texts = list(texts)
        if not texts:
            return []
        labels, ents, secs = self._run(texts, "strip")
        return [
            DefensePrediction(
                vote_label=ABSTAIN if is_rejected(h, self.threshold) else y,
                length_tokens=len(tokenize(x)),
                queries=self.config.n_perturb + 1,
                seconds=sec,
                radius=None,
                certified_label=None,
            )
            for x, y, h, sec in zip(texts, labels, ents, secs)
        ]


__all__ = ["Strip", "StripConfig", "entropy_threshold", "is_rejected", "mean_entropy", "perturb", "replaced_count", "text_rng"]
