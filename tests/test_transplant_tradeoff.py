"""benchmarks/transplant_tradeoff.py: the CA / PA / ASR of a span check at any threshold, read off the frs and
uniform cells of an eval run. Cells written here in `frs eval`'s format for real SST-2 sentences (the clean subset
and BadNets triggered set that `frs eval` builds), with chosen votes, so every rate can be computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eval_cells import load_benchmark, write_cell

from frs_ray.attacks import make_trigger
from frs_ray.attacks.triggered import build_triggered_set
from frs_ray.data import load_dataset

N = 6


def _module():
    return load_benchmark("transplant_tradeoff")


@pytest.fixture(scope="module")
def sets(data_dir):
    test = load_dataset("sst2", "test", data_dir)
    clean = test.subset(N, seed=0)
    ts = build_triggered_set(test, make_trigger("badnets"), 1, seed=0, max_examples=N)
    return test, clean, ts


def _write(folder: Path, defense: str, test, ts, clean_votes, trig_votes, checks=None) -> None:
    write_cell(folder, defense, N, test, ts, clean_votes, trig_votes, checks, ["label", "shift", "flip", "kept"])


def test_sweep_mixes_frs_and_uniform_votes_by_the_threshold(tmp_path, sets, data_dir, monkeypatch):
    monkeypatch.setenv("FRS_DATA_DIR", str(data_dir))
    test, clean, ts = sets
    yc, yt = np.array(clean.labels), np.array(ts.labels)
    folder = tmp_path / "sst2" / "badnets"
    # frs: every clean vote wrong, every triggered vote right; uniform: clean right, triggered = target
    frs_c, frs_t = 1 - yc, yt
    uni_c, uni_t = yc, np.ones(N, dtype=int)
    _write(folder, "none", test, ts, yc, np.ones(N, dtype=int))
    _write(folder, "frs", test, ts, frs_c, frs_t)
    _write(folder, "uniform", test, ts, uni_c, uni_t)
    shifts = [0.1, 0.3, 0.6, 0.9, 0.2, 0.8] + [0.95, 0.7, 0.4, 0.85, 0.05, 0.99]
    kept = [s > 0.5 for s in shifts]
    votes_c = np.where(kept[:N], frs_c, uni_c)
    votes_t = np.where(kept[N:], frs_t, uni_t)
    checks = [[0, s, 0.0, k] for s, k in zip(shifts, kept)]
    _write(folder, "frs-transplant", test, ts, votes_c, votes_t, checks)
    res = _module().analyse(tmp_path, "sst2", 0)["badnets"]
    by_thr = {s["threshold"]: s["transplant"] for s in res["sweep"]}
    for thr in (0.0, 0.25, 0.5, 0.75, 1.0):
        keep = np.array(shifts) > thr
        ca = np.mean(np.where(keep[:N], frs_c, uni_c) == yc)
        asr = np.mean(np.where(keep[N:], frs_t, uni_t) == 1)
        assert by_thr[thr]["ca"] == pytest.approx(ca) and by_thr[thr]["asr"] == pytest.approx(asr)
        assert by_thr[thr]["kept_clean"] == pytest.approx(np.mean(keep[:N]))
    assert by_thr[1.0]["ca"] == 1.0 and by_thr[0.0]["ca"] == 0.0  # nothing kept: uniform's; all kept: frs's
    assert res["recorded"]["transplant"]["ca"] == pytest.approx(np.mean(votes_c == yc))
    # a recorded cell that breaks the identity (a vote that is neither frs's nor uniform's choice) stops the script
    bad_c = votes_c.copy()
    bad_c[0] = 1 - bad_c[0]
    _write(folder, "frs-transplant", test, ts, bad_c, votes_t, checks)
    with pytest.raises(SystemExit, match="not frs's where kept"):
        _module().analyse(tmp_path, "sst2", 0)
