"""One interface for every defense: texts in, a (possibly abstaining) label and an optional certificate out.

A defense is built from a :class:`DefenseContext` (the victim's checkpoints and clean training data, and a work
folder for anything it must train or cache) and answers :meth:`Defense.predict`. Evaluation treats all defenses
alike through :class:`DefensePrediction`, whose two labels have the names of FRS's
:class:`~frs_ray.certify.certificate.Certificate`:

- ``vote_label``: the defense's prediction, or ``ABSTAIN`` (-1); CA, PA and ASR are measured on it (Appendix
  B.1's ``f(x)``), an abstention is never counted as correct (CA, PA) nor as an attack success (ASR). For the
  smoothing defenses it is the K voters' majority vote (a tie abstains), the certificate's ``vote_label``; for an
  empirical defense, its model's answer after its own rejection rule (STRIP, RAP reject = ABSTAIN).
- ``certified_label``: for certified defenses, the label their certificate guarantees, or ``ABSTAIN`` where the
  bound is not met (FRS: Clopper-Pearson ``p_lower <= 0.5``); ``None`` for empirical defenses. Certified
  accuracy, the radii and the "certified CA / PA" columns use it. It can differ from ``vote_label`` (an abstaining
  certificate over a clear-enough majority, or CERTIFY's selection sample choosing another class).
- ``radius``: the certified radius in word tokens (Damerau-Levenshtein edits of word tokens) within which the
  label is guaranteed, or ``None`` for empirical defenses; ``radius_assumes`` states what the guarantee assumes.
  Certified accuracy at perturbation level p (Table 5) counts an input whose ``certified_label`` is correct and
  whose radius is at least ``p * length_tokens``.
- ``queries``: texts run through a model for this input (fuzzing queries + votes, or perplexity queries + 1).
- ``spans``: character spans the defense flagged as suspicious (FRS's T(x'), ONION's removed words), used for
  the trigger-localization rate.

:meth:`DefensePrediction.from_certificate` is the one conversion of an FRS certificate into a prediction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from ..certify.certificate import Certificate
from ..config import CertifyConfig, StrictConfig, build
from ..data import TextDataset
from ..errors import ConfigError


@dataclass
class DefensePrediction:
    vote_label: int
    length_tokens: int
    queries: int
    seconds: float
    radius: float | None = None
    radius_assumes: str | None = None
    radius_unconditional: float | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)
    certified_label: int | None = None
    # sequential CERTIFY only: the certificate's ``sequential`` record (votes, looks, stop, alpha spent, target)
    sequential: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_certificate(
        cls,
        cert: Certificate,
        radius_kind: Literal["conditional", "unconditional"] = "conditional",
        uniform_fallback: bool = True,
        n_spans: int | None = None,
    ) -> "DefensePrediction":
        """The prediction of an FRS certificate: its ``vote_label`` and ``certified_label``, its cost (all its
        queries and seconds), and a radius.

        ``radius`` is the ``radius_kind`` radius of Theorem 1 (conditional: omega_H, valid if the trigger lies in
        T(x'); unconditional: omega_L, valid wherever it is); with ``uniform_fallback``, the unconditional one wherever T(x') got
        no higher probability than the rest (omega_H == omega_L: no span kept, the span is the whole text, or no
        fuzzing), since the randomization was then uniform. ``radius_unconditional`` is always the unconditional
        radius. ``spans``: the first ``n_spans`` (all when None) spans of T(x') where they were favoured
        (omega_H != omega_L), none otherwise."""
        cond, uncond = cert.radius.conditional, cert.radius.unconditional
        fuzzed = cert.omega_h != cert.omega_l
        main = cond if radius_kind == "conditional" and (fuzzed or not uniform_fallback) else uncond
        spans = cert.spans[:n_spans] if fuzzed else []
        return cls(
            vote_label=cert.vote_label,
            certified_label=cert.certified_label,
            length_tokens=cert.length_tokens,
            queries=int(sum(cert.queries.values())),
            seconds=float(sum(cert.seconds.values())),
            radius=None if main.tokens is None else float(main.tokens),
            radius_assumes=main.assumes,
            radius_unconditional=None if uncond.tokens is None else float(uncond.tokens),
            spans=[(int(s.start), int(s.end)) for s in spans],
            sequential=cert.sequential,
        )


@dataclass
class DefenseContext:
    """What a defense may use. ``plain_checkpoint``: the victim's model fine-tuned without BMPS;
    ``smoothed_checkpoint``: fine-tuned with the fine-tuning phase of BMPS (Eq. 4); ``base_model``: the
    (possibly poisoned) pre-trained model both started from; ``train``: the victim's clean training data."""

    plain_checkpoint: str | Path
    smoothed_checkpoint: str | Path | None
    base_model: str | Path
    train: TextDataset
    work_dir: Path
    certify: CertifyConfig = field(default_factory=CertifyConfig)
    seed: int = 0
    device: str | None = None
    progress: bool = False
    finetune: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig fields the victim used (epochs, lr, ...)

    def plain_classifier(self, max_length: int | None = None, **kwargs: Any):
        """The victim's plain fine-tuned model as an HFClassifier; ``max_length`` defaults to the victim's
        fine-tuning length (``finetune['max_length']``, else 128)."""
        from ..backends.hf import HFClassifier

        length = max_length or int(self.finetune.get("max_length", 128))
        return HFClassifier(self.plain_checkpoint, max_length=length, device=self.device, **kwargs)


class Defense(ABC):
    """Base class: subclasses set ``name`` and ``certified`` and implement :meth:`predict`."""

    name: ClassVar[str]
    certified: ClassVar[bool] = False
    needs_smoothed: ClassVar[bool] = False  # whether it reads ctx.smoothed_checkpoint (the BMPS fine-tune)
    uses_voters: ClassVar[bool] = False  # whether its results depend on the K smoothed voters of Eq. 5
    params_model: ClassVar[type[StrictConfig] | None] = None  # the model of its parameters; None: it takes none

    @classmethod
    def check_params(cls, params: dict[str, Any], certify: CertifyConfig) -> None:
        """Raise :class:`ConfigError`, naming the field, for parameters this defense would reject, without
        loading any model. ``certify``: the shared settings the smoothing defenses start from (``ctx.certify``)."""
        if cls.params_model is not None:
            build(cls.params_model, params)
        elif params:
            raise ConfigError(f"defense {cls.name!r} takes no parameters, got {sorted(params)}")

    @abstractmethod
    def predict(self, texts: Sequence[str]) -> list[DefensePrediction]:
        """One prediction per text, in order."""

    def describe(self) -> dict[str, Any]:
        """Settings that identify this defense's results (recorded in every evaluation cell)."""
        return {"name": self.name, "certified": self.certified}
