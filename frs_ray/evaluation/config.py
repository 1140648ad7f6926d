"""``frs eval`` settings: one typed config (unknown fields rejected) and two profiles.

A config file (YAML or JSON) may set any field of :class:`EvalConfig`; ``profile`` picks the defaults first:

- ``quick`` (this 2-core CPU machine): MiniLM, victims fine-tuned on 2000 clean training sentences for one epoch,
  attackers train on 1500 sentences, 100 clean + 100 triggered test sentences per cell, one seed.
- ``paper`` (GPU hosts): all test sentences, the paper's 3 fine-tuning epochs at lr 2e-5 on the full training
  set, 5 seeds; ``model`` may name a bigger local model folder.

Seeds: the poisoned checkpoint of a (task, attack) is built once (attack seed 0); each evaluation seed changes the
victim's fine-tune (data subset, head init, data order, BMPS noise), the defenses' randomness and the sampled
test subset. Decision: the attacker's randomness is held fixed so that seeds measure the defense's variance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from ..attacks.poison import PoisonConfig
from ..config import CertifyConfig, FinetuneConfig, SmoothingConfig, StrictConfig, build
from ..config import deep_merge as _deep_merge
from ..errors import ConfigError

_NESTED = ("victim", "poison", "certify", "bmps")

_PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_clean": 100,
        "n_triggered": 100,
        "seeds": [0],
        "victim": {"max_train_examples": 2000, "epochs": 1, "learning_rate": 1e-4, "max_length": 128, "batch_size": 32},
        "poison": {"max_examples": 1500, "epochs": 2, "learning_rate": 5e-5, "max_length": 64, "batch_size": 32},
        # BadNets: 3 epochs at lr 1e-4, or the victim's clean fine-tune (lr 1e-4) erases part of the backdoor
        # (docs/results/attacks.md).
        "attack_overrides": {
            "badnets": {"poison": {"epochs": 3, "learning_rate": 1e-4}},
            "ripple": {"poison": {"max_examples": 800, "epochs": 1, "batch_size": 16}},
            "ripple-domain": {"poison": {"max_examples": 800, "epochs": 1, "batch_size": 16}},
            # BadPre: 4000 steps on 8000 texts, the fewest of the settings tried whose backdoor
            # survives the victim's fine-tune on every triggered sentence (which label the
            # collapsed representation lands on is the victim's fine-tune's choice, not the
            # attacker's; docs/results/attacks.md).
            "badpre": {"steps": 4000, "head_steps": 200, "max_examples": 8000},
            # App. K / L perturbations: the same stronger poisoning as BadNets, for the same
            # reason (docs/results/attacks.md)
            **{
                a: {"poison": {"epochs": 3, "learning_rate": 1e-4}}
                for a in ("negation", "sentiment", "degree", "reorder", "multiseg")
            },
        },
    },
    "paper": {
        "n_clean": None,
        "n_triggered": None,
        "seeds": [0, 1, 2, 3, 4],
        "victim": {"epochs": 3, "learning_rate": 2e-5, "max_length": 128, "batch_size": 32},
        "poison": {"max_examples": 100000, "epochs": 3, "learning_rate": 5e-5, "max_length": 128, "batch_size": 32},
        "attack_overrides": {},
    },
}


class EvalConfig(StrictConfig):
    """A grid of datasets x attacks x defenses x seeds.

    ``victim``, ``poison``, ``certify`` and ``bmps`` are the project's config models; every ``attack_overrides``
    entry is validated as its attack's config and every ``defense_params`` entry by its defense
    (:func:`~frs_ray.defenses.registry.check_defense_params`), so a typo fails when the file is loaded. Cells and
    zoo models are keyed on the settings as written (:meth:`given`), not on their validated form.
    """

    _given: dict[str, Any] = PrivateAttr(default_factory=dict)

    profile: Literal["quick", "paper"] = Field("quick", description="defaults for sizes and training (see module doc)")
    name: str = Field("eval", description="run name: results go to <out_dir>/<name>")
    out_dir: str = Field("runs/eval", description="where cell results, plots and the summary are written")
    zoo: str = Field("runs/zoo", description="cache of poisoned and fine-tuned models (shared between runs)")
    data_dir: str | None = Field(None, description="data folder (default: $FRS_DATA_DIR, then ../shared/data)")
    datasets: list[str] = Field(["sst2"], min_length=1, description="tasks: sst2, offenseval, agnews, ...")
    attacks: list[str] = Field(
        ["badnets", "ripple"], min_length=1, description="attack names (frs_ray.attacks.known_attacks()); 'clean' = no attack"
    )
    defenses: list[str] = Field(
        ["none", "onion", "textguard", "uniform", "ranmask", "frs"],
        min_length=1,
        description="defense names (frs_ray.defenses.known_defenses())",
    )
    seeds: list[int] = Field(
        [0], min_length=1, description="evaluation seeds (victim fine-tune, defense randomness, test subset)"
    )
    target: int = Field(1, ge=0, description="attacker's target label")
    n_clean: int | None = Field(100, ge=1, description="clean test sentences per cell (seeded subset; None = all)")
    n_triggered: int | None = Field(100, ge=1, description="triggered test sentences per cell (None = all non-target)")
    levels: list[float] = Field([0.1, 0.2, 0.3, 0.4, 0.5], description="perturbation levels for certified accuracy (Table 5)")
    budgets: list[int] = Field([3, 5, 10], description="MCTS budgets for the trigger-localization rate (Appendix I)")
    model: str = Field("minilm", description="clean pre-trained model the attacks poison")
    victim: FinetuneConfig = Field(
        default_factory=FinetuneConfig, description="the victim's fine-tune (model, data, seed and smoothing are set per cell)"
    )
    poison: PoisonConfig = Field(
        default_factory=PoisonConfig,
        description="poisoning shared by the task-aware attacks (model and target are this config's)",
    )
    attack_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-attack fields of its config (e.g. {'ripple': {'lam': 0.1}})"
    )
    certify: CertifyConfig = Field(default_factory=CertifyConfig, description="shared by the smoothing defenses")
    defense_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-defense parameters")
    bmps: SmoothingConfig = Field(default_factory=SmoothingConfig, description="the BMPS fine-tune (sigma, top_h, rho)")

    @model_validator(mode="wrap")
    @classmethod
    def _keep_given(cls, data: Any, handler: Any) -> "EvalConfig":
        cfg = handler(data)
        if isinstance(data, dict):
            given = {
                k: data[k].model_dump(exclude_unset=True) if isinstance(data[k], BaseModel) else data[k]
                for k in _NESTED
                if k in data
            }
            cfg._given = json.loads(json.dumps(given))
        cfg._check_nested()
        return cfg

    def given(self, field: str) -> dict[str, Any]:
        """A copy of nested field ``field`` as written in the merged profile, file and overrides (before defaults
        and type coercion): what cell and zoo hashes are computed from, so that equal settings keep their keys."""
        if field not in _NESTED:
            raise KeyError(f"{field!r} is not a nested field of EvalConfig ({', '.join(_NESTED)})")
        return json.loads(json.dumps(self._given.get(field, {})))

    @model_validator(mode="after")
    def _known_names(self) -> "EvalConfig":
        from ..attacks import known_attacks
        from ..defenses.registry import known_defenses

        bad_a = [a for a in self.attacks if a != "clean" and a not in known_attacks()]
        if bad_a:
            raise ValueError(f"unknown attack(s) {bad_a}; known: clean, {', '.join(known_attacks())}")
        bad_d = [d for d in self.defenses if d not in known_defenses()]
        if bad_d:
            raise ValueError(f"unknown defense(s) {bad_d}; known: {', '.join(known_defenses())}")
        if not all(0 < lv <= 1 for lv in self.levels):
            raise ValueError(f"perturbation levels must be in (0, 1], got {self.levels}")
        return self

    def _check_nested(self) -> None:
        """Validate ``attack_overrides`` and ``defense_params`` against their attacks' and defenses' configs
        (ConfigError naming the entry and the field)."""
        from ..attacks import attack_config, known_attacks
        from ..defenses.registry import check_defense_params, known_defenses

        for attack, over in self.attack_overrides.items():
            where = f"attack_overrides.{attack}"
            if attack not in known_attacks():
                raise ConfigError(f"{where}: unknown attack {attack!r}; known: {', '.join(known_attacks())}")
            if not isinstance(over.get("poison", {}), dict):
                raise ConfigError(f"{where}.poison must be a mapping of PoisonConfig fields")
            # every attack's poison settings are PoisonConfig's (BadPre keeps only max_length and seed of them)
            _located(f"{where}.poison", lambda: build(PoisonConfig, {**self.given("poison"), **over.get("poison", {})}))
        for attack in sorted({*self.attack_overrides, *(a for a in self.attacks if a in known_attacks())}):
            for dataset in self.datasets:
                _located(f"attack_overrides.{attack}", lambda: attack_config(attack, dataset, self.attack_settings(attack)))
        for defense, params in self.defense_params.items():
            where = f"defense_params.{defense}"
            if defense not in known_defenses():
                raise ConfigError(f"{where}: unknown defense {defense!r}; known: {', '.join(known_defenses())}")
            _located(where, lambda: check_defense_params(defense, params, self.certify))

    def record(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, nested fields as written (:meth:`given`)."""
        return {**self.model_dump(mode="json"), **{k: self.given(k) for k in _NESTED}}

    def attack_settings(self, attack: str) -> dict[str, Any]:
        """Settings of ``attack``'s config (what the zoo hashes)."""
        over = json.loads(json.dumps(self.attack_overrides.get(attack, {})))
        poison = {"model": self.model, "target": self.target, **self.given("poison"), **over.pop("poison", {})}
        if attack == "badpre":
            keep = {k: v for k, v in poison.items() if k in ("max_length", "seed")}
            return {**keep, **over, "model": self.model}
        return {"poison": poison, **over}


def _located(where: str, check: Callable[[], Any]) -> None:
    """Run ``check``; a ConfigError it raises is raised again with ``where`` (the entry of EvalConfig) in front."""
    try:
        check()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_eval_config(path: str | Path | None, profile: str | None = None, overrides: dict | None = None) -> EvalConfig:
    """Profile defaults, then the file (YAML/JSON), then ``overrides``; validated into :class:`EvalConfig`."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"evaluation config {p} does not exist")
        text = p.read_text(encoding="utf-8")
        try:
            if p.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as exc:
            raise ConfigError(f"{p} is not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping of settings, got {type(data).__name__}")
    prof = profile or data.get("profile") or "quick"
    if prof not in _PROFILES:
        raise ConfigError(f"unknown profile {prof!r}; use one of {', '.join(_PROFILES)}")
    merged = _deep_merge(_deep_merge(_PROFILES[prof], data), overrides or {})
    merged["profile"] = prof
    return build(EvalConfig, merged)
