"""Certification: Clopper-Pearson bound, certified radius (Theorem 1, Corollary 1), CERTIFY protocol."""

from frs_ray.certify.bounds import (
    ABSTAIN,
    SmoothedDecision,
    certified_radius,
    clopper_pearson_lower,
    predict_and_bound,
    radius_gain,
    robustness_condition,
)

__all__ = [
    "ABSTAIN",
    "SmoothedDecision",
    "certified_radius",
    "clopper_pearson_lower",
    "predict_and_bound",
    "radius_gain",
    "robustness_condition",
]
