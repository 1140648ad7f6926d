"""FRS and the defenses that share its machinery: no defense, uniform and RanMASK-style smoothing, ablations.

All of them are :class:`FRSClassifier` with parts switched off, so they differ only in what the paper varies:

| name | checkpoint | inference noise (Eq. 5) | text randomization | radius reported |
|---|---|---|---|---|
| ``none`` | plain | - | - (one forward pass) | none |
| ``frs`` | BMPS fine-tune (Eq. 4) | checkpoint sigma | fuzzed (MCTS, omega_H / omega_L) | conditional (omega_H, trigger in T(x')) |
| ``uniform`` = ``no-ftr`` | BMPS | checkpoint sigma | uniform omega_M | unconditional (omega_M) |
| ``ranmask`` | plain | none | uniform masking (substitution by [MASK]) at ``mask_rate`` | unconditional |
| ``no-bmps`` | plain | none | fuzzed | conditional |
| ``no-bmps-ft`` | plain | BMPS sigma | fuzzed | conditional |
| ``no-bmps-inf`` | BMPS | none | fuzzed | conditional |

Names: ``no-X`` is the paper's -X ablation (a leading "-" would read as a command-line flag). Decisions: ``no-ftr`` (Table 3) and ``uniform`` are the same defense (FRS without fuzzing, omega_M everywhere) and are
registered under both names. ``ranmask`` follows Zeng et al. (2021, "Certified Robustness to Text Adversarial
Attacks by Randomized [MASK]") in masking tokens of a plain model, but draws each token's mask independently
(Bernoulli) so it shares the Clopper-Pearson certificate of Theorem 1 (substitution-only: every draw destroys the
token), instead of RanMASK's fixed-count masking with a hypergeometric bound. Every radius is in word tokens; FRS's
unconditional radius (omega_L, valid wherever the trigger is) is kept in ``radius_unconditional``.

Parameters (``build_defense(name, ctx, **params)``): any :class:`CertifyConfig` field (``k``, ``alpha``,
``n_estimate``, ``fuzzing``, ``randomize``, ...) over ``ctx.certify``; ``ranmask`` adds ``mask_rate``;
``no-bmps-ft`` adds ``sigma`` (default: the BMPS sigma of the smoothed checkpoint).
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar, Sequence

from ..certify.smooth import FRSClassifier
from ..config import CertifyConfig, build
from ..config import deep_merge as _merge
from ..errors import ConfigError
from ..smoothing.finetune import read_meta
from ..text import tokenize
from .base import Defense, DefenseContext, DefensePrediction
from .registry import register


@register("none")
class NoDefense(Defense):
    """The victim's plain fine-tuned model, one forward pass per input."""

    certified = False

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        if params:
            raise ConfigError(f"defense 'none' takes no parameters, got {sorted(params)}")
        from ..backends.hf import HFClassifier

        self.backend = HFClassifier(
            ctx.plain_checkpoint, max_length=read_meta(ctx.plain_checkpoint)["max_length"], device=ctx.device
        )

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        t0 = time.perf_counter()
        labels = self.backend.predict_proba(texts).argmax(axis=1)
        dt = (time.perf_counter() - t0) / max(1, len(texts))
        return [DefensePrediction(int(y), len(tokenize(t)), 1, dt) for t, y in zip(texts, labels)]


class _SmoothingDefense(Defense):
    certified = True
    needs_smoothed = True
    uses_voters = True
    checkpoint: ClassVar[str] = "smoothed"  # "smoothed" | "plain"
    fuzz: ClassVar[bool] = True
    inference_noise: ClassVar[bool] = True
    radius_kind: ClassVar[str] = "conditional"
    extra_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: DefenseContext, **params: Any) -> None:
        extra = {k: params.pop(k) for k in list(params) if k in self.extra_params}
        cfg_dict = _merge(ctx.certify.model_dump(), params)
        cfg_dict["fuzz"] = self.fuzz
        cfg_dict["seed"] = ctx.seed
        cfg_dict = self._adjust(cfg_dict, extra)
        self.config = build(CertifyConfig, cfg_dict)
        ckpt = ctx.smoothed_checkpoint if self.checkpoint == "smoothed" else ctx.plain_checkpoint
        if ckpt is None:
            raise ConfigError(f"defense {self.name!r} needs a BMPS-fine-tuned (smoothed) checkpoint")
        self.sigma = self._sigma(ctx, extra)
        self.clf = FRSClassifier.from_checkpoint(
            ckpt, self.config, device=ctx.device, sigma=self.sigma, span_filter=self._span_filter(ctx)
        )
        self.progress = ctx.progress

    @classmethod
    def check_params(cls, params: dict[str, Any], certify: CertifyConfig) -> None:
        rest = {k: v for k, v in params.items() if k not in cls.extra_params}
        build(CertifyConfig, {**_merge(certify.model_dump(), rest), "fuzz": cls.fuzz})
        cls.check_extra({k: v for k, v in params.items() if k in cls.extra_params})

    @classmethod
    def check_extra(cls, extra: dict[str, Any]) -> Any:
        """The validated :attr:`extra_params` (ConfigError, naming the field, for a bad one)."""
        if extra:
            raise ConfigError(f"defense {cls.name!r}: unknown parameters {sorted(extra)}")
        return None

    def _adjust(self, cfg: dict, extra: dict) -> dict:
        self.check_extra(extra)
        return cfg

    def _sigma(self, ctx: DefenseContext, extra: dict) -> float | None:
        return None if self.inference_noise else 0.0

    def _span_filter(self, ctx: DefenseContext):
        """An optional :data:`~frs_ray.certify.smooth.SpanFilter` on T(x') (``frs-fluency``); none by default."""
        return None

    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        n_spans = self.config.fuzzing.num_spans
        # Decision: evaluation reads each text as the victim's model does, cut to its max_length model tokens
        # (validate=False; encode() truncates). The cut is part of the base classifier, so the certificate stays
        # valid; the serving path rejects over-long texts instead (frs_ray.serving.router).
        return [
            DefensePrediction.from_certificate(c, self.radius_kind, n_spans=n_spans)
            for c in self.clf.certify(list(texts), progress=self.progress, validate=False)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "certified": True,
            "checkpoint": self.checkpoint,
            "fuzz": self.fuzz,
            "inference_sigma": self.clf.pool.spec.sigma,
            "radius": self.radius_kind,
            "certify": json.loads(self.config.model_dump_json()),
        }


@register("frs")
class FRS(_SmoothingDefense):
    """Fuzzed Randomized Smoothing (the paper's method): BMPS in both phases + fuzzed text randomization."""


@register("uniform")
class UniformSmoothing(_SmoothingDefense):
    """FRS without fuzzing: the same K BMPS voters, uniform randomization with omega_M on every token."""

    fuzz = False
    radius_kind = "unconditional"


@register("no-ftr")
class NoFTR(UniformSmoothing):
    """Ablation -FTR of Table 3 (identical to ``uniform``)."""


@register("ranmask")
class RanMask(_SmoothingDefense):
    """RanMASK-style masking smoothing on the plain model (see the module docstring for the difference)."""

    needs_smoothed = False
    checkpoint = "plain"
    fuzz = False
    inference_noise = False
    radius_kind = "unconditional"
    extra_params = ("mask_rate",)

    @classmethod
    def check_extra(cls, extra: dict[str, Any]) -> float:
        rate = float(extra.get("mask_rate", 0.3))
        if not 0 < rate <= 1:
            raise ConfigError(f"ranmask: mask_rate must be in (0, 1], got {rate}")
        return rate

    def _adjust(self, cfg: dict, extra: dict) -> dict:
        rate = self.check_extra(extra)
        cfg["randomize"] = _merge(
            cfg.get("randomize", {}),
            {
                "omega_m": rate,
                "omega_h": max(rate, cfg.get("randomize", {}).get("omega_h", rate)),
                "max_distance": 1.0,
                "mutations": {"insertion": 0.0, "deletion": 0.0, "substitution": 1.0, "transposition": 0.0},
            },
        )
        self.mask_rate = rate
        return cfg


@register("no-bmps")
class NoBMPS(_SmoothingDefense):
    """Ablation -BMPS (Table 3): plain fine-tune, no inference noise, fuzzed randomization kept."""

    needs_smoothed = False
    checkpoint = "plain"
    inference_noise = False


@register("no-bmps-ft")
class NoBMPSFinetune(_SmoothingDefense):
    """Ablation -BMPS(fine-tuning) (Table 6): plain fine-tune, inference-phase voters with the BMPS sigma."""

    checkpoint = "plain"  # still needs_smoothed: its default sigma is the smoothed checkpoint's
    extra_params = ("sigma",)

    @classmethod
    def check_extra(cls, extra: dict[str, Any]) -> float | None:
        if "sigma" not in extra:
            return None
        try:
            sigma = float(extra["sigma"])
        except (TypeError, ValueError):
            raise ConfigError(f"no-bmps-ft: sigma must be a number, got {extra['sigma']!r}") from None
        if not 0 <= sigma <= 1:
            raise ConfigError(f"no-bmps-ft: sigma must be in [0, 1], got {sigma}")
        return sigma

    def _sigma(self, ctx: DefenseContext, extra: dict) -> float | None:
        if "sigma" in extra:
            return self.check_extra(extra)
        if ctx.smoothed_checkpoint is not None:
            return float(read_meta(ctx.smoothed_checkpoint)["config"]["smoothing"]["sigma"])
        return None


@register("no-bmps-inf")
class NoBMPSInference(_SmoothingDefense):
    """Ablation -BMPS(inference) (Table 6): BMPS fine-tune, K identical un-noised voters."""

    inference_noise = False
