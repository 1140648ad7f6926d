"""Defenses by name: ``@register("onion")`` on a :class:`Defense` subclass, ``build_defense("onion", ctx, **params)``.

Each registered class takes ``(ctx, **params)`` and rejects an unknown or out-of-range parameter with a
:class:`ConfigError` naming it: ``onion``, ``strip``, ``rap``, ``bki``, ``textguard`` and ``frs-fluency`` through
their own pydantic configs; the smoothing defenses (``frs``, ``uniform``, ``ranmask``, the ablations) through
:class:`~frs_ray.config.CertifyConfig` plus their few extra parameters, checked by hand; ``none`` takes none.

Example::

    from frs_ray.defenses.registry import build_defense, known_defenses
    known_defenses()                      # ['onion', 'textguard', ...]
    d = build_defense("textguard", ctx, m=3)
    preds = d.predict(["a gripping story ."])
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..config import CertifyConfig
from ..errors import ConfigError
from .base import Defense, DefenseContext

_REGISTRY: dict[str, type] = {}

# Modules whose import registers the built-in defenses (imported lazily by build_defense / known_defenses so
# that importing the registry alone stays cheap and free of import cycles).
_BUILTIN_MODULES = (
    "frs_ray.defenses.smoothing",
    "frs_ray.defenses.onion",
    "frs_ray.defenses.textguard",
    "frs_ray.defenses.strip",
    "frs_ray.defenses.rap",
    "frs_ray.defenses.fluency",
    "frs_ray.defenses.bki",
    "frs_ray.defenses.transplant",
)


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`Defense` subclass buildable as ``name``."""

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Defense)):
            raise TypeError(f"@register({name!r}) expects a Defense subclass, got {cls!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"defense name {name!r} is already registered to {existing.__qualname__}")
        _REGISTRY[name] = cls
        if "name" not in cls.__dict__:
            cls.name = name  # a subclass registered under its own name (e.g. "no-ftr") must not inherit its parent's
        return cls

    return deco


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a built-in module not present in this checkout
            if exc.name != module:
                raise


def known_defenses() -> list[str]:
    """Names accepted by :func:`build_defense`, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def needs_smoothed(name: str) -> bool:
    """Whether the defense registered as ``name`` reads the BMPS-fine-tuned (smoothed) checkpoint."""
    _load_builtins()
    cls = _REGISTRY.get(name)
    return bool(cls is not None and cls.needs_smoothed)


def uses_voters(name: str) -> bool:
    """Whether the results of the defense registered as ``name`` depend on the smoothed voters (Eq. 5)."""
    _load_builtins()
    cls = _REGISTRY.get(name)
    return bool(cls is not None and cls.uses_voters)


def check_defense_params(name: str, params: dict[str, Any], certify: CertifyConfig) -> None:
    """Raise :class:`ConfigError`, naming the defense and the field, when :func:`build_defense` would reject
    ``params`` (with ``certify`` as ``ctx.certify``); loads no model."""
    _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"unknown defense {name!r}; known defenses: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    try:
        cls.check_params(dict(params), certify)
    except ConfigError as exc:
        raise ConfigError(f"defense {name!r}: {exc}") from None


def build_defense(name: str, ctx: DefenseContext, **params: Any) -> Defense:
    """Build the defense registered as ``name`` from ``ctx`` and its parameters."""
    _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"unknown defense {name!r}; known defenses: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    return cls(ctx, **params)
