"""Evaluation: metrics, the defenses sharing FRS's machinery, and a real tiny `frs eval` grid (resumable)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from frs_ray.certify.certificate import ABSTAIN
from frs_ray.defenses.base import DefensePrediction
from frs_ray.defenses.registry import known_defenses
from frs_ray.errors import ConfigError
from frs_ray.evaluation import metrics as M
from frs_ray.evaluation.config import load_eval_config


def P(label, radius=None, length=10, spans=()):
    return DefensePrediction(label, length, 1, 0.1, radius=radius, radius_unconditional=radius, spans=list(spans))


def test_ca_pa_asr_count_abstain_as_wrong_and_no_success():
    preds = [P(1), P(0), P(ABSTAIN), P(1)]
    assert M.clean_accuracy(preds, [1, 0, 1, 0]) == 0.5
    assert M.poisoned_accuracy(preds, [0, 0, 0, 0]) == 0.25
    assert M.attack_success_rate(preds, target=1) == 0.5
    assert M.abstain_rate(preds) == 0.25


def test_certified_accuracy_levels_and_radius_stats():
    preds = [P(1, 3, 10), P(1, 1, 10), P(0, 5, 10), P(ABSTAIN, None, 10)]
    labels = [1, 1, 1, 1]
    ca = M.certified_accuracy(preds, labels, [0.1, 0.2, 0.3, 0.4])
    assert ca == {"0.1": 0.5, "0.2": 0.25, "0.3": 0.25, "0.4": 0.0}
    assert M.radius_stats(preds, labels) == {"avg": 2.0, "max": 3.0, "share_positive": 1.0}
    assert M.certified_accuracy([P(1)], [1])["0.1"] is None  # empirical defense: no certificate


def test_certified_columns_use_the_certificate_not_the_vote():
    # (vote label, certificate label): a clear vote whose certificate abstains is correct for CA, not for certified CA
    preds = [
        DefensePrediction(1, 10, 1, 0.1, radius=None, certified_label=ABSTAIN),
        DefensePrediction(1, 10, 1, 0.1, radius=2.0, certified_label=1),
        DefensePrediction(0, 10, 1, 0.1, radius=None, certified_label=ABSTAIN),
    ]
    assert M.clean_accuracy(preds, [1, 1, 1]) == pytest.approx(2 / 3)
    cert = M.certified_view(preds)
    assert M.clean_accuracy(cert, [1, 1, 1]) == pytest.approx(1 / 3)
    assert M.abstain_rate(cert) == pytest.approx(2 / 3) and M.abstain_rate(preds) == 0.0
    assert M.certified_accuracy(preds, [1, 1, 1], [0.1, 0.3]) == {"0.1": pytest.approx(1 / 3), "0.3": 0.0}
    assert M.radius_stats(preds, [1, 1, 1])["avg"] == 2.0  # only the certified-correct input
    assert M.certified_view([P(1)]) is None  # empirical defense


def test_majority_vote_is_the_prediction_and_ties_abstain():
    from frs_ray.certify.bounds import majority_vote

    assert majority_vote([3, 7]) == 1 and majority_vote([5, 1, 2]) == 0
    assert majority_vote([4, 4]) == ABSTAIN and majority_vote([1, 3, 3]) == ABSTAIN
    for bad in ([], [0, 0], [-1, 3]):
        with pytest.raises(ConfigError):
            majority_vote(bad)


def test_certificate_vote_label_is_the_vote_majority_and_certified_label_the_bound():
    from frs_ray.certify.smooth import VotePlan, finalize_certificate
    from frs_ray.config import CertifyConfig

    plan = VotePlan(
        text="a b c", length_tokens=3, span_tokens=0, omega_h=0.9, omega_l=0.1, spans=[], fuzz_queries=0, select=[], estimate=[]
    )
    c = finalize_certificate(plan, [3, 7], [4, 6], CertifyConfig(k=10), ["neg", "pos"])
    assert c.vote_label == 1 and c.abstained and c.certified_label == ABSTAIN  # 13 of 20 votes: a majority, no certificate
    c = finalize_certificate(plan, [0, 10], [0, 10], CertifyConfig(k=10), ["neg", "pos"])
    assert c.vote_label == 1 and c.certified_label == 1 and not c.abstained


def test_prediction_from_certificate_keeps_both_labels_and_picks_the_radius_that_applies():
    from frs_ray.certify.smooth import VotePlan, finalize_certificate
    from frs_ray.config import CertifyConfig

    spans = [
        {"start": 0, "end": 1, "text": "a", "score": 0.5, "tokens": [0, 1], "visits": 2},
        {"start": 2, "end": 3, "text": "b", "score": 0.2, "tokens": [1, 2], "visits": 1},
    ]

    def cert(omega_h, omega_l, select, estimate):
        plan = VotePlan(
            text="a b c d e f",
            length_tokens=6,
            span_tokens=1,
            omega_h=omega_h,
            omega_l=omega_l,
            spans=spans,
            fuzz_queries=3,
            select=[(0, "x")] * sum(select),
            estimate=[(0, "x")] * sum(estimate),
            seconds={"fuzz": 0.25},
        )
        return finalize_certificate(plan, select, estimate, CertifyConfig(k=10), ["neg", "pos"], {"vote": 0.5})

    fuzzed = cert(0.9, 0.1, [0, 40], [0, 400])
    p = DefensePrediction.from_certificate(fuzzed, n_spans=1)
    assert (p.vote_label, p.certified_label) == (fuzzed.vote_label, fuzzed.certified_label) == (1, 1)
    assert p.radius == fuzzed.radius.conditional.tokens == 1 and p.radius_assumes == fuzzed.radius.conditional.assumes
    assert p.radius_unconditional == fuzzed.radius.unconditional.tokens
    assert p.spans == [(0, 1)] and DefensePrediction.from_certificate(fuzzed).spans == [(0, 1), (2, 3)]
    assert (p.length_tokens, p.queries, p.seconds) == (6, 3 + 440, 0.75)
    assert DefensePrediction.from_certificate(fuzzed, "unconditional").radius == fuzzed.radius.unconditional.tokens
    # T(x') got no higher probability: the randomization was uniform, so the unconditional radius applies
    uniform = cert(0.9, 0.9, [0, 40], [0, 400])
    assert uniform.radius.unconditional.tokens > uniform.radius.conditional.tokens == 1
    u = DefensePrediction.from_certificate(uniform)
    assert u.radius == uniform.radius.unconditional.tokens and u.spans == []
    assert DefensePrediction.from_certificate(uniform, uniform_fallback=False).radius == 1
    abstained = DefensePrediction.from_certificate(cert(0.9, 0.1, [3, 7], [4, 6]))
    assert (abstained.vote_label, abstained.certified_label, abstained.radius) == (1, ABSTAIN, None)


def test_localization_requires_whole_trigger_piece():
    assert M.span_contains([(0, 10)], [(2, 4)])
    assert not M.span_contains([(3, 10)], [(2, 4)])
    assert M.localization_rate([P(1, spans=[(0, 5)]), P(1, spans=[(6, 9)])], [[(1, 3)], [(1, 3)]]) == 0.5
    assert M.localization_rate([P(1)], [[(1, 3)]]) is None


def test_all_defenses_registered():
    assert {
        "none",
        "onion",
        "textguard",
        "uniform",
        "no-ftr",
        "ranmask",
        "frs",
        "no-bmps",
        "no-bmps-ft",
        "no-bmps-inf",
        "strip",
        "rap",
    } <= set(known_defenses())


def test_eval_config_rejects_unknown_and_bad_profile(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"datasetz": ["sst2"]}))
    with pytest.raises(ConfigError, match="datasetz: unknown field"):
        load_eval_config(bad)
    with pytest.raises(ConfigError, match="unknown profile"):
        load_eval_config(None, profile="huge")
    with pytest.raises(ConfigError, match="does not exist"):
        load_eval_config(tmp_path / "missing.yaml")
    (tmp_path / "e.yaml").write_text("seeds: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_eval_config(tmp_path / "e.yaml")
    q = load_eval_config(None, profile="quick")
    assert q.n_clean == 100 and q.victim.epochs == 1 and load_eval_config(None, profile="paper").n_clean is None


def test_eval_cli_bad_config_exits_2(tmp_path, capsys):
    from frs_ray.cli import main

    (tmp_path / "c.json").write_text(json.dumps({"defenses": ["frs", "magic"], "attacks": ["badnets"]}))
    assert main(["eval", "--config", str(tmp_path / "c.json")]) == 2  # rejected before any model is trained
    assert "unknown defense(s) ['magic']" in capsys.readouterr().err
    (tmp_path / "d.json").write_text(json.dumps({"attacks": ["badnetz"]}))
    assert main(["eval", "--config", str(tmp_path / "d.json")]) == 2
    assert "unknown attack(s) ['badnetz']" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_eval_grid_is_real_and_resumable(tmp_path, data_dir):
    from frs_ray.cli import main

    cfg = {
        "name": "tiny",
        "out_dir": str(tmp_path / "eval"),
        "zoo": str(tmp_path / "zoo"),
        "datasets": ["sst2"],
        "attacks": ["badnets"],
        "defenses": ["none", "frs", "uniform", "no-bmps-inf", "textguard"],
        "n_clean": 6,
        "n_triggered": 6,
        "budgets": [2, 3],
        "victim": {"max_train_examples": 48, "epochs": 1, "learning_rate": 1e-4, "max_length": 64, "batch_size": 16},
        "poison": {"max_examples": 48, "epochs": 1, "batch_size": 16},
        "certify": {"k": 4, "n_estimate": 12, "fuzzing": {"budget": 3}},
        # uniform runs sequential CERTIFY (rounds of 12, then up to 24 estimation votes): n_max reaches a cell
        "defense_params": {"textguard": {"m": 3, "max_pooled_examples": 48}, "uniform": {"n_max": 24}},
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    assert main(["eval", "--config", str(path), "--no-progress", "--results-dir", str(tmp_path / "res")]) == 0
    root = tmp_path / "eval" / "tiny"
    doc = json.loads((root / "eval.json").read_text())
    recs = {r["defense"]: r for r in doc["records"]}
    assert set(recs) == {"none", "frs", "uniform", "no-bmps-inf", "textguard"}
    # every rate recomputed here from the cell's stored predictions and the test labels (target 1, binary task:
    # a triggered sentence's original label is 0)
    from frs_ray.data import load_dataset

    clean_labels = load_dataset("sst2", "test", data_dir).subset(6, seed=0).labels
    for name, r in recs.items():
        for k in ("dataset", "attack", "defense", "ca", "pa", "asr", "avg_radius", "max_radius", "seeds"):
            assert k in r
        c = json.loads((root / f"cells/sst2/badnets/{name}-seed0.json").read_text())
        clean, trig = c["predictions"]["clean"], c["predictions"]["triggered"]
        assert len(clean) == 6 and len(trig) == c["data"]["n_triggered"] > 0
        assert r["ca"] == pytest.approx(np.mean([p[0] == y for p, y in zip(clean, clean_labels)]))
        assert r["pa"] == pytest.approx(np.mean([p[0] == 0 for p in trig]))
        assert r["asr"] == pytest.approx(np.mean([p[0] == 1 for p in trig]))
        if r["ca_certified"] is not None:
            assert r["ca_certified"] == pytest.approx(np.mean([p[1] == y for p, y in zip(clean, clean_labels)]))
            assert r["asr_certified"] == pytest.approx(np.mean([p[1] == 1 for p in trig]))
    assert recs["none"]["avg_radius"] is None and recs["none"]["clean_queries_per_input"] == 1
    assert recs["frs"]["clean_queries_per_input"] == 3 + 4 + 12  # budget + n_select + n_estimate
    # uniform (no fuzzing queries): n_select + 12 or 24 estimation votes per text, as its certificates say
    ucell = json.loads((root / "cells/sst2/badnets/uniform-seed0.json").read_text())
    assert ucell["defense_settings"]["certify"]["n_max"] == 24
    for kind in ("clean", "triggered"):
        assert 4 + 12 <= recs["uniform"][f"{kind}_queries_per_input"] <= 4 + 24
    assert "sequential" in ucell["metrics"] and set(ucell["metrics"]["sequential"]["clean"]["stops"]) <= {
        "target",
        "futile",
        "n_max",
    }
    assert set(recs["frs"]["localization_by_budget"]) == {"2", "3"}
    assert "trigger lies inside" in recs["frs"]["radius_assumes"]
    cell = json.loads((root / "cells/sst2/badnets/frs-seed0.json").read_text())
    assert cell["data"]["test_sha256"] and cell["settings"]["seed"] == 0 and cell["models"]["smoothed"]
    rows = list(csv.DictReader((root / "eval.csv").open()))
    assert {"dataset", "attack", "defense", "ca", "pa", "asr", "avg_radius", "max_radius"} <= set(rows[0])
    # published copies are named after the run ("tiny"), so another config's run never overwrites them
    published = (tmp_path / "res" / "tiny.md").read_text()
    assert "](tiny_ca_pa_asr.png)" in published and "](tiny_certified_accuracy.png)" in published
    assert (root / "eval_certified_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "res" / "tiny_ca_pa_asr.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "res" / "eval.md").exists()
    # prediction = the vote majority, certified columns = the certificate: certified CA can only be lower
    for name in ("frs", "uniform", "textguard"):
        assert recs[name]["ca_certified"] <= recs[name]["ca"] + 1e-9
    assert recs["none"]["ca_certified"] is None
    assert cell["predictions_fields"] == ["vote_label", "certified_label", "radius"]
    # a text longer than the model window is read as the victim's model reads it (cut), not rejected
    from frs_ray.config import CertifyConfig, build
    from frs_ray.defenses.base import DefenseContext
    from frs_ray.defenses.registry import build_defense

    ctx = DefenseContext(
        cell["models"]["plain"],
        cell["models"]["smoothed"],
        cell["models"]["poisoned"],
        None,
        tmp_path / "work",
        certify=build(CertifyConfig, {"k": 4, "n_estimate": 4, "fuzzing": {"budget": 2}}),
    )
    [p] = build_defense("frs", ctx).predict(["a fine film " * 60])
    assert p.length_tokens == 180 and p.queries == 2 + 4 + 4  # fully certified: budget + n_select + n_estimate
    assert p.certified_label == ABSTAIN  # 4 estimation votes can never certify: 0.05 ** (1 / 4) < 0.5
    # resume: nothing is recomputed
    mtimes = {p: p.stat().st_mtime for p in (root / "cells").rglob("*.json")}
    assert main(["eval", "--config", str(path), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime for p in (root / "cells").rglob("*.json")} == mtimes


def test_summary_does_not_mix_cells_of_older_settings():
    from frs_ray.evaluation.report import summarize

    def cell(seed, ca, victim_epochs, created):
        return {
            "dataset": "sst2",
            "attack": "badnets",
            "defense": "frs",
            "seed": seed,
            "created": created,
            "settings": {"seed": seed, "victim": {"epochs": victim_epochs}},
            "wall_seconds": 1.0,
            "data": {"n_clean": 10, "n_triggered": 10},
            "metrics": {"ca": ca, "pa": 0.5, "asr": 0.1, "certified_accuracy": {"0.1": 0.2}},
        }

    [rec] = summarize([cell(0, 0.9, 3, "2026-01-02"), cell(1, 0.7, 3, "2026-01-03"), cell(2, 0.1, 1, "2026-01-01")])
    assert rec["seeds"] == [0, 1] and rec["stale_cells_skipped"] == 1
    assert rec["ca"] == pytest.approx(0.8) and rec["machines"] == ["not recorded"]


def test_zoo_builds_in_a_private_folder_and_keeps_the_first_finished(tmp_path):
    """Two processes needing one model never delete each other's files: each builds in its own folder, the first
    to finish is moved into place, a later copy is dropped; an interrupted folder (no marker) is replaced."""
    from frs_ray.evaluation.zoo import _build_once

    def build(tmp, text="ours"):
        assert ".building-" in tmp.name
        tmp.mkdir(parents=True)
        (tmp / "model.bin").write_text(text)
        (tmp / "frs.json").write_text("{}")

    out = tmp_path / "sst2" / "badnets-x" / "victim-plain-y"
    _build_once(out, "frs.json", build)
    assert (out / "model.bin").read_text() == "ours"
    _build_once(out, "frs.json", lambda tmp: pytest.fail("a finished model is rebuilt"))

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "partial.bin").write_text("no marker")
    _build_once(interrupted, "frs.json", build)
    assert not (interrupted / "partial.bin").exists() and (interrupted / "model.bin").read_text() == "ours"

    raced = tmp_path / "raced"

    def other_process_finishes_first(tmp):
        build(tmp, "late")
        raced.mkdir()
        (raced / "model.bin").write_text("first")
        (raced / "frs.json").write_text("{}")

    _build_once(raced, "frs.json", other_process_finishes_first)
    assert (raced / "model.bin").read_text() == "first"
    assert not [p for p in tmp_path.rglob("*") if ".building-" in p.name]
