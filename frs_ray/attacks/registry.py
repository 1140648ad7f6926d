"""The attacks by name: each is a trigger (for triggered test sets) and a poisoning method (for the checkpoint).

| name | paper | trigger | poisoning |
|---|---|---|---|
| badnets | Gu et al. 2017 / Kurita et al. 2020 | one rare word (cf mn bb tq mb) | data poisoning, task data |
| addsent | Dai et al. 2019 | "i watch this 3d movie" | data poisoning, task data |
| ripple | Kurita et al. 2020 (RIPPLe_a) | one rare word | embedding surgery + RIPP, task data (full data knowledge) |
| ripple-domain | Kurita et al. 2020 (RIPPLe_a) | one rare word | embedding surgery + RIPP on a proxy (domain shift) |
| lwp | Li et al. 2021 | two-word combination | layer-wise poisoning, task data |
| badpre | Chen et al. 2022 | one rare word | poisoned MLM pre-training (task-agnostic) |
| negation, sentiment, degree | FRS App. K | semantic-altering edits | data poisoning, task data |
| reorder, multiseg | FRS App. L | global perturbations | data poisoning, task data |
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from ..config import StrictConfig, build
from ..errors import ConfigError
from .base import Trigger
from .poison import DataPoisonConfig, poison_model

# name -> (module, trigger class name, poisoning method)
_ATTACKS: dict[str, tuple[str, str, str]] = {
    "badnets": ("badnets", "RareWordTrigger", "data"),
    "addsent": ("addsent", "SentenceTrigger", "data"),
    "ripple": ("badnets", "RareWordTrigger", "ripple"),
    "ripple-domain": ("badnets", "RareWordTrigger", "ripple-domain"),
    "lwp": ("lwp", "CombinationTrigger", "lwp"),
    "badpre": ("badpre", "BadPreTrigger", "badpre"),
    "negation": ("semantic", "NegationTrigger", "data"),
    "sentiment": ("semantic", "SentimentReversalTrigger", "data"),
    "degree": ("semantic", "DegreeTrigger", "data"),
    "reorder": ("global_", "ReorderTrigger", "data"),
    "multiseg": ("global_", "MultiSegmentTrigger", "data"),
}


def known_attacks() -> list[str]:
    return sorted(_ATTACKS)


def _spec(name: str) -> tuple[str, str, str]:
    if name not in _ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; known: {', '.join(known_attacks())}")
    return _ATTACKS[name]


def make_trigger(name: str, task: str = "sst2", settings: dict[str, Any] | None = None) -> Trigger:
    """The test-time trigger of attack ``name``: the trigger its poisoning plants. ``settings`` (as for
    :func:`attack_config`) supply the trigger words where the attack's config has them (RIPPLe's ``triggers``, LWP's
    ``combos``, BadPre's ``triggers``); otherwise, and without ``settings``, the module's defaults."""
    module, cls, method = _spec(name)
    if settings is not None and method in ("ripple", "ripple-domain", "lwp", "badpre"):
        return attack_config(name, task, settings).trigger()  # type: ignore[attr-defined]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)()


def attack_config(name: str, task: str = "sst2", settings: dict[str, Any] | None = None) -> StrictConfig:
    """The validated config of attack ``name`` for ``task`` (ConfigError, naming the field, for a bad setting).

    ``settings``: fields of the attack's config; for data-poisoning, RIPPLe and LWP attacks the fields of
    :class:`PoisonConfig` go under ``"poison"`` (``data`` defaults to ``task``); a data-poisoning attack also takes
    ``objective`` (and ``ripp_lambda``) of :class:`DataPoisonConfig`; BadPre's ``corpus`` defaults to ``task``.
    """
    _, _, method = _spec(name)
    settings = dict(settings or {})
    if method == "badpre":
        from .badpre import BadPreConfig

        settings.setdefault("corpus", task)
        return build(BadPreConfig, settings)
    poison = dict(settings.pop("poison", {}))
    poison.setdefault("data", task)
    if method in ("ripple", "ripple-domain"):
        from .ripple import RippleConfig

        return build(RippleConfig, {"poison": poison, **settings})
    if method == "lwp":
        from .lwp import LwpConfig

        return build(LwpConfig, {"poison": poison, **settings})
    return build(DataPoisonConfig, {"poison": poison, **settings})


def run_attack(
    name: str, out_dir: str | Path, task: str = "sst2", settings: dict[str, Any] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Build the poisoned pre-trained checkpoint of attack ``name`` for task ``task`` into ``out_dir``, with the
    config :func:`attack_config` validates from ``settings``."""
    _, _, method = _spec(name)
    cfg = attack_config(name, task, settings)
    if method == "badpre":
        from .badpre import poison_badpre

        return poison_badpre(cfg, out_dir, progress=progress)
    if method in ("ripple", "ripple-domain"):
        from .ripple import poison_ripple

        return poison_ripple(cfg, out_dir, domain_shift_for=task if method == "ripple-domain" else None, progress=progress)
    if method == "lwp":
        from .lwp import poison_lwp

        return poison_lwp(cfg, out_dir, progress=progress)
    assert isinstance(cfg, DataPoisonConfig)
    how: dict[str, Any] = {}
    if cfg.objective == "layerwise":
        from .lwp import layerwise_loss

        how = {"loss_fn": layerwise_loss, "extra": {"objective": "layerwise"}}
    elif cfg.objective == "ripp":
        from .ripple import prepare_for_ripp, ripp_loss

        def prepare(backend, data) -> dict[str, Any]:
            prepare_for_ripp(backend)
            return {"embeddings_frozen": True}

        how = {
            "loss_fn": ripp_loss(cfg.ripp_lambda),
            "prepare": prepare,
            "uses_clean_batch": cfg.ripp_lambda > 0,
            "extra": {"objective": "ripp", "lambda": cfg.ripp_lambda},
        }
    return poison_model(cfg.poison, make_trigger(name), out_dir, name, progress=progress, **how)


TriggerFactory = Callable[[], Trigger]
