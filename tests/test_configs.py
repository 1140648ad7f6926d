"""Every config file of the project loads; a typo anywhere in one fails at load, naming the bad key; the keys of
evaluation cells and zoo models are unchanged for unchanged settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from frs_ray.config import CertifyConfig
from frs_ray.errors import ConfigError
from frs_ray.evaluation.config import EvalConfig, load_eval_config
from frs_ray.evaluation.runner import cell_settings
from frs_ray.evaluation.zoo import attack_dir, settings_hash, victim_config, victim_dir
from frs_ray.serving.schemas import ClassifyOptions
from frs_ray.serving.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
EVAL_CONFIGS = sorted((ROOT / "configs" / "eval").glob("*.yaml"))
DEPLOYMENTS = sorted((ROOT / "deployments").glob("*.yaml"))


def _service_args(path: Path) -> list[dict]:
    return [app["args"] for app in yaml.safe_load(path.read_text())["applications"]]


def test_there_are_config_files():
    assert len(EVAL_CONFIGS) >= 6 and len(DEPLOYMENTS) >= 4


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: p.name)
def test_every_eval_config_loads(path):
    cfg = load_eval_config(path)
    assert cfg.datasets and cfg.attacks and cfg.defenses


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda p: p.name)
def test_every_deployment_loads(path):
    for args in _service_args(path):
        s = ServiceSettings.model_validate(args)
        assert s.certify.k == s.k and s.certify.voters.backend == s.voter_backend


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"certify": {"alpah": 0.1}}, "certify.alpah"),
        ({"certify": {"fuzzing": {"budgt": 3}}}, "certify.fuzzing.budgt"),
        ({"victim": {"epoch": 2}}, "victim.epoch"),
        ({"bmps": {"sigmaa": 0.02}}, "bmps.sigmaa"),
        ({"poison": {"poison_rte": 0.1}}, "poison.poison_rte"),
        ({"attack_overrides": {"ripple": {"lamda": 0.1}}}, "attack_overrides.ripple: invalid RippleConfig: lamda"),
        (
            {"attack_overrides": {"badnets": {"poison": {"epoch": 3}}}},
            "attack_overrides.badnets.poison: invalid PoisonConfig: epoch",
        ),
        ({"attack_overrides": {"badnetz": {}}}, "badnetz"),
        ({"defense_params": {"textguard": {"mm": 3}}}, "mm"),
        ({"defense_params": {"uniform": {"n_mx": 24}}}, "n_mx"),
        ({"defense_params": {"frs": {"randomize": {"omega_hh": 0.8}}}}, "randomize.omega_hh"),
        ({"defense_params": {"ranmask": {"mask_rate": 2.0}}}, "mask_rate"),
        ({"defense_params": {"frs-fluency": {"lm_batch_sze": 4}}}, "lm_batch_sze"),
        ({"defense_params": {"onoin": {}}}, "onoin"),
        ({"defense_params": {"none": {"k": 3}}}, "'k'"),
    ],
)
def test_eval_config_typo_fails_at_load_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_eval_config(ROOT / "configs" / "eval" / "sst2.yaml", overrides=overrides)
    assert key in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "certify, key",
    [
        ({"alpah": 0.1}, "certify.alpah"),
        ({"fuzzing": {"budgt": 3}}, "certify.fuzzing.budgt"),
        ({"randomize": {"omega_m": 2.0}}, "certify.randomize.omega_m"),
        ({"voters": {"backend": "vllm"}}, "certify.voters.backend"),
        ({"k": 7}, "certify.k"),
    ],
)
def test_deployment_typo_fails_at_load_naming_the_key(certify, key):
    args = _service_args(ROOT / "deployments" / "frs.yaml")[0]
    with pytest.raises(ValidationError) as e:
        ServiceSettings.model_validate({**args, "certify": {**args["certify"], **certify}})
    assert key in str(e.value), str(e.value)
    with pytest.raises(ValidationError, match="max_budgt"):
        ServiceSettings.model_validate({**args, "max_budgt": 3})


def test_request_options_take_certify_values():
    with pytest.raises(ValidationError, match="k"):
        ClassifyOptions.model_validate({"k": 0})
    with pytest.raises(ValidationError, match="alpha"):
        ClassifyOptions.model_validate({"alpha": 1.0})
    with pytest.raises(ValidationError, match="budgt"):
        ClassifyOptions.model_validate({"budgt": 3})
    assert ClassifyOptions.model_validate({"k": 5, "n_max": 40}).n_max == 40


# Computed with the code before the configs were typed (main at 2ffbf0a): cells and zoo models built then must
# still be found.
PINNED = [
    ("sst2.yaml", "sst2", "badnets", "frs", 0, "ad6f2449d8", "runs/zoo/sst2/badnets-14fd027a96/victim-bmps-77c7f7d30d"),
    ("sst2.yaml", "sst2", "ripple", "frs", 0, "83eab4251f", "runs/zoo/sst2/ripple-388a104610/victim-bmps-69eb25c85b"),
    ("char_level.yaml", "sst2", "badnets", "frs", 0, "2b7c7e85d7", "runs/zoo/sst2/badnets-14fd027a96/victim-bmps-77c7f7d30d"),
    (
        "sst2_paper_victim.yaml",
        "sst2",
        "badnets",
        "frs",
        0,
        "7b1fdf4aea",
        "runs/zoo/sst2/badnets-14fd027a96/victim-bmps-08bf331428",
    ),
    ("sst2_sequential.yaml", "sst2", "ripple", "frs", 0, "eb680223f0", "runs/zoo/sst2/ripple-388a104610/victim-bmps-69eb25c85b"),
    ("multi.yaml", "agnews", "badnets", "frs", 0, "8e05a2301e", "runs/zoo/agnews/badnets-14fd027a96/victim-bmps-535e3f5f48"),
]


@pytest.mark.parametrize("name, dataset, attack, defense, seed, cell, zoo", PINNED)
def test_cell_and_zoo_keys_are_pinned(name, dataset, attack, defense, seed, cell, zoo):
    cfg = load_eval_config(ROOT / "configs" / "eval" / name)
    assert settings_hash(cell_settings(cfg, dataset, attack, defense, seed)) == cell
    settings = cfg.attack_settings(attack)
    base = str(attack_dir("runs/zoo", dataset, attack, settings) / "poisoned")
    ft = victim_config(base, dataset, cfg.given("victim"), cfg.bmps, seed, cfg.data_dir)
    assert str(victim_dir("runs/zoo", dataset, attack, settings, ft)) == zoo


def test_given_keeps_the_written_values():
    cfg = load_eval_config(None, profile="quick", overrides={"victim": {"epochs": 1}, "certify": {"k": 20}})
    assert cfg.victim.epochs == 1.0 and isinstance(cfg.victim.epochs, float)
    assert cfg.given("victim")["epochs"] == 1 and isinstance(cfg.given("victim")["epochs"], int)
    assert cfg.given("certify") == {"k": 20} and cfg.given("bmps") == {}
    assert cfg.record()["certify"] == {"k": 20}
    built = EvalConfig(certify=CertifyConfig(k=5), bmps={"sigma": 0.02})
    assert built.given("certify") == {"k": 5} and built.given("bmps") == {"sigma": 0.02}
