"""The result type of FRS: one text's certificate, shared by the library, ``frs certify`` and the HTTP service.

A certificate carries two labels (the names are the same in every result of the project: this type, the
defenses' :class:`frs_ray.defenses.base.DefensePrediction`, the HTTP answer, ``frs certify``'s JSON and the
reports of ``frs eval`` and Tune):

- ``certified_label``: the class CERTIFY (Cohen et al. 2019) certifies, or :data:`ABSTAIN` when the
  Clopper-Pearson bound is not met (``p_lower <= 0.5``). Only it, with ``p_lower`` and the radii (Theorem 1,
  Corollary 1), carries the guarantee; ``label_name`` names it ('ABSTAIN' when abstained).
- ``vote_label``: the majority vote of all select + estimate votes (:func:`frs_ray.certify.bounds.majority_vote`,
  :data:`ABSTAIN` on a tie): the smoothed classifier's prediction, on which CA / PA / ASR are measured
  (Appendix B.1). It carries no guarantee and can differ from ``certified_label``.

The models are pydantic so the service's OpenAPI schema and the Python client use this very type;
``model_dump()`` (``to_dict()``) gives the JSON ``frs certify`` writes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

ABSTAIN: int = -1
"""The label of an abstention: a certificate whose bound is not met, a tied vote, or a defense that rejects."""

ASSUMPTIONS = {
    "conditional": "valid only if the trigger lies inside the returned spans T(x'); omega = omega_H",
    "unconditional": "valid wherever the trigger is; omega = omega_L",
    "both": "Assumption 1 of the paper (beta = 1); per-token independent randomization; the Lambda discard step is ignored",
    "character": "; character-level mutations: a trigger word whose spelling changed is assumed not to fire",
}
"""What each radius assumes (Theorem 1, Corollary 1), as recorded in every certificate."""

__all__ = ["ABSTAIN", "ASSUMPTIONS", "Certificate", "Radii", "Radius", "VulnerableSpan"]


class VulnerableSpan(BaseModel):
    """One span of T(x') found by the MCTS fuzzing (:meth:`frs_ray.fuzzing.Span.to_dict`)."""

    start: int = Field(description="first character of the span in the text")
    end: int = Field(description="character after the span")
    text: str
    score: float = Field(description="the span's KL score under the centre model")
    tokens: list[int] = Field(description="[first, after-last] word-token index of the span")
    visits: int = Field(description="MCTS visits of the span's node")


class Radius(BaseModel):
    """One certified radius of Theorem 1 (beta = 1)."""

    tokens: int | None = Field(description="certified trigger length in tokens; null when abstained")
    fraction: float | None = Field(description="tokens / text length")
    omega: float = Field(description="per-token probability that a token is removed, used in Theorem 1")
    assumes: str


class Radii(BaseModel):
    """Both radii: conditional (omega_H, the trigger inside T(x')) and unconditional (omega_L, anywhere)."""

    conditional: Radius
    unconditional: Radius
    assumes: str = Field(ASSUMPTIONS["both"], description="what both radii assume")

    def __getitem__(self, kind: str) -> Radius:
        """The radius of one kind, ``"conditional"`` or ``"unconditional"`` (for callers that pick it by name)."""
        if kind not in ("conditional", "unconditional"):
            raise KeyError(kind)
        return getattr(self, kind)


class Certificate(BaseModel):
    """One text's result; ``certified_label`` is ABSTAIN (-1, ``label_name`` 'ABSTAIN') when the bound is not met,
    ``vote_label`` is the majority vote (-1 on a tie); see the module docstring."""

    text: str
    certified_label: int = Field(description="the certified class; -1 (ABSTAIN) when p_lower <= 0.5")
    label_name: str = Field(description="name of certified_label; 'ABSTAIN' when abstained")
    abstained: bool
    votes: list[int] = Field(description="per-class counts of the estimation votes")
    select_votes: list[int] = Field(description="per-class counts of the selection votes")
    p_lower: float = Field(description="Clopper-Pearson lower bound on the certified class's vote share")
    radius: Radii
    spans: list[VulnerableSpan]
    length_tokens: int
    omega_h: float
    omega_l: float
    queries: dict[str, int]
    seconds: dict[str, float] = Field(default_factory=dict)
    vote_label: int = Field(
        ABSTAIN,
        description="majority vote of all select + estimate votes (-1 on a tie); no guarantee: only certified_label is certified",
    )
    sequential: dict[str, Any] | None = Field(
        None,
        description="sequential CERTIFY only (n_max set): estimation votes "
        "spent, looks, the final look's alpha, alpha spent, why it stopped, the "
        "target; null under the fixed protocol",
    )
    span_check: dict[str, Any] | None = Field(
        None,
        description="the span check's report where there is one that gives it (transplant: threshold, m, calibration, scores)",
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of this certificate (what ``frs certify`` writes per text, after its ``index``)."""
        return self.model_dump()
