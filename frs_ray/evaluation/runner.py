"""``frs eval``: run a grid of datasets x attacks x defenses x seeds and write per-cell results.

Each cell (dataset, attack, seed, defense) is one JSON file under ``<out>/cells/``: its metrics, the defense's
settings, the seeds, the checksums of the data it read, the models it used and its wall time. A cell whose file
exists with the same settings hash is skipped, so an interrupted run resumes where it stopped. Models come from
the zoo (:mod:`.zoo`) and are trained once.

Per cell: CA on a seeded subset of the clean test set; PA and ASR on triggered versions of a seeded subset of its
non-target sentences; certified accuracy at each perturbation level and the average / maximum certified radius on
the clean subset (certified defenses); queries and seconds per input. For ``frs`` the trigger-localization rate
of the MCTS spans is measured on the triggered subset at each budget of ``budgets`` (Appendix I).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..attacks import build_triggered_set, make_trigger
from ..attacks.base import TriggeredSet
from ..certify.smooth import text_seed
from ..data import TextDataset, load_dataset
from ..defenses.base import DefenseContext, DefensePrediction
from ..defenses.registry import build_defense, needs_smoothed, uses_voters
from ..errors import DataError
from ..smoothing.bmps import VOTER_DEFINITION
from . import metrics as M
from .config import EvalConfig
from .zoo import poisoned_model, settings_hash, victim_checkpoint


def cell_path(root: Path, dataset: str, attack: str, defense: str, seed: int) -> Path:
    return root / "cells" / dataset / attack / f"{defense}-seed{seed}.json"


def cell_settings(cfg: EvalConfig, dataset: str, attack: str, defense: str, seed: int) -> dict[str, Any]:
    """What a cell's ``settings_hash`` is computed from: its grid point, the eval settings as written
    (:meth:`EvalConfig.given`), the attack's settings and the defense's parameters."""
    return {
        "dataset": dataset,
        "attack": attack,
        "defense": defense,
        "seed": seed,
        "target": cfg.target,
        "n_clean": cfg.n_clean,
        "n_triggered": cfg.n_triggered,
        "levels": cfg.levels,
        "budgets": cfg.budgets,
        "victim": cfg.given("victim"),
        "bmps": cfg.given("bmps"),
        "certify": cfg.given("certify"),
        "attack_settings": cfg.attack_settings(attack),
        "params": cfg.defense_params.get(defense, {}),
        # voters of another definition are other voters: such a cell is measured again, never mixed in
        **({"voter_definition": VOTER_DEFINITION} if uses_voters(defense) else {}),
    }


def rebuild_sets(cell: dict[str, Any], data_dir: str | Path | None = None) -> tuple[TextDataset, TriggeredSet]:
    """A written cell's clean subset and triggered set, built again as :func:`run_eval` built them (for reports that
    read cells). Raises :class:`DataError` when the test file's or the triggered set's checksum differs from the
    cell's (the data changed since the cell was written)."""
    s = cell["settings"]
    test = load_dataset(cell["dataset"], "test", data_dir)
    if test.sha256 != cell["data"]["test_sha256"]:
        raise DataError(f"{cell['dataset']}: the test data changed since the cell was written")
    attack = cell["attack"]
    trigger = make_trigger("badnets") if attack == "clean" else make_trigger(attack, cell["dataset"], s.get("attack_settings"))
    ts = build_triggered_set(test, trigger, s["target"], seed=cell["seed"], max_examples=s["n_triggered"])
    if ts.sha256 != cell["data"]["triggered_sha256"]:
        raise DataError(f"{cell['dataset']}/{attack}: the triggered set does not match the cell's")
    return test.subset(s["n_clean"], seed=cell["seed"]), ts


def localization_by_budget(clf, ts: TriggeredSet, budgets: list[int], seed: int) -> dict[str, float]:
    """Appendix I: share of triggered inputs whose top ``num_spans`` MCTS spans contain a trigger piece, per budget
    (one search per text with the FRS classifier's own fuzzer and centre model, read at every budget)."""
    seeds = [int(np.random.SeedSequence(text_seed(seed, t)).generate_state(1)[0]) for t in ts.texts]
    res = clf.fuzzer.fuzz_at_budgets(ts.texts, seeds, budgets)
    n = clf.config.fuzzing.num_spans
    return {
        str(b): float(
            np.mean(
                [
                    M.span_contains([(s.start, s.end) for s in r.vulnerable(n, clf.config.fuzzing.disjoint_spans)], sp)
                    for r, sp in zip(res[b], ts.spans)
                ]
            )
        )
        for b in budgets
    }


def _metrics(
    clean: TextDataset, ts: TriggeredSet, pc: list[DefensePrediction], pt: list[DefensePrediction], cfg: EvalConfig
) -> dict[str, Any]:
    rad = M.radius_stats(pc, clean.labels)
    rad_u = M.radius_stats(pc, clean.labels, unconditional=True)
    cc, ct = M.certified_view(pc), M.certified_view(pt)
    certified = {
        "ca_certified": M.clean_accuracy(cc, clean.labels) if cc else None,
        "pa_certified": M.poisoned_accuracy(ct, ts.labels) if ct else None,
        "asr_certified": M.attack_success_rate(ct, ts.target) if ct else None,
        "not_certified_clean": M.abstain_rate(cc) if cc else None,
        "not_certified_triggered": M.abstain_rate(ct) if ct else None,
    }
    return {
        "ca": M.clean_accuracy(pc, clean.labels),
        "pa": M.poisoned_accuracy(pt, ts.labels),
        "asr": M.attack_success_rate(pt, ts.target),
        "abstain_clean": M.abstain_rate(pc),
        "abstain_triggered": M.abstain_rate(pt),
        **certified,
        "certified_accuracy": M.certified_accuracy(pc, clean.labels, cfg.levels),
        "avg_radius": rad["avg"],
        "max_radius": rad["max"],
        "share_radius_positive": rad["share_positive"],
        "avg_radius_unconditional": rad_u["avg"],
        "max_radius_unconditional": rad_u["max"],
        "radius_assumes": next((p.radius_assumes for p in pc if p.radius_assumes), None),
        "localization_flagged": M.localization_rate(pt, ts.spans),
        **{f"clean_{k}": v for k, v in M.cost(pc).items()},
        **{f"triggered_{k}": v for k, v in M.cost(pt).items()},
        **(
            {"sequential": {"clean": M.sequential_stats(pc), "triggered": M.sequential_stats(pt)}}
            if M.sequential_stats(pc) is not None
            else {}
        ),
    }


def machine() -> dict[str, Any]:
    """Where a cell ran (recorded in it: cells computed on different hosts can share one summary)."""
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.machine(),
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def machine_line(m: dict[str, Any] | None = None) -> str:
    """One line for :func:`machine`'s dict (this host when ``m`` is None; 'not recorded' for an empty one)."""
    m = machine() if m is None else m
    if not m:
        return "not recorded"
    gpu = f"GPU {m['gpu']}" if m.get("gpu") else "no GPU"
    return f"{m['platform']}, {m['cpus']} cores, {gpu}, torch {m['torch']}"


def run_eval(cfg: EvalConfig, progress: bool = True, log=print) -> Path:
    """Run every missing cell of ``cfg``; return the run folder (summaries are written by :mod:`.report`)."""
    root = Path(cfg.out_dir) / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg.record(), indent=2))
    cells = [(d, a, s) for d in cfg.datasets for a in cfg.attacks for s in cfg.seeds]
    bar = tqdm(total=len(cells) * len(cfg.defenses), desc="eval cells", unit="cell", disable=not progress)
    for dataset, attack, seed in cells:
        todo = []
        for defense in cfg.defenses:
            path = cell_path(root, dataset, attack, defense, seed)
            h = settings_hash(cell_settings(cfg, dataset, attack, defense, seed))
            if path.is_file() and json.loads(path.read_text()).get("settings_hash") == h:
                bar.update(1)
                continue
            todo.append((defense, path, h))
        if not todo:
            continue
        test = load_dataset(dataset, "test", cfg.data_dir)
        train = load_dataset(dataset, "train", cfg.data_dir)
        settings = cfg.attack_settings(attack)
        base = poisoned_model(cfg.zoo, dataset, attack, settings, progress)
        victim = cfg.given("victim")
        plain = victim_checkpoint(cfg.zoo, dataset, attack, settings, victim, None, seed, cfg.data_dir, progress)
        smoothed = None
        if any(needs_smoothed(d) for d, _, _ in todo):
            smoothed = victim_checkpoint(cfg.zoo, dataset, attack, settings, victim, cfg.bmps, seed, cfg.data_dir, progress)
        clean = test.subset(cfg.n_clean, seed=seed)
        ts = build_triggered_set(
            test,
            make_trigger("badnets") if attack == "clean" else make_trigger(attack, dataset, settings),
            cfg.target,
            seed=seed,
            max_examples=cfg.n_triggered,
        )
        victim_train = train.subset(cfg.victim.max_train_examples, seed=seed)
        ctx = DefenseContext(
            plain,
            smoothed,
            base,
            victim_train,
            root / "work" / dataset / f"seed{seed}",
            certify=cfg.certify,
            seed=seed,
            progress=progress,
            finetune={**victim, "seed": seed},
        )
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        for defense, path, h in todo:
            t0 = time.perf_counter()
            try:
                d = build_defense(defense, ctx, **cfg.defense_params.get(defense, {}))
                pc, pt = d.predict(clean.texts), d.predict(ts.texts)
                rec = _metrics(clean, ts, pc, pt, cfg)
                if defense == "frs" and cfg.budgets:
                    rec["localization_by_budget"] = localization_by_budget(d.clf, ts, cfg.budgets, seed)
                described = d.describe()
            except Exception as exc:  # one failing cell must not lose the others
                log(f"cell {dataset}/{attack}/{defense}/seed{seed} failed: {type(exc).__name__}: {exc}")
                bar.update(1)
                continue
            cell = {
                "dataset": dataset,
                "attack": attack,
                "defense": defense,
                "seed": seed,
                "settings_hash": h,
                "settings": cell_settings(cfg, dataset, attack, defense, seed),
                "defense_settings": described,
                "models": {"poisoned": base, "plain": plain, "smoothed": smoothed},
                "data": {
                    "test_source": test.source,
                    "test_sha256": test.sha256,
                    "train_sha256": train.sha256,
                    "triggered_sha256": ts.sha256,
                    "n_clean": len(clean),
                    "n_triggered": len(ts),
                    "triggered_skipped": ts.skipped,
                },
                "metrics": rec,
                "wall_seconds": round(time.perf_counter() - t0, 2),
                "machine": machine(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "predictions_fields": ["vote_label", "certified_label", "radius"],
                "predictions": {
                    "clean": [[p.vote_label, p.certified_label, p.radius] for p in pc],
                    "triggered": [[p.vote_label, p.certified_label, p.radius] for p in pt],
                },
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cell, indent=1))
            log(
                f"{dataset}/{attack}/{defense}/seed{seed}: CA {rec['ca']:.3f} PA {rec['pa']:.3f} ASR {rec['asr']:.3f} "
                f"({cell['wall_seconds']} s)"
            )
            bar.update(1)
    bar.close()
    return root
