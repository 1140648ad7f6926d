"""Building the span check on T(x') that ``frs certify --span-check`` and the service's ``span_check`` name
(extensions of FRS, not the paper's method): one function, so that the CLI and the fuzzing workers build the same
check from the same options.

- ``fluency``: :class:`~frs_ray.fuzzing.fluency.FluencySpanFilter` (keep a span whose deletion makes the text more
  fluent to a causal LM);
- ``transplant``: :func:`~frs_ray.fuzzing.calibration.build_transplant_filter` (keep a span that sends clean
  references of other labels to the input's label; calibrated on clean data unless a threshold is given);
- ``fluency+transplant``: :class:`~frs_ray.fuzzing.union.AnySpanFilter` of the two (keep a span either keeps).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

SPAN_CHECKS = ("none", "fluency", "transplant", "fluency+transplant")


def build_span_check(
    clf,
    kind: str,
    checkpoint: str,
    threshold: float | None = None,
    fluency_threshold: float | None = None,
    lm: str = "smollm2",
    data: str | None = None,
    m: int | None = None,
    device: str | None = None,
    keep_checks: bool = False,
    grow: int = 0,
    combine: str = "each",
    length_strata: tuple[int, ...] = (),
):
    """The span check ``kind`` for ``clf`` (an :class:`~frs_ray.certify.smooth.FRSClassifier` loaded from
    ``checkpoint``), or None for ``none``. ``threshold``: the check's own threshold for ``fluency`` and
    ``transplant`` (fluency default 0; transplant default: calibrated); for ``fluency+transplant`` it is the
    transplant check's and ``fluency_threshold`` (default 0) the fluency check's. ``data``, ``m``: the transplant
    check's clean data and references per span (defaults: the dev split beside the checkpoint's training data;
    calibrated); ``grow``: tokens a transplant span may grow by while that raises its score
    (:mod:`frs_ray.fuzzing.growth`; default 0); ``combine``, ``length_strata``: see
    :func:`~frs_ray.fuzzing.calibration.build_transplant_filter`."""
    if kind not in SPAN_CHECKS:
        raise ConfigError(f"span check must be one of {', '.join(SPAN_CHECKS)}, got {kind!r}")
    if kind == "none":
        return None
    fluency = transplant = None
    if kind in ("fluency", "fluency+transplant"):
        from ..backends.lm import load_lm, resolve_lm
        from .fluency import FluencySpanFilter

        t = threshold if kind == "fluency" else fluency_threshold
        fluency = FluencySpanFilter(
            load_lm(str(resolve_lm(lm)), device, 32, 256), 0.0 if t is None else t, keep_checks=keep_checks
        )
    if kind in ("transplant", "fluency+transplant"):
        from ..smoothing.finetune import read_meta
        from .calibration import build_transplant_filter, clean_data_for

        clean = clean_data_for(read_meta(checkpoint)["data"].get("source"), data)
        if combine == "joint" and clf.config.fuzzing.num_spans < 2:
            raise ConfigError(
                "transplant: combine joint transplants the spans of T(x') together and needs fuzzing.num_spans >= 2, "
                f"got {clf.config.fuzzing.num_spans}"
            )
        transplant = build_transplant_filter(
            clf,
            clean,
            m=m,
            threshold=threshold,
            keep_checks=keep_checks,
            grow=grow,
            combine=combine,
            length_strata=tuple(length_strata),
        )
    if fluency is not None and transplant is not None:
        from .union import AnySpanFilter

        return AnySpanFilter([fluency, transplant], names=["fluency", "transplant"], keep_checks=keep_checks)
    return fluency if fluency is not None else transplant


def describe_span_check(check: Any) -> str:
    """One line saying which check runs with which settings (the CLI prints it)."""
    if check is None:
        return "span check: none"
    members = getattr(check, "members", [check])
    parts = []
    for c in members:
        if hasattr(c, "calibration"):
            cal = c.calibration
            thr = (
                f"thresholds {' / '.join(f'{t:.4f}' for t in c.thresholds)} for spans of up to "
                f"{', '.join(map(str, c.length_strata))} and more tokens"
                if getattr(c, "length_strata", ())
                else f"threshold {c.threshold:.4f}"
            )
            parts.append(
                f"transplant ({thr}, m {c.m}"
                + (f", spans grow by up to {c.grow} tokens" if getattr(c, "grow", 0) else "")
                + (
                    f", calibrated on {cal.n_texts} clean texts of {cal.source}, clean keep rate {cal.clean_keep_rate:.3f}"
                    if cal
                    else ""
                )
                + ")"
            )
        else:
            parts.append(f"fluency (threshold {c.threshold:g})")
    return "span check: " + " or ".join(parts)


__all__ = ["SPAN_CHECKS", "build_span_check", "describe_span_check"]
