"""The FRS smoothed classifier: fuzzing, fuzzed randomization, K smoothed voters, vote and certificate.

Definition of the smoothed classifier (what the statistics are about). For an input x', let
T(x') be the spans the MCTS fuzzing finds with the centre model (deterministic given x' and the seed). One
*vote* is the pair (k, u): a voter index k drawn uniformly from {0, ..., K-1} (the K fixed voters of Eq. 5)
and a fresh fuzzed randomization u of x' (Eq. 10-14); the vote is f(u(x'); theta_k). The smoothed classifier
is

    g(x') = argmax_y P_{k ~ U{0..K-1}, u}( f(u(x'); theta_k) = y ).

Because every vote draws k and u independently with the same distribution, the votes are i.i.d. and their
count for a class is Binomial(n, p_y) exactly, so the Clopper-Pearson bound is valid for any number of
votes n, more or fewer than K. With n = K this is Eq. 3 up to drawing voters with replacement.

Protocol (Cohen et al. 2019, CERTIFY). ``n_select`` votes choose the class; an independent set of
``n_estimate`` votes gives p_lower for that class at level alpha; ABSTAIN when p_lower <= 0.5.

Radii (Theorem 1, Corollary 1; beta = 1). With per-token randomization probability omega, a trigger of r
tokens is destroyed with probability >= (omega d)^r, where d is the share of mutations that remove a token
(deletion, substitution). The radius is the largest r with p_lower - (1 - (omega d)^r) > 0.5.
- conditional: omega = omega_H; valid only if the trigger lies inside T(x'); capped at |T(x')| tokens.
- unconditional: omega = omega_L (the smallest probability any token gets); valid wherever the trigger is.
With ``RandomizeConfig.span_mutations`` the tokens of T(x') have their own d (d_span): the conditional radius uses
omega_H d_span and the unconditional one the smallest omega d over all tokens (``destroy_probabilities``).
Both also assume Assumption 1 (the smoothed model on the benign text agrees with the clean model) and
ignore the Lambda discard step, which lowers the realised mutation probability of long triggers.

Reproducibility: every random draw for a text is seeded by (seed, sha256 of the text), so the same text,
checkpoint and seed give the same certificate in any batch, order or process: the same label, votes, p_lower,
radii and spans. One caveat: the span *scores* (KL values) depend in their last digits on which other texts
share a padded forward pass; ``certificates_match`` compares them with a tolerance (``docs/results/notes.md``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..backends.hf import HFClassifier
from ..config import CertifyConfig
from ..errors import ConfigError
from ..fuzzing import FuzzedRandomizer, FuzzResult, MCTSFuzzer, Span
from ..fuzzing.growth import on_tokens
from ..smoothing.bmps import apply_clip_
from ..smoothing.finetune import read_meta
from ..smoothing.layers import SmoothedParameters
from ..smoothing.pool import VoterPool, VoterSpec, pool_from_config, vote_labels
from ..text import render, tokenize
from .bounds import certified_radius, majority_vote, predict_and_bound
from .certificate import ABSTAIN, ASSUMPTIONS, Certificate, Radii, Radius

SpanFilter = Callable[[Sequence[tuple[list[str], list[Span]]]], list[list[Span]]]
"""Optional check on T(x'): given (word tokens, top spans) for each text of a batch, return the spans to keep.
Spans it drops get omega_L like the rest of the text; with none kept, randomization is uniform (omega_M) and the
conditional radius is 0. The certificate then lists only the kept spans. Example: ``frs_ray.fuzzing.fluency``.

Optional attributes a filter may have: ``uses_reference`` (true: it is called as ``f(batch, references=...)`` with
the centre model's P(y | x') from the fuzzing, so it need not query x' again) and ``last_reports`` (after each
call, one dict per text; its ``queries`` are added to the certificate's ``queries["span_check"]`` and the dict is
recorded as the certificate's ``span_check``). Example: ``frs_ray.fuzzing.transplant`` (``frs-transplant``)."""


def text_seed(seed: int, text: str) -> list[int]:
    """Entropy for all random draws made for ``text``: (seed, first 64 bits of its sha256)."""
    digest = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return [int(seed) & 0xFFFFFFFF, digest & 0xFFFFFFFF, digest >> 32]


def checkpoint_voter_spec(meta: dict[str, Any], k: int, seed: int, sigma: float | None = None) -> VoterSpec:
    """The K voters (Eq. 5) of a checkpoint's ``frs.json``: its smoothed tensors, ``sigma`` (default: the
    fine-tuning sigma), ``k`` and ``seed``."""
    sm = meta["smoothing"]
    selection = SmoothedParameters(tuple(sm["names"]), sm["top_h"], sm["depth"], sm["stack"])
    return VoterSpec(selection, k, meta["config"]["smoothing"]["sigma"] if sigma is None else sigma, seed)


class FRSClassifier:
    """Fuzzed Randomized Smoothing over a torch backend and its K smoothed voters.

    ``certify(texts)`` runs, per batch of texts: MCTS fuzzing (``budget`` batched queries of the centre
    model), n_select + n_estimate fuzzed randomizations, every vote of the batch scored in one voter-pool call
    (:mod:`frs_ray.smoothing.pool`), then the CERTIFY protocol and both radii.
    """

    def __init__(
        self,
        backend: HFClassifier,
        pool: VoterPool | None,
        config: CertifyConfig,
        label_names: Sequence[str] | None = None,
        span_filter: SpanFilter | None = None,
    ) -> None:
        if pool is not None and config.k > pool.k:
            raise ConfigError(f"K = {config.k} exceeds the {pool.k} voters of this pool")
        self.backend, self.pool, self.config = backend, pool, config
        self.span_filter = span_filter
        self.label_names = list(label_names) if label_names else [str(i) for i in range(backend.num_labels)]
        self.filler = backend.filler_token
        self.fuzzer = MCTSFuzzer(backend.predict_proba, config.fuzzing, filler=self.filler)
        self.randomizer = FuzzedRandomizer(config.randomize, filler=self.filler)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        config: CertifyConfig | None = None,
        device: str | None = None,
        sigma: float | None = None,
        span_filter: SpanFilter | None = None,
        voter_ids: Sequence[int] | None = (),
    ) -> "FRSClassifier":
        """Rebuild the centre model Clip_rho(theta) and the voters (checkpoint, seed, k) of a folder written by
        ``frs finetune``.

        ``voter_ids``: which voters this process hosts (default ``()``: all K; ``None``: no voters, for a process
        that only fuzzes); the pool is built as ``config.voters`` says. ``sigma`` overrides the inference-phase
        noise of Eq. 5 (default: the checkpoint's fine-tuning sigma); 0 gives K identical un-noised voters (the
        -BMPS(inference) ablation); ``span_filter`` see :data:`SpanFilter`. With ``config.voters.backend == "vllm"``
        the voters run in a vLLM engine that loads the same checkpoint; fuzzing still runs on the torch centre."""
        config = config or CertifyConfig()
        meta = read_meta(checkpoint)
        backend = HFClassifier(checkpoint, max_length=meta["max_length"], device=device)
        sm = meta["smoothing"]
        spec = checkpoint_voter_spec(meta, config.k, config.seed, sigma)
        apply_clip_(
            backend.model, spec.selection, sm["reference_norms"], meta["config"]["smoothing"]["rho"]
        )  # the centre of Eq. 5
        pool = None
        if voter_ids is not None:
            pool = pool_from_config(backend, spec, list(voter_ids) or None, config.voters)
        return cls(backend, pool, config, meta["data"].get("label_names"), span_filter=span_filter)

    # ------------------------------------------------------------------ stages
    def fuzz(self, texts: Sequence[str]) -> list[FuzzResult]:
        """T(x') for each text (the centre model, ``budget`` queries each, shared across the batch)."""
        if not self.config.fuzz:  # -FTR: uniform randomization needs only the tokens, no model query
            return [FuzzResult(t, tokenize(t), [], np.empty(0), 0) for t in texts]
        seeds = [int(np.random.SeedSequence(text_seed(self.config.seed, t)).generate_state(1)[0]) for t in texts]
        return self.fuzzer.fuzz_many(texts, seeds)

    def vote_labels(self, jobs: Sequence[tuple[int, str]]) -> list[int]:
        """Predicted label of voter k on each (k, randomized text) job, through the voter pool."""
        if self.pool is None:
            raise ConfigError("this classifier hosts no voters (built with voter_ids=None): it can fuzz, not vote")
        return vote_labels(self.pool, jobs)

    def certify(self, texts: Sequence[str], progress: bool = False, validate: bool = True) -> list[Certificate]:
        """Certificates for ``texts``; with ``validate`` (skip it only for texts already checked with
        ``backend.check_texts``) empty or over-long texts raise InputTextError first."""
        if validate:
            self.backend.require_valid(texts)
        out: list[Certificate] = []
        bs = self.config.batch_size
        with tqdm(total=len(texts), desc="certify", unit="text", disable=not progress) as bar:
            for s in range(0, len(texts), bs):
                out += self._certify_batch(list(texts[s : s + bs]))
                bar.update(min(bs, len(texts) - s))
        return out

    def prepare(self, texts: Sequence[str]) -> list["VotePlan"]:
        """Fuzz the texts (centre model) and draw every vote's (voter k, randomized text); no voter runs yet."""
        cfg = self.config
        t0 = time.perf_counter()
        fuzzed = self.fuzz(texts)
        t1 = time.perf_counter()
        words_of = [[t.text for t in fr.tokens] for fr in fuzzed]
        top = [fr.vulnerable(cfg.fuzzing.num_spans, cfg.fuzzing.disjoint_spans) if cfg.fuzz else [] for fr in fuzzed]
        reports: list = [None] * len(texts)
        if self.span_filter is not None and cfg.fuzz:
            if getattr(self.span_filter, "uses_reference", False):
                top = self.span_filter(list(zip(words_of, top)), references=[fr.reference for fr in fuzzed])
            else:
                top = self.span_filter(list(zip(words_of, top)))
            if getattr(self.span_filter, "last_reports", None) is not None:
                reports = list(self.span_filter.last_reports)
            # a filter may return spans other than MCTS's (grown ones): their offsets are those of their tokens
            top = [[on_tokens(sp, fr.tokens, fr.text) for sp in kept] for kept, fr in zip(top, fuzzed)]
        plans = []
        for text, fr, words, kept, report in zip(texts, fuzzed, words_of, top, reports):
            rng = np.random.default_rng(text_seed(cfg.seed, text) + [7])
            in_span = np.zeros(len(words), dtype=bool)
            for sp in kept:
                in_span[sp.token_start : sp.token_end] = True
            om_h, om_l = self.randomizer.omegas(len(words), int(in_span.sum()))
            jobs = []
            for _ in range(cfg.votes_select + cfg.votes_estimate):
                k = int(rng.integers(cfg.k))
                jobs.append((k, render(self.randomizer.randomize(words, in_span, rng).tokens)))
            # Recorded spans: MCTS's best few; with a span filter, exactly the kept T(x') (empty if none was kept),
            # so that a certificate never shows a span its randomization did not favour.
            spans = (kept if self.span_filter is not None else fr.spans[: max(5, cfg.fuzzing.num_spans)]) if cfg.fuzz else []
            plans.append(
                VotePlan(
                    text,
                    len(words),
                    int(in_span.sum()) if cfg.fuzz else len(words),
                    om_h,
                    om_l,
                    [sp.to_dict() for sp in spans],
                    fr.queries,
                    jobs[: cfg.votes_select],
                    jobs[cfg.votes_select :],
                    words=list(words),
                    in_span=in_span.tolist(),
                    span_check=report,
                )
            )
        per_text = {"fuzz": (t1 - t0) / max(1, len(texts)), "randomize": (time.perf_counter() - t1) / max(1, len(texts))}
        for p in plans:
            p.seconds = dict(per_text)
        return plans

    def _certify_batch(self, texts: list[str]) -> list[Certificate]:
        if self.config.n_max is not None:
            return self._certify_batch_sequential(texts)
        plans = self.prepare(texts)
        t1 = time.perf_counter()
        labels = self.vote_labels([job for p in plans for job in p.select + p.estimate])  # all votes in one call
        per = {"vote": (time.perf_counter() - t1) / len(texts)}
        return finalize_plans(plans, labels, self.config, self.label_names, per)

    def _certify_batch_sequential(self, texts: list[str]) -> list[Certificate]:
        """Sequential CERTIFY (``config.n_max``): the batch's rounds share each voter call (certify.rounds)."""
        from .rounds import certify_plans_sequential, draw_round

        plans = self.prepare(texts)
        return certify_plans_sequential(
            plans,
            self.vote_labels,
            lambda plan, look, n: draw_round(plan, look, n, self.config, self.randomizer),
            self.config,
            self.label_names,
        )

    def predict_centre(self, texts: Sequence[str]) -> np.ndarray:
        """Labels of the un-noised centre model Clip_rho(theta) (no voters, no randomization)."""
        return self.backend.predict_proba(texts).argmax(axis=1)

    def predict_voters(self, texts: Sequence[str]) -> np.ndarray:
        """Majority labels of the K voters of Eq. 5 on the unrandomized texts (BMPS only; -FTR, no certificate)."""
        k = self.config.k
        labels = np.array(self.vote_labels([(v, t) for t in texts for v in range(k)]), dtype=np.int64).reshape(len(texts), k)
        counts = np.stack([(labels == c).sum(axis=1) for c in range(self.backend.num_labels)], axis=1)
        return counts.argmax(axis=1)


@dataclass
class VotePlan:
    """Everything drawn for one text before any voter runs: spans, omegas and the (voter, text) of each vote.

    Plans are plain data (picklable), so fuzzing, voting and finalizing may run in different processes.
    """

    text: str
    length_tokens: int
    span_tokens: int
    omega_h: float
    omega_l: float
    spans: list[dict]
    fuzz_queries: int
    select: list[tuple[int, str]]
    estimate: list[tuple[int, str]]
    seconds: dict[str, float] = field(default_factory=dict)  # per-text wall time of fuzzing and randomization
    # The word tokens and the T(x') mask the randomizations were drawn with: sequential CERTIFY draws further
    # rounds from them (frs_ray.certify.rounds.draw_round).
    words: list[str] | None = None
    in_span: list[bool] | None = None
    span_check: dict[str, Any] | None = None  # the span filter's report (Certificate.span_check)


def _radius(label: int, p_lower: float, w: float, cap: int, length: int, assumes: str) -> Radius:
    """Theorem 1 radius with per-token randomization probability ``w`` (omega x d), capped at ``cap`` tokens."""
    if label == ABSTAIN:
        return Radius(tokens=None, fraction=None, omega=w, assumes=assumes)
    r = cap if w >= 1.0 else min(certified_radius(p_lower, w), cap)
    return Radius(tokens=r, fraction=r / length if length else 0.0, omega=w, assumes=assumes)


def build_certificate(
    plan: VotePlan,
    certified_label: int,
    p_lower: float,
    select: Sequence[int],
    estimate: Sequence[int],
    votes_spent: int,
    config: CertifyConfig,
    label_names: Sequence[str],
    seconds: dict[str, float] | None = None,
    sequential: dict[str, Any] | None = None,
) -> Certificate:
    """The certificate of one plan once its decision is made: ``certified_label`` (ABSTAIN or the certified class)
    and ``p_lower`` from whichever protocol ran, both radii of Theorem 1 from that
    bound, and the majority vote (``vote_label``)."""
    extra = ASSUMPTIONS["character"] if config.randomize.mutation_level == "character" else ""
    L = plan.length_tokens
    w_cond, w_uncond = config.randomize.destroy_probabilities(plan.omega_h, plan.omega_l, plan.span_tokens, L)
    abstained = certified_label == ABSTAIN
    return Certificate(
        text=plan.text,
        certified_label=certified_label,
        label_name="ABSTAIN" if abstained else label_names[certified_label],
        abstained=abstained,
        votes=[int(v) for v in estimate],
        select_votes=[int(v) for v in select],
        p_lower=p_lower,
        radius=Radii(
            conditional=_radius(
                certified_label, p_lower, w_cond, min(plan.span_tokens, L), L, ASSUMPTIONS["conditional"] + extra
            ),
            unconditional=_radius(certified_label, p_lower, w_uncond, L, L, ASSUMPTIONS["unconditional"] + extra),
        ),
        spans=plan.spans,
        length_tokens=L,
        omega_h=plan.omega_h,
        omega_l=plan.omega_l,
        queries={
            "fuzz": plan.fuzz_queries,
            "votes": int(votes_spent),
            **({"span_check": int(plan.span_check["queries"])} if plan.span_check else {}),
        },
        seconds={k: round(v, 5) for k, v in {**plan.seconds, **(seconds or {})}.items()},
        vote_label=majority_vote([int(a) + int(b) for a, b in zip(select, estimate)]),
        sequential=sequential,
        span_check=plan.span_check,
    )


def finalize_certificate(
    plan: VotePlan,
    select: Sequence[int],
    estimate: Sequence[int],
    config: CertifyConfig,
    label_names: Sequence[str],
    seconds: dict[str, float] | None = None,
) -> Certificate:
    """CERTIFY protocol on the vote counts of one plan, plus both radii (no model needed)."""
    dec = predict_and_bound(list(select), list(estimate), config.alpha)
    return build_certificate(
        plan,
        ABSTAIN if dec.abstained else dec.label,
        dec.p_lower,
        select,
        estimate,
        len(plan.select) + len(plan.estimate),
        config,
        label_names,
        seconds,
    )


def certificates_match(a: dict, b: dict, score_tol: float = 1e-5) -> bool:
    """Two certificate dicts are the same result: every field equal (timings ignored), span scores within
    ``score_tol`` (floating-point noise of batching, see the module docstring)."""
    skip = {"seconds", "index", "spans"}
    if {k: v for k, v in a.items() if k not in skip} != {k: v for k, v in b.items() if k not in skip}:
        return False
    sa, sb = a.get("spans", []), b.get("spans", [])
    if len(sa) != len(sb):
        return False
    for x, y in zip(sa, sb):
        if {k: v for k, v in x.items() if k != "score"} != {k: v for k, v in y.items() if k != "score"}:
            return False
        if abs(float(x["score"]) - float(y["score"])) > score_tol:
            return False
    return True


def finalize_plans(
    plans: Sequence[VotePlan],
    labels: Sequence[int],
    config: CertifyConfig,
    label_names: Sequence[str],
    seconds: dict[str, float] | None = None,
) -> list[Certificate]:
    """Certificates from the labels of every plan's votes, in order (each plan's select votes, then estimate)."""
    certs, pos, n_classes = [], 0, len(label_names)
    for p in plans:
        n_sel, n_est = len(p.select), len(p.estimate)
        sel, est = [0] * n_classes, [0] * n_classes
        for y in labels[pos : pos + n_sel]:
            sel[y] += 1
        for y in labels[pos + n_sel : pos + n_sel + n_est]:
            est[y] += 1
        pos += n_sel + n_est
        certs.append(finalize_certificate(p, sel, est, config, label_names, seconds))
    return certs


__all__ = [
    "FRSClassifier",
    "SpanFilter",
    "VotePlan",
    "build_certificate",
    "certificates_match",
    "checkpoint_voter_spec",
    "finalize_certificate",
    "finalize_plans",
    "text_seed",
]
