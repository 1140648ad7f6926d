"""The look sizes of sequential CERTIFY's geometric schedule, shared by the config check and the procedure.

A plain function low in the layering so that :class:`frs_ray.config.CertifyConfig` can reject a schedule at load
time without importing the certify layer; :meth:`frs_ray.certify.sequential.LookSchedule.geometric` adds the
alpha split.
"""

from __future__ import annotations

import math

from .errors import ConfigError

MAX_LOOKS = 64
"""Most looks a schedule may have: each costs a share of alpha, so more looks only weaken every bound."""


def geometric_sizes(first: int, n_max: int, growth: float) -> tuple[int, ...]:
    """Cumulative votes ``first, ceil(first * growth), ...`` with the last look at exactly ``n_max`` (the first
    size >= ``n_max`` is replaced by ``n_max``; every look adds at least one vote).

    Raises :class:`ConfigError` for ``first < 1``, ``n_max < first``, ``growth <= 1`` or non-finite, or more than
    :data:`MAX_LOOKS` looks.
    """
    if first < 1:
        raise ConfigError(f"first (the first round's votes) must be >= 1, got {first}")
    if n_max < first:
        raise ConfigError(f"n_max must be >= the first round's votes ({first}), got {n_max}")
    if not (growth > 1.0 and math.isfinite(growth)):
        raise ConfigError(f"growth must be a finite number > 1, got {growth!r}")
    sizes = [first]
    while sizes[-1] < n_max:
        if len(sizes) >= MAX_LOOKS:
            raise ConfigError(
                f"first={first}, growth={growth}, n_max={n_max} gives more than {MAX_LOOKS} looks; raise growth or first"
            )
        sizes.append(min(n_max, max(sizes[-1] + 1, math.ceil(sizes[-1] * growth))))
    return tuple(sizes)
