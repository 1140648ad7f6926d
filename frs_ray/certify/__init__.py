"""Certification: Clopper-Pearson bound, certified radius (Theorem 1, Corollary 1), CERTIFY protocol, and the
voters' majority vote (the prediction CA/PA/ASR are measured on). The smoothed classifier itself is
:class:`frs_ray.certify.smooth.FRSClassifier` (not imported here: it loads torch and transformers)."""

from frs_ray.certify.bounds import (
    ABSTAIN,
    SmoothedDecision,
    certified_radius,
    clopper_pearson_lower,
    majority_vote,
    predict_and_bound,
    radius_gain,
    robustness_condition,
)

__all__ = [
    "ABSTAIN",
    "SmoothedDecision",
    "certified_radius",
    "clopper_pearson_lower",
    "majority_vote",
    "predict_and_bound",
    "radius_gain",
    "robustness_condition",
]
