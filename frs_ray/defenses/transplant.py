"""FRS with a transplant check on the vulnerable span (``frs-transplant``): an extension of FRS, not the paper's method.

Why. FRS's MCTS (Eq. 6-9) finds the span the centre model's prediction rests on: the trigger on a triggered input,
the sentiment word on a clean one. Randomizing the sentiment word at omega_H costs clean accuracy
(``docs/results/ca_drop_badnets.md``). ``frs-fluency`` keeps CA by keeping only spans that hurt fluency, which lets
a fluent trigger (AddSent's sentence) through (``docs/results/eval.md``). What separates a
trigger from an ordinary strong word is the property that makes it a backdoor: it is input-agnostic.

What. Each span of T(x') is inserted into m clean reference texts whose centre-model label differs from x''s (at
their start and at a fixed random word gap), and the centre model scores them all in one batched call; the span is
kept (omega_H) when the mean rise of P(y | reference + span) over P(y | reference) (``statistic: shift``; or the
share of references flipped to y, ``flip``) exceeds the threshold, else dropped; with no span kept the text is
randomized uniformly (omega_M), i.e. ``uniform`` smoothing for that text. The check is
:class:`~frs_ray.fuzzing.transplant.TransplantSpanFilter`; its module docstring says why it is sound with the
certificate (the check is a deterministic function of x', and the spans it keeps are exactly the T(x') the
conditional radius assumes the trigger lies in).

Calibration (clean data only). References and calibration texts are two disjoint seeded samples of the task's
clean dev split (the ``dev.tsv`` beside the victim's training file; the victim's clean training data if there is
none). The threshold is set so that at most ``target_keep`` (5%) of clean calibration texts keep a span, m is the
smallest of ``m_grid`` whose threshold stays <= ``max_threshold``; both are in ``describe()`` and in each
certificate. With ``calibration: ca_cost`` the threshold is then chosen again by what the keeps cost: the lowest
threshold from which every higher one costs at most ``max_ca_cost`` of clean accuracy on the (labelled, clean)
calibration texts against uniform randomization (:func:`~frs_ray.fuzzing.calibration.calibrate_ca_cost`). No
triggered text is ever given to the calibration.

Radius reported: the conditional one (omega_H) where a span is kept, else the unconditional one (omega_M).
Cost: ``len(positions) * m`` centre-model queries per span per input (counted in ``queries``), plus the one-off
calibration (``describe()["transplant_calibration"]["queries"]``, not per input).

Parameters (``build_defense("frs-transplant", ctx, ...)``): ``m``, ``threshold`` (None: calibrated),
``statistic``, ``positions``, ``target_keep``, ``m_grid``, ``max_threshold``, ``n_references``,
``n_calibration``, ``references`` (a text file of references instead of the dev sample), ``grow`` and ``min_gain``
(grow each span while that raises its score: :mod:`frs_ray.fuzzing.growth`), ``combine`` (``joint``: also check
all spans of T(x') together, for combination triggers), ``length_strata`` (one threshold per span-length stratum:
:mod:`frs_ray.fuzzing.strata`), plus every FRS parameter.

Example::

    d = build_defense("frs-transplant", ctx)
    d.predict(["a gripping cf story ."])  # "cf" sends negative references to positive: kept
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..backends.lm import load_lm, resolve_lm
from ..config import StrictConfig, build
from ..errors import ConfigError
from ..fuzzing.calibration import build_transplant_filter, clean_data_for
from ..fuzzing.fluency import FluencySpanFilter
from ..fuzzing.strata import check_edges
from ..fuzzing.union import AnySpanFilter
from .base import DefenseContext
from .registry import register
from .smoothing import FRS


class TransplantConfig(StrictConfig):
    """The span check of ``frs-transplant`` (unknown fields are rejected)."""

    m: int | None = Field(None, ge=1, le=512, description="references per span (None: calibrated from m_grid)")
    threshold: float | None = Field(
        None,
        allow_inf_nan=False,
        description="keep a span when its score exceeds "
        "this (None: calibrated on clean dev data to keep at most target_keep of clean texts)",
    )
    statistic: Literal["shift", "flip"] = Field("shift", description="mean rise of P(y) or share flipped to y")
    positions: list[Literal["start", "random"]] = Field(["start", "random"], min_length=1, max_length=2)
    target_keep: float = Field(0.05, ge=0, lt=1, description="share of clean calibration texts allowed to keep a span")
    m_grid: list[int] = Field([4, 8, 16], min_length=1, description="m values the calibration tries (smallest first)")
    max_threshold: float = Field(0.8, gt=0, le=1, description="largest calibrated threshold accepted for an m")
    n_references: int = Field(200, ge=1, description="clean dev texts in the reference pool")
    n_calibration: int = Field(100, ge=20, description="other clean dev texts the threshold is calibrated on")
    references: str | None = Field(None, description="a text file of reference texts instead of the dev sample")
    calibration: Literal["keep", "ca_cost"] = Field(
        "keep",
        description="how the threshold is calibrated on clean dev data: 'keep' (at most target_keep of clean texts "
        "keep a span) or 'ca_cost' (the lowest threshold whose kept spans cost at most max_ca_cost of clean accuracy "
        "against uniform randomization; certifies the calibration texts twice)",
    )
    max_ca_cost: float = Field(0.01, ge=0, lt=1, description="'ca_cost' calibration: clean accuracy the keeps may cost")
    grow: int = Field(
        0,
        ge=0,
        le=64,
        description="grow each top span by up to this many adjacent tokens while each raises its transplant score by "
        "more than min_gain, before it is checked (0: no growth; frs_ray.fuzzing.growth)",
    )
    min_gain: float = Field(0.01, ge=0, le=1, allow_inf_nan=False, description="growth: score a token must add")
    combine: Literal["each", "joint"] = Field(
        "each",
        description="'each': every span of T(x') is checked alone; 'joint': the words of all its spans are also "
        "transplanted together and every span is kept when that passes (for triggers that are word combinations, "
        "e.g. LWP; needs fuzzing.num_spans >= 2)",
    )
    length_strata: list[int] = Field(
        [],
        max_length=16,
        description="one calibrated threshold per span-length stratum, given by the longest span (tokens) of each "
        "stratum but the last: [1, 3] is 1 token, 2-3, 4 or more (so that a short trigger is not held to the bar a "
        "decisive clean clause sets; frs_ray/fuzzing/strata.py); []: one threshold",
    )


def clean_dev_of(ctx: DefenseContext):
    """The task's clean dev split beside the victim's (clean) training file, else that training data itself."""
    try:
        return clean_data_for(str(ctx.train.source))
    except ConfigError:
        return ctx.train


@register("frs-transplant")
class FRSTransplant(FRS):
    """FRS whose T(x') keeps only spans that behave like a trigger when transplanted (see the module docstring;
    an extension, not the paper's method)."""

    settings_model: type[TransplantConfig] = TransplantConfig  # the check's settings (check_extra builds it)
    extra_params = tuple(TransplantConfig.model_fields)

    @classmethod
    def check_extra(cls, extra: dict[str, Any]) -> TransplantConfig:
        t = build(cls.settings_model, extra)
        if any(m < 1 for m in t.m_grid):
            raise ConfigError(f"{cls.name}: m_grid must hold integers >= 1, got {t.m_grid}")
        return t

    def _adjust(self, cfg: dict, extra: dict) -> dict:
        self.transplant = self.check_extra(extra)
        n_spans = (cfg.get("fuzzing") or {}).get("num_spans", 1)
        if self.transplant.combine == "joint" and n_spans < 2:
            raise ConfigError(
                f"{self.name}: combine: joint transplants the spans of T(x') together and needs fuzzing.num_spans >= 2, "
                f"got {n_spans}"
            )
        t = self.transplant
        check_edges(t.length_strata)
        if t.length_strata and (t.threshold is not None or t.calibration != "keep"):
            raise ConfigError(
                f"{self.name}: length_strata calibrates one threshold per span-length stratum with calibration: keep; "
                "it takes no threshold and no calibration: ca_cost"
            )
        return cfg

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        super().__init__(ctx, **params)
        t = self.transplant
        self.clean = clean_dev_of(ctx)
        self.filter = build_transplant_filter(
            self.clf,
            self.clean,
            m=t.m,
            threshold=t.threshold,
            statistic=t.statistic,
            positions=t.positions,
            target_keep=t.target_keep,
            m_grid=t.m_grid,
            max_threshold=t.max_threshold,
            n_references=t.n_references,
            n_calibration=t.n_calibration,
            references=t.references,
            rule=t.calibration,
            max_ca_cost=t.max_ca_cost,
            grow=t.grow,
            min_gain=t.min_gain,
            combine=t.combine,
            length_strata=t.length_strata,
        )
        self.clf.span_filter = self.filter

    # predict: FRS's. Its queries are the certificate's, which include queries["span_check"]; the check's time is
    # inside the certificate's seconds["randomize"] (it runs between the fuzzing and the randomization).

    def describe(self) -> dict[str, Any]:
        checks = self.filter.checks
        cal = self.filter.calibration
        return {
            **super().describe(),
            "transplant": self.transplant.model_dump(),
            "transplant_settings": self.filter.settings(),
            "transplant_calibration": None if cal is None else cal.to_dict(),
            "spans_kept": float(np.mean([c.kept for c in checks])) if checks else None,
            # per input, in the order predicted (frs eval: the clean inputs, then the triggered ones): centre
            # label y, the top span's mean shift in P(y) and flip share, kept or not, the joint score (combine: joint),
            # the top span's length in tokens (after growth)
            "checks_fields": ["label", "shift", "flip", "kept", "joint", "length"],
            "checks": [
                [
                    c.label,
                    c.shifts[0] if c.shifts else None,
                    c.flips[0] if c.flips else None,
                    c.kept,
                    c.joint,
                    c.lengths[0] if c.lengths else None,
                ]
                for c in checks
            ],
        }


class FluencyTransplantConfig(TransplantConfig):
    """The span checks of ``frs-fluency-transplant``: the transplant check's fields plus the fluency check's
    (prefixed ``fluency_`` where a name would clash)."""

    fluency_threshold: float = Field(
        0.0, allow_inf_nan=False, description="fluency check: keep a span when log ppl(x') - log ppl(x' without it) exceeds this"
    )
    lm: str = Field("smollm2", description="fluency check: 'smollm2' or a local causal-LM folder")
    lm_batch_size: int = Field(32, ge=1, le=4096, description="fluency check: LM sequences per padded forward pass")


@register("frs-fluency-transplant")
class FRSFluencyTransplant(FRSTransplant):
    """FRS whose T(x') keeps a span when the fluency check OR the transplant check keeps it (an extension, not the
    paper's method; :class:`~frs_ray.fuzzing.union.AnySpanFilter`).

    Why: the two checks miss different triggers on SST-2 (``docs/results/transplant.md``): fluency drops a fluent
    trigger sentence (AddSent), transplant drops rare-word triggers whose single insertion barely moves the centre
    model (RIPPLe_a, LWP). Each check is calibrated as it is alone (fluency: its fixed threshold; transplant: on
    clean dev data only), so at most the sum of their clean keep rates keeps a span. Radius: the conditional one
    where a span is kept, else the unconditional one. Cost: both checks' queries (LM sequences and centre-model
    sequences), counted in the certificate's ``queries["span_check"]``."""

    settings_model = FluencyTransplantConfig
    extra_params = tuple(FluencyTransplantConfig.model_fields)

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        super().__init__(ctx, **params)
        t = self.transplant
        lm = load_lm(str(resolve_lm(t.lm)), ctx.device, t.lm_batch_size, 256)
        self.fluency_filter = FluencySpanFilter(lm, t.fluency_threshold)
        self.transplant_filter = self.filter
        self.union = AnySpanFilter([self.fluency_filter, self.transplant_filter], names=["fluency", "transplant"])
        self.clf.span_filter = self.union

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        flu = self.fluency_filter.checks
        # per input, in the order predicted: the transplant check's [label, shift, flip, kept], then the fluency
        # check's suspicion and kept, then the union's kept
        d["checks_fields"] = ["label", "shift", "flip", "transplant_kept", "fluency_suspicion", "fluency_kept", "kept"]
        d["checks"] = [row[:4] + [f.suspicion, f.kept, bool(row[3] or f.kept)] for row, f in zip(d["checks"], flu)]
        d["spans_kept"] = float(np.mean([r[-1] for r in d["checks"]])) if d["checks"] else None
        d["spans_kept_by"] = {
            "fluency": float(np.mean([f.kept for f in flu])) if flu else None,
            "transplant": float(np.mean([c.kept for c in self.transplant_filter.checks])) if flu else None,
        }
        return d
