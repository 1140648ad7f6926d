"""Certification: Clopper-Pearson bound, certified radius (Theorem 1, Corollary 1), CERTIFY protocol, and the
voters' majority vote (the prediction CA/PA/ASR are measured on), and the result type :class:`Certificate`
(:mod:`frs_ray.certify.certificate`). The smoothed classifier itself is
:class:`frs_ray.certify.smooth.FRSClassifier` (not imported here: it loads torch and transformers)."""

from frs_ray.certify.bounds import (
    SmoothedDecision,
    certified_radius,
    clopper_pearson_lower,
    majority_vote,
    predict_and_bound,
    radius_gain,
    robustness_condition,
)
from frs_ray.certify.certificate import ABSTAIN, Certificate, Radii, Radius, VulnerableSpan

__all__ = [
    "ABSTAIN",
    "Certificate",
    "Radii",
    "Radius",
    "SmoothedDecision",
    "VulnerableSpan",
    "certified_radius",
    "clopper_pearson_lower",
    "majority_vote",
    "predict_and_bound",
    "radius_gain",
    "robustness_condition",
]
