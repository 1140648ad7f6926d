"""The union of span checks on T(x') (a :data:`~frs_ray.certify.smooth.SpanFilter`; used by the extension
``frs-fluency-transplant``, not the paper's method).

A span of T(x') is kept when ANY of the member checks keeps it (for example the fluency check, which flags
rare-word triggers, and the transplant check, which flags input-agnostic spans such as a fluent trigger sentence);
it is dropped only when every member drops it. The kept spans come back in the order MCTS ranked them; where a
member returns a span grown from it (the transplant check's ``grow``), the widest such span is kept.

Why it is sound with the certificate: every member is a deterministic function of x' (each member's module says
why), so their union is too; the smoothed classifier stays a fixed function of x', its votes stay i.i.d. given x',
and Theorem 1 holds as for FRS. The certificate lists exactly the kept spans, which are the T(x') its conditional
radius talks about. The union can only keep more spans than a member alone: its share of clean texts that keep a
span is at most the sum of the members' shares (each member is calibrated on its own, on clean data only).

Cost: the members' queries added up (each member reports its own per text in ``last_reports``: the fluency check
its LM sequences, the transplant check its centre-model sequences); the members' reports are recorded in the
certificate's ``span_check`` under ``members``.

Example::

    check = AnySpanFilter([FluencySpanFilter(lm), build_transplant_filter(clf, dev)])
    clf.span_filter = check
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .mcts import Span


def _widest(spans: Sequence[Span]) -> Span:
    """The member span covering the most tokens (ties: the first)."""
    return max(spans, key=lambda k: k.token_end - k.token_start)


class AnySpanFilter:
    """A :data:`~frs_ray.certify.smooth.SpanFilter`: keeps the spans that at least one member check keeps."""

    def __init__(self, members: Sequence[Any], names: Sequence[str] | None = None, keep_checks: bool = True) -> None:
        members = list(members)
        if len(members) < 2:
            raise ConfigError(f"a union of span checks needs at least 2 checks, got {len(members)}")
        names = list(names) if names is not None else [type(m).__name__ for m in members]
        if len(names) != len(members):
            raise ConfigError(f"{len(names)} names given for {len(members)} span checks")
        self.members, self.names, self.keep_checks = members, names, keep_checks
        self.uses_reference = any(getattr(m, "uses_reference", False) for m in members)
        self.last_reports: list[dict[str, Any]] = []
        # per text seen (unless keep_checks is false, as in a long-running service): did each member keep a span
        self.decisions: list[list[bool]] = []

    def __call__(
        self, batch: Sequence[tuple[list[str], list[Span]]], references: Sequence[np.ndarray] | None = None
    ) -> list[list[Span]]:
        batch = [(list(w), list(s)) for w, s in batch]
        kept_by: list[list[list[Span]]] = []
        member_reports: list[list[dict[str, Any]]] = []
        for m in self.members:
            kept_by.append(m(batch, references=references) if getattr(m, "uses_reference", False) else m(batch))
            reports = getattr(m, "last_reports", None)
            if reports is None or len(reports) != len(batch):
                raise ConfigError(f"span check {type(m).__name__} gave no report per text (its last_reports)")
            member_reports.append(list(reports))
        out, reports_out = [], []
        for i, (_, spans) in enumerate(batch):
            member_kept = [kb[i] for kb in kept_by]
            keep = []
            for sp in spans:  # a member may return a span grown from sp: the union keeps the widest of them
                ext = [k for mk in member_kept for k in mk if k.token_start <= sp.token_start and sp.token_end <= k.token_end]
                if ext and _widest(ext) not in keep:
                    keep.append(_widest(ext))
            if self.keep_checks:
                self.decisions.append([bool(mk) for mk in member_kept])
            members = {}
            queries = 0
            for name, mk, reps in zip(self.names, member_kept, member_reports):
                q = int(reps[i]["queries"])
                queries += q
                members[name] = {"kept": len(mk), "queries": q, "report": reps[i]}
            reports_out.append({"name": "any", "kept": len(keep), "queries": queries, "members": members})
            out.append(keep)
        self.last_reports = reports_out
        return out


__all__ = ["AnySpanFilter"]
