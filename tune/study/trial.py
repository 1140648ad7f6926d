"""The Tune trial: fine-tune (or reuse) the checkpoint of (sigma, H), certify at the point; the Optuna search.

Ray workers import this module as ``study.trial`` (``tune/sweep.py`` puts ``tune/`` on their PYTHONPATH).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from frs_ray.smoothing.bmps import VOTER_DEFINITION

from .finetune_cache import ensure_finetuned
from .settings import OBJECTIVES, SEARCHED, StudySettings, is_range


def point_of(config: dict[str, Any]) -> dict[str, Any]:
    """The searched point of a Tune config (grid: ``config["point"]``; Optuna: the top-level keys)."""
    p = config.get("point", config)
    return {k: p[k] for k in SEARCHED}


def _predictions(certs) -> list:
    """Certificates as evaluation predictions (:meth:`~frs_ray.defenses.base.DefensePrediction.from_certificate`):
    ``vote_label`` the voters' majority vote (a tie abstains), ``certified_label`` the certificate's (ABSTAIN where
    the bound fails), ``radius`` the certificate's conditional radius (no fallback to the unconditional one where
    T(x') got no higher probability: the study reports the conditional radius as certified)."""
    from frs_ray.defenses.base import DefensePrediction

    return [DefensePrediction.from_certificate(c, "conditional", uniform_fallback=False) for c in certs]


def _rates(cp: list, tp: list, clean: dict[str, Any], trig: dict[str, Any]) -> dict[str, float]:
    """CA, PA, ASR of predictions ``cp`` (clean) and ``tp`` (triggered) on their ``vote_label``."""
    import numpy as np

    from frs_ray.evaluation import metrics as M

    targets = set(trig["target"])
    if len(targets) == 1:
        asr = M.attack_success_rate(tp, next(iter(targets)))
    else:  # several targets: per-row comparison, same definition
        asr = float(np.mean([p.vote_label == t for p, t in zip(tp, trig["target"])])) if tp else float("nan")
    return {"ca": M.clean_accuracy(cp, clean["labels"]), "pa": M.poisoned_accuracy(tp, trig["original"]), "asr": asr}


def point_metrics(clean_certs, triggered_certs, clean: dict[str, Any], trig: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one trial from its certificates (clean test subset, triggered test set).

    ``ca``, ``pa``, ``asr``: on the voters' majority vote (Appendix B.1's f(x), the columns of ``frs eval``);
    ``certified_ca``, ``certified_pa``, ``certified_asr``: on the certified label. ABSTAIN (a tied vote, or a
    certificate whose bound fails) counts as wrong and as no attack success. ``abstain`` /
    ``abstain_triggered``: share of abstaining certificates; ``vote_abstain``: share of tied clean votes.
    ``avg_radius`` (``_unconditional``): mean radius over clean inputs whose certified label is correct (Table 2);
    ``avg_radius_all``: the conditional radius averaged over all clean inputs, 0 where the certified label is
    wrong or abstains.
    """
    import numpy as np

    from frs_ray.evaluation import metrics as M

    cp, tp = _predictions(clean_certs), _predictions(triggered_certs)
    vote = _rates(cp, tp, clean, trig)
    cert = _rates(M.certified_view(cp) or [], M.certified_view(tp) or [], clean, trig)
    radius = M.radius_stats(cp, clean["labels"])
    radius_u = M.radius_stats(cp, clean["labels"], unconditional=True)
    all_r = [(p.radius or 0) if (p.certified_label == y and y >= 0) else 0 for p, y in zip(cp, clean["labels"])]
    cost = M.cost(cp + tp)
    return {
        **vote,
        **{f"certified_{k}": v for k, v in cert.items()},
        "avg_radius": radius["avg"] if radius["avg"] is not None else float("nan"),
        "avg_radius_unconditional": radius_u["avg"] if radius_u["avg"] is not None else float("nan"),
        "avg_radius_all": float(np.mean(all_r)) if all_r else float("nan"),
        "abstain": M.abstain_rate(M.certified_view(cp) or []),
        "abstain_triggered": M.abstain_rate(M.certified_view(tp) or []),
        "vote_abstain": M.abstain_rate(cp),
        "queries_per_input": cost["queries_per_input"],
        "n_clean": len(cp),
        "n_triggered": len(tp),
    }


def evaluate_point(
    checkpoint: str, point: dict[str, Any], s: StudySettings, data: dict[str, Any], log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Certify the clean and the triggered subsets with FRS at ``point``; the metrics of :func:`point_metrics`
    and the certification time per input."""
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig, build

    cfg = build(
        CertifyConfig,
        {
            "k": int(point["K"]),
            "alpha": s.alpha,
            "seed": s.cert_seed,
            "n_estimate": s.n_estimate,
            "n_max": int(point.get("n_max") or 0) or None,  # 0: the fixed protocol
            "fuzzing": {"budget": int(point["budget"])},
            "randomize": {
                "omega_m": float(point["omega_m"]),
                "omega_h": float(point["omega_h"]),
                "max_distance": float(point["max_distance"]),
            },
        },
    )
    clf = FRSClassifier.from_checkpoint(checkpoint, cfg)
    clean, trig = data["clean"], data["triggered"]
    t0 = time.perf_counter()
    certs = clf.certify(list(clean["texts"]) + list(trig["texts"]))  # one pass: fuzzing and votes batched together
    t2 = time.perf_counter()
    nc = len(clean["texts"])
    metrics = point_metrics(certs[:nc], certs[nc:], clean, trig)
    metrics["seconds_per_input"] = (t2 - t0) / max(1, len(certs))
    metrics["seconds_certify"] = round(t2 - t0, 2)
    return metrics


def run_trial(config: dict[str, Any], settings: dict[str, Any], data: dict[str, Any]) -> None:
    """The Tune trainable: fine-tune (or reuse) the checkpoint of (sigma, H), then certify at the point."""
    from ray import tune

    from frs_ray.runtime import configure_process

    s = StudySettings.from_dict(settings)
    p = point_of(config)
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id() if ctx is not None else "local"
    tag = f"K={p['K']} sigma={p['sigma']:g} H={p['H']} budget={p['budget']}"

    def log(msg: str) -> None:
        print(f"[trial {trial_id} {tag}] {msg}", flush=True)

    configure_process(threads=max(1, int(s.cpus_per_trial)))  # a trial runs in its own Ray worker process
    started = time.perf_counter()
    ft = ensure_finetuned(s, p["sigma"], p["H"], data["dev"], tune.report, log)
    log(f"{'reused' if ft['reused'] else 'made'} checkpoint {ft['key']} (dev acc {ft['dev_acc']:.3f}); certifying")
    metrics = evaluate_point(ft["checkpoint"], p, s, data, log)
    log(
        f"CA {metrics['ca']:.3f} PA {metrics['pa']:.3f} ASR {metrics['asr']:.3f} (majority vote); certified CA "
        f"{metrics['certified_ca']:.3f} PA {metrics['certified_pa']:.3f} ASR {metrics['certified_asr']:.3f}; "
        f"radius {metrics['avg_radius']:.3f} ({metrics['seconds_per_input']:.2f} s/input)"
    )
    final = {
        **p,
        **metrics,
        "phase": "done",
        "checkpoint": ft["checkpoint"],
        "finetune_key": ft["key"],
        "finetune_reused": ft["reused"],
        "epochs_trained": ft["epochs_trained"],
        "finetune_seconds": ft["seconds"],
        "dev_acc_final": ft["dev_acc"],
        "trial_seconds": round(time.perf_counter() - started, 2),
        "run_id": s.run_id,
        "trial_id": trial_id,
        "voter_definition": VOTER_DEFINITION,
    }
    # no "epoch"/"dev_acc" key here: ASHA only looks at the fine-tune reports
    tune.report({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in final.items() if k != "dev_acc"})


def optuna_space(values: dict[str, list | dict]) -> dict[str, Any]:
    """Tune search space for Optuna: a list -> categorical (a constant if one value); a range -> uniform
    (integers: randint over LOW..HIGH inclusive)."""
    from ray import tune

    space = {}
    for k, v in values.items():
        if is_range(v):
            space[k] = tune.randint(v["low"], v["high"] + 1) if isinstance(v["low"], int) else tune.uniform(v["low"], v["high"])
        else:
            space[k] = tune.choice(v) if len(v) > 1 else v[0]
    return space


def trial_dirname(trial) -> str:
    """Short trial folder names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def make_optuna(seed: int):
    """Optuna multi-objective search (CA max, ASR min, radius over all clean inputs max) through Tune.

    A trial stopped early by ASHA has no final metrics; it is told to Optuna as PRUNED (Ray's OptunaSearch
    would tell COMPLETE with missing values, which Optuna rejects, leaving the trial open).
    """
    from ray.tune.search.optuna import OptunaSearch

    class _OptunaSearch(OptunaSearch):
        def on_trial_complete(self, trial_id, result=None, error=False):
            if result is not None and any(result.get(m) is None for m in self.metric):
                result = None
            super().on_trial_complete(trial_id, result, error)

    return _OptunaSearch(metric=[k for k, _ in OBJECTIVES], mode=[m for _, m in OBJECTIVES], seed=seed)
