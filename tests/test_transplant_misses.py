"""benchmarks/transplant_misses.py: the clean accuracy a span-check defense loses and the attack wins it lets
through, by cause, read off `frs eval` cells. Cells written here in `frs eval`'s format for real SST-2 sentences
(the clean subset and BadNets triggered set `frs eval` builds), with chosen votes, so every count is known."""

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
    return load_benchmark("transplant_misses")


@pytest.fixture(scope="module")
def sets(data_dir):
    test = load_dataset("sst2", "test", data_dir)
    return test, test.subset(N, seed=0), build_triggered_set(test, make_trigger("badnets"), 1, seed=0, max_examples=N)


def _write(folder: Path, defense: str, test, ts, clean_votes, trig_votes, checks=None, sha=None, plain=None) -> None:
    write_cell(
        folder,
        defense,
        N,
        test,
        ts,
        clean_votes,
        trig_votes,
        checks,
        ["label", "shift", "flip", "transplant_kept", "fluency_suspicion", "fluency_kept", "kept"],
        sha=sha,
        plain=plain,
    )


def test_losses_and_wins_are_split_by_whether_the_span_was_kept(tmp_path, sets, data_dir, monkeypatch):
    monkeypatch.setenv("FRS_DATA_DIR", str(data_dir))
    test, clean, ts = sets
    yc, yt = np.array(clean.labels), np.array(ts.labels)
    folder = tmp_path / "sst2" / "badnets"
    # none: every clean sentence right, every triggered one the target; uniform: wrong on clean 4 and 5
    uni_c = yc.copy()
    uni_c[[4, 5]] = 1 - yc[[4, 5]]
    _write(folder, "none", test, ts, yc, np.ones(N, dtype=int))
    _write(folder, "uniform", test, ts, uni_c, np.ones(N, dtype=int))
    _write(folder, "frs", test, ts, 1 - yc, yt)  # frs stops every trigger
    kept = [True, True, False, False, False, False] + [True, True, True, False, False, False]
    # the defense: clean 0 (kept) and 4, 5 (dropped) wrong; triggered 0 (kept) and 3, 4 (dropped) go to the target
    vc = yc.copy()
    vc[[0, 4, 5]] = 1 - yc[[0, 4, 5]]
    vt = yt.copy()
    vt[[0, 3, 4]] = 1
    checks = [[0, 0.9 if k else 0.1, 0.0, k, 0.0, False, k] for k in kept]
    _write(folder, "frs-fluency-transplant", test, ts, vc, vt, checks)
    res = _module().analyse(tmp_path, ["sst2"], [0], "frs-fluency-transplant", examples=2)
    r = res["sst2"]["badnets"]["seeds"][0]
    assert r["kept_clean"] == pytest.approx(2 / N) and r["kept_triggered"] == pytest.approx(3 / N)
    assert r["ca"] == pytest.approx(3 / N) and r["ca_none"] == 1.0 and r["ca_uniform"] == pytest.approx(4 / N)
    assert r["clean_lost"] == {
        "total": 3,
        "gained": 0,
        "span_kept": 1,
        "span_dropped": 2,
        "span_dropped_uniform_also_wrong": 2,
    }
    assert r["attack_wins"] == {"total": 3, "span_dropped": 2, "span_dropped_stopped_by_frs": 2, "span_kept": 1}
    assert r["examples"]["clean lost, span kept"] == [clean.texts[0][:160]]
    assert r["examples"]["attack wins, span dropped"] == [ts.texts[3][:160], ts.texts[4][:160]]
    assert res["sst2"]["badnets"]["all"]["attack_wins"]["span_dropped"] == 2
    # any check votes as frs or uniform: frs is wrong on every clean input, uniform on 4 and 5; frs stops every trigger
    assert r["bounds"] == {"ca_ceiling": pytest.approx(4 / N), "asr_floor": 0.0}
    doc = {"defense": "frs-fluency-transplant", "command": "c", "date": "t", "cells": "x", "seeds": [0], "results": res}
    assert "| badnets | 0 | 0.500 | 33 / 50 | 100 / 67 / 0 / 50 | 1 / 2 (2) | 0 |" in _module().render(doc)
    assert "| 67 / 0 |" in _module().render(doc)
    nt = yc != 1  # clean sentences of the other label: share voted to the target 1
    assert list(yc[nt]) == [0, 0] and r["false_target"] == 0.5 and r["false_target_none"] == 0.0  # clean 0 voted 1
    # a cell whose triggered set is not the one rebuilt here stops the script instead of miscounting
    _write(folder, "frs-fluency-transplant", test, ts, vc, vt, checks, sha="0" * 64)
    with pytest.raises(SystemExit, match="triggered set does not match"):
        _module().analyse(tmp_path, ["sst2"], [0], "frs-fluency-transplant")


def test_floor_is_the_plain_victim_on_the_sentences_without_their_trigger(
    tmp_path, sets, data_dir, monkeypatch, minilm_checkpoint
):
    from frs_ray.backends.hf import HFClassifier

    monkeypatch.setenv("FRS_DATA_DIR", str(data_dir))
    test, clean, ts = sets
    # the originals are the clean test sentences the triggered ones were made from: BadNets inserted one word
    assert len(ts.originals) == len(ts) == N
    for orig, trig in zip(ts.originals, ts.texts):
        assert orig in test.texts and len(trig.split()) == len(orig.split()) + 1
    folder = tmp_path / "sst2" / "badnets"
    yc, yt = np.array(clean.labels), np.array(ts.labels)
    checks = [[0, 0.1, 0.0, False, 0.0, False, False]] * (2 * N)
    for d in ("none", "uniform", "frs"):
        _write(folder, d, test, ts, yc, np.ones(N, dtype=int), plain=minilm_checkpoint)
    _write(folder, "frs-transplant", test, ts, yc, yt, checks, plain=minilm_checkpoint)
    res = _module().analyse(tmp_path, ["sst2"], [0], "frs-transplant", floor=True)
    want = float(np.mean(HFClassifier(minilm_checkpoint).predict_proba(ts.originals).argmax(axis=1) == 1))
    assert res["sst2"]["badnets"]["seeds"][0]["asr_trigger_removed"] == pytest.approx(want)
    assert res["sst2"]["badnets"]["all"]["asr_trigger_removed"] == pytest.approx(want)
    doc = {"defense": "frs-transplant", "command": "c", "date": "t", "cells": "x", "seeds": [0], "floor": True, "results": res}
    assert f"| {100 * want:.0f} |" in _module().render(doc).split("## sst2")[1].splitlines()[4]
    assert "trigger removed" in _module().render(doc)
    # without --floor nothing runs a model and the column is absent
    plain = _module().analyse(tmp_path, ["sst2"], [0], "frs-transplant")
    assert "asr_trigger_removed" not in plain["sst2"]["badnets"]["seeds"][0]
    # a cell naming a victim that is not here stops with the path instead of a traceback
    _write(folder, "frs-transplant", test, ts, yc, yt, checks, plain=tmp_path / "gone")
    with pytest.raises(SystemExit, match="not on this machine"):
        _module().analyse(tmp_path, ["sst2"], [0], "frs-transplant", floor=True)
