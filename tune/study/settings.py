"""Study settings: the searched hyperparameters, ``StudySettings``, parsing and range checks of the searched
values, and the points of a grid study."""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal, Sequence

from pydantic import ConfigDict, Field

from frs_ray.config import CertifyConfig, FuzzConfig, RandomizeConfig, SmoothingConfig, StrictConfig, build
from frs_ray.errors import ConfigError

SEARCHED = ("K", "sigma", "H", "budget", "omega_h", "omega_m", "max_distance", "n_max")
# n_max: sequential CERTIFY's most estimation votes per text (frs_ray.certify.sequential); 0 is the fixed protocol


def _default(model: type[StrictConfig], name: str) -> Any:
    return model.model_fields[name].default


# The paper's values (Sec. 5.1, App. B.2.4), as the config models define them
PAPER_DEFAULTS = {
    "K": _default(CertifyConfig, "k"),
    "sigma": _default(SmoothingConfig, "sigma"),
    "H": _default(SmoothingConfig, "top_h"),
    "budget": _default(FuzzConfig, "budget"),
    "omega_h": _default(RandomizeConfig, "omega_h"),
    "omega_m": _default(RandomizeConfig, "omega_m"),
    "max_distance": _default(RandomizeConfig, "max_distance"),
    "n_max": 0,
}
# Searched values a caller may leave out: they take the paper's protocol (one value, the default above).
OPTIONAL = ("n_max",)
# Objectives of the multi-objective search and of the Pareto front.
OBJECTIVES = [("ca", "max"), ("asr", "min"), ("avg_radius_all", "max")]


class StudySettings(StrictConfig):
    """Everything that defines a study (saved in study.json; the trials get a copy). Unknown keys are rejected;
    assignments (``run_id``, ``out``, ``cache_dir`` of a resumed study) are validated."""

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    name: str
    out: str
    mode: Literal["grid", "optuna"] = "grid"
    design: Literal["product", "oat"] = "product"  # oat: one-at-a-time around the paper's defaults, as in Table 8
    model: str = "minilm"
    model_path: str = ""
    model_depth: int | None = None
    train_data: str = "sst2"
    data: str = "sst2"
    split: str = "test"
    dev_split: str = "dev"
    data_dir: str = ""
    triggered: str = ""
    triggered_labels: Literal["auto", "original", "target"] = "auto"
    target: int | None = None
    values: dict[str, list | dict] = Field(default_factory=dict)  # searched values (or LOW:HIGH ranges) per parameter
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    train_n: int | None = None
    clean_n: int = 200
    triggered_n: int = 200
    dev_n: int = 200
    seed: int = 42
    cert_seed: int = _default(CertifyConfig, "seed")
    alpha: float = _default(CertifyConfig, "alpha")
    n_estimate: int | None = None
    cpus_per_trial: float = 1.0
    num_samples: int = 16
    asha: bool = True
    grace_period: int = 1
    reduction_factor: int = 2
    cache_dir: str = ""
    quick: bool = False
    run_id: int = 1

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudySettings":
        """Settings of a saved study; ConfigError, naming the field, for an unknown or invalid one."""
        d = dict(d)
        if "values" in d:  # a study saved before a parameter became searched runs it at its default
            d["values"] = with_optional(d["values"])
        return build(cls, d)


INFERENCE_ONLY = ("K", "budget", "omega_h", "omega_m", "max_distance", "n_max")


def with_optional(values: dict[str, list]) -> dict[str, list]:
    """``values`` with every :data:`OPTIONAL` parameter it leaves out set to its default (one value)."""
    return {**{k: [PAPER_DEFAULTS[k]] for k in OPTIONAL if k not in values}, **values}


def is_range(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"low", "high"}


def _span(v: list | dict) -> list:
    """The values to range-check: a list itself, or a range's two ends."""
    return [v["low"], v["high"]] if is_range(v) else list(v)


def parse_list(text: str | Sequence, kind: type, name: str) -> list | dict:
    """``"10,20,40"`` -> [10, 20, 40]; ``"0.8:1.0"`` -> {"low": 0.8, "high": 1.0} (a range, for --mode optuna);
    a clear ConfigError for anything that is not a number."""
    if isinstance(text, str) and ":" in text:
        parts = text.split(":")
        if len(parts) != 2 or "," in text:
            raise ConfigError(f"--{name}: a range is written LOW:HIGH, got {text!r}")
        lo, hi = parse_list(parts[0], kind, name)[0], parse_list(parts[1], kind, name)[0]
        if lo > hi:
            raise ConfigError(f"--{name}: range {text!r} has LOW > HIGH")
        return {"low": lo, "high": hi}
    items = text if isinstance(text, (list, tuple)) else [t for t in str(text).split(",") if t.strip()]
    out = []
    for item in items:
        try:
            value = kind(str(item).strip()) if kind is int else float(item)
        except ValueError:
            raise ConfigError(f"--{name}: {item!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"--{name}: {item!r} is not a finite number")
        out.append(value)
    if not out:
        raise ConfigError(f"--{name}: no values given")
    return sorted(set(out), key=out.index)


def validate_values(values: dict[str, list]) -> None:
    """Range-check every searched value with the project's own config models (ConfigError on the first bad one)."""
    values = with_optional(values)
    flag = {
        "K": "K",
        "sigma": "sigma",
        "H": "H",
        "budget": "budget",
        "omega_h": "omega-h",
        "omega_m": "omega-m",
        "max_distance": "max-distance",
        "n_max": "n-max",
    }
    checks = {
        "K": lambda v: build(CertifyConfig, {"k": v}),
        "sigma": lambda v: build(SmoothingConfig, {"sigma": v}),
        "H": lambda v: build(SmoothingConfig, {"top_h": v}),
        "budget": lambda v: build(CertifyConfig, {"fuzzing": {"budget": v}}),
        "omega_m": lambda v: build(RandomizeConfig, {"omega_m": v, "omega_h": 1.0}),
        "omega_h": lambda v: build(RandomizeConfig, {"omega_h": v, "omega_m": 0.0}),
        "max_distance": lambda v: build(RandomizeConfig, {"max_distance": v}),
        "n_max": lambda v: v == 0 or build(CertifyConfig, {"k": 1, "n_max": v}),
    }
    for key, vals in values.items():
        if is_range(vals) and key not in INFERENCE_ONLY:
            raise ConfigError(
                f"--{flag[key]}: give a list, not a range: {key} changes the fine-tune, and a list keeps "
                f"the number of fine-tunes bounded"
            )
        for v in _span(vals):
            try:
                checks[key](v)
            except ConfigError as exc:
                raise ConfigError(f"--{flag[key]} {v}: {exc}") from None
    positive = [v for v in _span(values["n_max"]) if v > 0 or is_range(values["n_max"])]
    if positive and min(positive) < max(_span(values["K"])):
        raise ConfigError(
            f"every --n-max other than 0 (the fixed protocol) must be >= every --K (the first round has "
            f"K estimation votes): got n_max {values['n_max']}, K {values['K']}"
        )
    if min(_span(values["omega_h"])) < max(_span(values["omega_m"])):
        raise ConfigError(
            f"every --omega-h must be >= every --omega-m (got omega_h {values['omega_h']}, omega_m {values['omega_m']})"
        )


def _centre(key: str, vals: list) -> Any:
    default = PAPER_DEFAULTS[key]
    return default if default in vals else sorted(vals)[len(vals) // 2]


def grid_points(values: dict[str, list], design: str = "product") -> list[dict[str, Any]]:
    """The points of a grid study, ordered so that consecutive trials use *different* fine-tunes.

    ``product``: every combination. ``oat``: one parameter at a time around the centre (the paper's default
    where it is among the values, else the middle value), the shape of the paper's Table 8.
    Order: round-robin over the (sigma, H) groups, so that trials running at the same time fine-tune different
    checkpoints in parallel and later trials of a group find its checkpoint cached.
    """
    values = with_optional(values)
    ranged = [k for k in SEARCHED if is_range(values[k])]
    if ranged:
        raise ConfigError(f"ranges (LOW:HIGH) for {', '.join(ranged)} need --mode optuna; a grid takes lists")
    if design == "product":
        pts = [dict(zip(SEARCHED, combo)) for combo in itertools.product(*(values[k] for k in SEARCHED))]
    elif design == "oat":
        centre = {k: _centre(k, values[k]) for k in SEARCHED}
        pts, seen = [], set()
        for key in SEARCHED:
            for v in values[key]:
                p = {**centre, key: v}
                sig = tuple(p[k] for k in SEARCHED)
                if sig not in seen:
                    seen.add(sig)
                    pts.append(p)
    else:
        raise ConfigError(f"--design must be 'product' or 'oat', got {design!r}")
    groups: dict[tuple, list] = {}
    for p in pts:
        groups.setdefault((p["sigma"], p["H"]), []).append(p)
    ordered = []
    for layer in itertools.zip_longest(*groups.values()):
        ordered += [p for p in layer if p is not None]
    return ordered
