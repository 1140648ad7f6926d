"""Helpers for the tests of the scripts that read `frs eval` cells (benchmarks/transplant_*.py): load a script as a
module, and write a cell in `frs eval`'s format for the real SST-2 BadNets sets with chosen votes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_cell(
    folder: Path, defense: str, n: int, test, ts, clean_votes, trig_votes, checks=None, fields=None, sha=None, plain=None
) -> None:
    """A cell of ``defense`` for SST-2 / BadNets, seed 0, target 1; ``checks`` rows under ``fields`` with a
    transplant calibration at threshold 0.5; ``sha`` overrides the triggered set's checksum; ``plain`` is the
    victim checkpoint the cell names."""
    cell = {
        "dataset": "sst2",
        "attack": "badnets",
        "defense": defense,
        "seed": 0,
        "settings": {"n_clean": n, "n_triggered": n, "target": 1},
        "data": {"test_sha256": test.sha256, "triggered_sha256": sha or ts.sha256},
        "defense_settings": {},
        "models": {"plain": None if plain is None else str(plain)},
        "predictions_fields": ["vote_label", "certified_label", "radius"],
        "predictions": {
            "clean": [[int(v), -1, None] for v in clean_votes],
            "triggered": [[int(v), -1, None] for v in trig_votes],
        },
    }
    if checks is not None:
        cell["defense_settings"] = {
            "checks_fields": fields,
            "checks": checks,
            "transplant_calibration": {"statistic": "shift", "threshold": 0.5},
        }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{defense}-seed0.json").write_text(json.dumps(cell))
