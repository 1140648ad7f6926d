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
from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import _Strict, build
from ..config import deep_merge as _deep_merge
from ..errors import ConfigError

_PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_clean": 100, "n_triggered": 100, "seeds": [0],
        "victim": {"max_train_examples": 2000, "epochs": 1, "learning_rate": 1e-4, "max_length": 128, "batch_size": 32},
        "poison": {"max_examples": 1500, "epochs": 2, "learning_rate": 5e-5, "max_length": 64, "batch_size": 32},
        # BadNets: 3 epochs at lr 1e-4, or the victim's clean fine-tune (lr 1e-4) erases part of the backdoor
        # (docs/results/attacks.md).
        "attack_overrides": {"badnets": {"poison": {"epochs": 3, "learning_rate": 1e-4}},
                             "ripple": {"poison": {"max_examples": 800, "epochs": 1, "batch_size": 16}},
                             "ripple-domain": {"poison": {"max_examples": 800, "epochs": 1, "batch_size": 16}},
                             # BadPre: 4000 steps on 8000 texts, the fewest of the settings tried whose backdoor
                             # survives the victim's fine-tune on every triggered sentence (which label the
                             # collapsed representation lands on is the victim's fine-tune's choice, not the
                             # attacker's; docs/results/attacks.md).
                             "badpre": {"steps": 4000, "head_steps": 200, "max_examples": 8000},
                             # App. K / L perturbations: the same stronger poisoning as BadNets, for the same
                             # reason (docs/results/attacks.md)
                             **{a: {"poison": {"epochs": 3, "learning_rate": 1e-4}}
                                for a in ("negation", "sentiment", "degree", "reorder", "multiseg")}},
    },
    "paper": {
        "n_clean": None, "n_triggered": None, "seeds": [0, 1, 2, 3, 4],
        "victim": {"epochs": 3, "learning_rate": 2e-5, "max_length": 128, "batch_size": 32},
        "poison": {"max_examples": 100000, "epochs": 3, "learning_rate": 5e-5, "max_length": 128, "batch_size": 32},
        "attack_overrides": {},
    },
}


class EvalConfig(_Strict):
    """A grid of datasets x attacks x defenses x seeds."""

    profile: Literal["quick", "paper"] = Field("quick", description="defaults for sizes and training (see module doc)")
    name: str = Field("eval", description="run name: results go to <out_dir>/<name>")
    out_dir: str = Field("runs/eval", description="where cell results, plots and the summary are written")
    zoo: str = Field("runs/zoo", description="cache of poisoned and fine-tuned models (shared between runs)")
    data_dir: str | None = Field(None, description="data folder (default: $FRS_DATA_DIR, then ../shared/data)")
    datasets: list[str] = Field(["sst2"], min_length=1, description="tasks: sst2, offenseval, agnews, ...")
    attacks: list[str] = Field(["badnets", "ripple"], min_length=1, description="attack names (frs_ray.attacks.known_attacks()); 'clean' = no attack")
    defenses: list[str] = Field(["none", "onion", "textguard", "uniform", "ranmask", "frs"], min_length=1,
                                description="defense names (frs_ray.defenses.known_defenses())")
    seeds: list[int] = Field([0], min_length=1, description="evaluation seeds (victim fine-tune, defense randomness, test subset)")
    target: int = Field(1, ge=0, description="attacker's target label")
    n_clean: int | None = Field(100, ge=1, description="clean test sentences per cell (seeded subset; None = all)")
    n_triggered: int | None = Field(100, ge=1, description="triggered test sentences per cell (None = all non-target)")
    levels: list[float] = Field([0.1, 0.2, 0.3, 0.4, 0.5], description="perturbation levels for certified accuracy (Table 5)")
    budgets: list[int] = Field([3, 5, 10], description="MCTS budgets for the trigger-localization rate (Appendix I)")
    model: str = Field("minilm", description="clean pre-trained model the attacks poison")
    victim: dict[str, Any] = Field(default_factory=dict, description="FinetuneConfig fields of the victim's fine-tune")
    poison: dict[str, Any] = Field(default_factory=dict, description="PoisonConfig fields shared by the task-aware attacks")
    attack_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-attack settings (e.g. {'ripple': {'lam': 0.1}})")
    certify: dict[str, Any] = Field(default_factory=dict, description="CertifyConfig fields (k, alpha, fuzzing, randomize, ...) shared by the smoothing defenses")
    defense_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-defense parameters")
    bmps: dict[str, Any] = Field(default_factory=dict, description="SmoothingConfig fields of the BMPS fine-tune (sigma, top_h, rho)")

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

    def attack_settings(self, attack: str) -> dict[str, Any]:
        """Settings of ``attack``'s config (what the zoo hashes)."""
        over = json.loads(json.dumps(self.attack_overrides.get(attack, {})))
        poison = {"model": self.model, "target": self.target, **self.poison, **over.pop("poison", {})}
        if attack == "badpre":
            keep = {k: v for k, v in poison.items() if k in ("max_length", "seed")}
            return {**keep, **over, "model": self.model}
        return {"poison": poison, **over}


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
