"""Library part of ``tune/sweep.py``: study settings, the Tune trial, the fine-tune cache and the outputs.

A *point* is one setting of the searched hyperparameters: ``K``, ``sigma``, ``H``, ``budget``, ``omega_h``,
``omega_m`` and ``max_distance`` (Lambda). ``sigma`` and ``H`` change the fine-tuning (Eq. 4); the others change
only inference, so every point with the same (sigma, H) reuses one fine-tuned checkpoint.

Fine-tune cache. ``<cache>/<key>/epoch-<e>/`` is the checkpoint after epoch e of the fine-tune identified by
``key`` = sha256 of (pre-trained model folder and its file sizes/mtimes, training data checksum and subset,
learning rate, batch size, max length, seed, sigma, H). A per-key ``fcntl`` file lock makes concurrent trials
of the same (sigma, H) wait for one fine-tune instead of repeating it; the lock is released by the OS if a trial
is killed (ASHA stop, interruption), and an epoch folder appears only complete (written to a temporary folder,
then renamed). A trial that finds the epochs cached *replays* their recorded dev accuracies to Tune.

Epoch-wise training (for ASHA). Epoch e is one ``finetune(..., epochs=1)`` call that starts from the checkpoint
of epoch e-1 (epoch 1 from the pre-trained model), with the training seed ``seed + e - 1`` (data order and
noise). Differences to one ``frs finetune --epochs E`` run, stated plainly: the learning-rate schedule warms up
and decays within each epoch (a cyclic schedule), and AdamW's moments restart each epoch. Clip_rho stays the
same: epochs >= 2 use the reference norms of epoch 1 (the pre-trained weights, as in one run), not those of the
previous epoch. After each epoch the centre model's accuracy on a clean dev subset (``dev_acc``) is reported;
ASHA stops trials whose fine-tune is below the cut at a rung, so a bad (sigma, H) costs few epochs.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from frs_ray.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE_TEMPLATE = REPO_ROOT / "deployments" / "frs.yaml"
SEARCHED = ("K", "sigma", "H", "budget", "omega_h", "omega_m", "max_distance")
PAPER_DEFAULTS = {"K": 20, "sigma": 0.01, "H": 10, "budget": 10, "omega_h": 0.9, "omega_m": 0.15, "max_distance": 0.5}
# Columns of results.csv, in order (the first eight are the ones the issue asks for).
CSV_COLUMNS = [
    "K", "sigma", "H", "budget", "ca", "pa", "asr", "avg_radius",
    "omega_h", "omega_m", "max_distance", "abstain", "abstain_triggered", "avg_radius_unconditional",
    "avg_radius_all", "queries_per_input", "seconds_per_input", "dev_acc", "n_clean", "n_triggered",
    "finetune_reused", "epochs_trained", "pareto", "best", "trial_id", "checkpoint",
]
# Objectives of the multi-objective search and of the Pareto front.
OBJECTIVES = [("ca", "max"), ("asr", "min"), ("avg_radius_all", "max")]


# ============================================================================================== settings
@dataclass
class StudySettings:
    """Everything that defines a study (saved in study.json; the trials get a copy)."""

    name: str
    out: str
    mode: str = "grid"  # grid | optuna
    design: str = "product"  # product | oat (one-at-a-time around the paper's defaults, as in Table 8)
    model: str = "minilm"
    model_path: str = ""
    model_depth: int | None = None
    train_data: str = "sst2"
    data: str = "sst2"
    split: str = "test"
    dev_split: str = "dev"
    data_dir: str = ""
    triggered: str = ""
    triggered_labels: str = "auto"  # auto | original | target
    target: int | None = None
    values: dict[str, list] = field(default_factory=dict)  # searched values per parameter
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    train_n: int | None = None
    clean_n: int = 200
    triggered_n: int = 200
    dev_n: int = 200
    seed: int = 42
    cert_seed: int = 0
    alpha: float = 0.05
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
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudySettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


INFERENCE_ONLY = ("K", "budget", "omega_h", "omega_m", "max_distance")


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
    from frs_ray.config import CertifyConfig, RandomizeConfig, SmoothingConfig, build

    flag = {"K": "K", "sigma": "sigma", "H": "H", "budget": "budget", "omega_h": "omega-h", "omega_m": "omega-m",
            "max_distance": "max-distance"}
    checks = {
        "K": lambda v: build(CertifyConfig, {"k": v}),
        "sigma": lambda v: build(SmoothingConfig, {"sigma": v}),
        "H": lambda v: build(SmoothingConfig, {"top_h": v}),
        "budget": lambda v: build(CertifyConfig, {"fuzzing": {"budget": v}}),
        "omega_m": lambda v: build(RandomizeConfig, {"omega_m": v, "omega_h": 1.0}),
        "omega_h": lambda v: build(RandomizeConfig, {"omega_h": v, "omega_m": 0.0}),
        "max_distance": lambda v: build(RandomizeConfig, {"max_distance": v}),
    }
    for key, vals in values.items():
        if is_range(vals) and key not in INFERENCE_ONLY:
            raise ConfigError(f"--{flag[key]}: give a list, not a range: {key} changes the fine-tune, and a list keeps "
                              f"the number of fine-tunes bounded")
        for v in _span(vals):
            try:
                checks[key](v)
            except ConfigError as exc:
                raise ConfigError(f"--{flag[key]} {v}: {exc}") from None
    if min(_span(values["omega_h"])) < max(_span(values["omega_m"])):
        raise ConfigError(f"every --omega-h must be >= every --omega-m (got omega_h {values['omega_h']}, "
                          f"omega_m {values['omega_m']})")


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


# ============================================================================================== data
def load_triggered(path: str | Path, labels: str, target: int | None, num_labels: int) -> dict[str, Any]:
    """Read a triggered test set TSV: ``sentence``/``text``, ``label``, optional ``target`` (and other columns).

    ``labels``: ``original`` (label is the true label; the target comes from the ``target`` column or
    ``target``), ``target`` (every label is the attacker's target, as in poisoned/<attack>/<data>/test.tsv;
    the original label is the other class, binary tasks only) or ``auto`` (``original`` when a ``target``
    column exists, else ``target``). Rows whose original label equals the target are dropped (PA and ASR are
    defined on non-target sentences).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read the triggered test set ({exc.strerror or exc})") from None
    lines = raw.decode("utf-8-sig", errors="strict").replace("\r\n", "\n").split("\n")
    lines = [ln for ln in lines if ln != ""]
    if len(lines) < 2:
        raise DataError(f"{p}: no rows")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    text_col = next((header.index(c) for c in ("sentence", "text") if c in header), None)
    if text_col is None or "label" not in header:
        raise DataError(f"{p}:1: expected columns 'sentence' (or 'text') and 'label', got {header}")
    label_col = header.index("label")
    target_col = header.index("target") if "target" in header else None
    if labels == "auto":
        labels = "original" if target_col is not None else "target"
    if labels not in ("original", "target"):
        raise ConfigError(f"--triggered-labels must be auto, original or target, got {labels!r}")
    if labels == "original" and target_col is None and target is None:
        raise ConfigError(f"{p} has no 'target' column: pass --target N, or --triggered-labels target if every "
                          f"label is the target")
    if labels == "target" and num_labels != 2:
        raise ConfigError(f"--triggered-labels target needs a binary task (the original label is the other class); "
                          f"this task has {num_labels} classes")
    texts, original, targets = [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(f"{p}:{lineno}: expected {len(header)} tab-separated fields, found {len(fields)}")
        try:
            y = int(fields[label_col])
            t = int(fields[target_col]) if target_col is not None and labels == "original" else None
        except ValueError:
            raise DataError(f"{p}:{lineno}: label/target is not an integer") from None
        if labels == "target":
            tgt, orig = y, 1 - y
        else:
            tgt, orig = (t if t is not None else int(target)), y
        if not (0 <= orig < num_labels and 0 <= tgt < num_labels):
            raise DataError(f"{p}:{lineno}: label {orig} / target {tgt} out of range 0..{num_labels - 1}")
        if orig == tgt or not fields[text_col].strip():
            continue
        texts.append(fields[text_col])
        original.append(orig)
        targets.append(tgt)
    if not texts:
        raise DataError(f"{p}: no triggered rows whose original label differs from the target")
    return {"texts": texts, "original": original, "target": targets, "sha256": hashlib.sha256(raw).hexdigest(),
            "source": str(p), "rows": len(lines) - 1, "labels_mode": labels}


def fitting_subset(texts: Sequence[str], n: int | None, seed: int, lengths: Sequence[int], max_length: int) -> list[int]:
    """Indices of a seeded random sample of ``n`` texts among those of at most ``max_length`` model tokens."""
    ok = [i for i, L in enumerate(lengths) if L <= max_length and texts[i].strip()]
    if n is None or n >= len(ok):
        return ok
    return sorted(random.Random(seed).sample(ok, n))


def model_depth(model_path: str | Path) -> int | None:
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def prepare_eval_data(s: StudySettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Clean test, clean dev (for ASHA) and triggered subsets that fit the model's max length, with checksums."""
    from transformers import AutoTokenizer

    from frs_ray.data import load_dataset

    clean = load_dataset(s.data, s.split, s.data_dir)
    dev = load_dataset(s.data, s.dev_split, s.data_dir)
    trig = load_triggered(s.triggered, s.triggered_labels, s.target, clean.num_labels)
    tok = AutoTokenizer.from_pretrained(s.model_path)

    def lengths(texts):
        return [len(x) for x in tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    ci = fitting_subset(clean.texts, s.clean_n, s.seed, lengths(clean.texts), s.max_length)
    di = fitting_subset(dev.texts, s.dev_n, s.seed, lengths(dev.texts), s.max_length)
    ti = fitting_subset(trig["texts"], s.triggered_n, s.seed, lengths(trig["texts"]), s.max_length)
    if not ci or not ti or not di:
        raise DataError(f"no evaluation text fits max_length {s.max_length} tokens")
    log(f"evaluation: {len(ci)} clean {s.data}/{s.split}, {len(ti)} triggered ({trig['source']}, labels: "
        f"{trig['labels_mode']}), {len(di)} clean {s.data}/{s.dev_split} for the per-epoch dev accuracy")
    return {
        "clean": {"texts": [clean.texts[i] for i in ci], "labels": [clean.labels[i] for i in ci],
                  "source": clean.source, "sha256": clean.sha256},
        "dev": {"texts": [dev.texts[i] for i in di], "labels": [dev.labels[i] for i in di],
                "source": dev.source, "sha256": dev.sha256},
        "triggered": {"texts": [trig["texts"][i] for i in ti], "original": [trig["original"][i] for i in ti],
                      "target": [trig["target"][i] for i in ti], "source": trig["source"], "sha256": trig["sha256"],
                      "labels_mode": trig["labels_mode"]},
        "label_names": clean.label_names,
        "num_labels": clean.num_labels,
    }


# ============================================================================================== fine-tune cache
def _model_fingerprint(path: str | Path) -> list:
    p = Path(path)
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in p.iterdir() if f.is_file())


def finetune_key(s: StudySettings, sigma: float, top_h: int, train_sha256: str) -> tuple[str, dict[str, Any]]:
    """Cache key of the fine-tune of (sigma, H): everything that changes its weights, except the epoch count."""
    ident = {
        "model": s.model, "model_path": s.model_path, "model_files": _model_fingerprint(s.model_path),
        "train_data": s.train_data, "train_sha256": train_sha256, "train_n": s.train_n, "lr": s.lr,
        "batch_size": s.batch_size, "max_length": s.max_length, "seed": s.seed, "sigma": float(sigma),
        "top_h": int(top_h), "finetune_mode": "perturb", "scheme": "epochwise-v1",
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return f"s{float(sigma):g}-H{int(top_h)}-{digest[:12]}", ident


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None):
    """Exclusive ``fcntl`` lock on ``path`` (released by the OS if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def centre_accuracy(checkpoint: Path, texts: Sequence[str], labels: Sequence[int], max_length: int) -> float:
    """Accuracy of the un-noised centre model Clip_rho(theta) of a checkpoint."""
    from frs_ray.backends.hf import HFClassifier

    backend = HFClassifier(checkpoint, max_length=max_length)
    pred = backend.predict_proba(texts).argmax(axis=1)
    return float(sum(int(a == b) for a, b in zip(pred, labels)) / len(labels))


def _train_one_epoch(s: StudySettings, sigma: float, top_h: int, epoch: int, prev: Path | None, out: Path,
                     train, norms0: dict[str, float] | None) -> dict[str, Any]:
    """Epoch ``epoch`` as one ``finetune(epochs=1)`` call from ``prev`` (None: the pre-trained model)."""
    import frs_ray.smoothing.finetune as ft
    from frs_ray.config import FinetuneConfig, build

    cfg = build(FinetuneConfig, {
        "model": str(prev) if prev else s.model_path, "data": s.train_data, "data_dir": s.data_dir, "epochs": 1,
        "batch_size": s.batch_size, "learning_rate": s.lr, "max_length": s.max_length,
        "max_train_examples": s.train_n, "seed": s.seed + epoch - 1,
        "smoothing": {"sigma": sigma, "top_h": top_h, "finetune_mode": "perturb"},
    })
    # Clip_rho relative to the pre-trained weights (epoch 1's reference norms) in every epoch
    return ft.finetune(cfg, train, out, progress=False, norms=norms0)


def ensure_finetuned(s: StudySettings, sigma: float, top_h: int, dev: dict[str, Any],
                     report: Callable[[dict[str, Any]], None], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make (or find) the checkpoint of (sigma, H) after ``s.epochs`` epochs; report each epoch's dev accuracy.

    Returns ``{"checkpoint", "key", "epochs_trained", "reused", "dev_acc", "seconds"}``.
    """
    from frs_ray.data import load_dataset

    train = load_dataset(s.train_data, "train", s.data_dir)
    key, ident = finetune_key(s, sigma, top_h, train.sha256)
    root = Path(s.cache_dir) / key
    trained, t0, dev_acc = 0, time.perf_counter(), float("nan")
    norms0 = None
    for epoch in range(1, s.epochs + 1):
        ep_dir = root / f"epoch-{epoch}"
        info_file = ep_dir / "tune_epoch.json"
        made = False
        if not info_file.is_file():
            with file_lock(Path(s.cache_dir) / f"{key}.lock",
                           on_wait=lambda: log(f"waiting for another trial's fine-tune {key} epoch {epoch}")):
                if not info_file.is_file():  # not made while we waited
                    root.mkdir(parents=True, exist_ok=True)
                    (root / "key.json").write_text(json.dumps(ident, indent=2))
                    for stale in root.glob("*.tmp*"):
                        shutil.rmtree(stale, ignore_errors=True)
                    sub = train.subset(s.train_n, seed=s.seed)
                    prev = root / f"epoch-{epoch - 1}" if epoch > 1 else None
                    if prev is not None and norms0 is None:
                        norms0 = json.loads((root / "epoch-1" / "frs.json").read_text())["smoothing"]["reference_norms"]
                    log(f"fine-tune {key}: epoch {epoch}/{s.epochs} on {len(sub)} examples of {s.train_data}")
                    tmp = root / f"epoch-{epoch}.tmp{os.getpid()}"
                    started = time.perf_counter()
                    meta = _train_one_epoch(s, sigma, top_h, epoch, prev, tmp, sub, norms0)
                    acc = centre_accuracy(tmp, dev["texts"], dev["labels"], s.max_length)
                    meta["base_model"] = s.model_path
                    meta["tune"] = {"epoch": epoch, "of": s.epochs, "previous": str(prev) if prev else None,
                                    "scheme": "epoch-wise finetune(epochs=1) calls; see tune/_study.py",
                                    "train_examples": len(sub)}
                    (tmp / "frs.json").write_text(json.dumps(meta, indent=2))
                    info = {"epoch": epoch, "dev_acc": acc, "dev_n": len(dev["labels"]),
                            "train_loss": meta["training"]["final_loss"], "steps": meta["training"]["steps"],
                            "seconds": round(time.perf_counter() - started, 2)}
                    (tmp / "tune_epoch.json").write_text(json.dumps(info, indent=2))
                    os.replace(tmp, ep_dir)
                    trained += 1
                    made = True
        info = json.loads(info_file.read_text())
        dev_acc = info["dev_acc"]
        report({"phase": "finetune", "epoch": epoch, "dev_acc": dev_acc, "replayed": not made,
                "train_loss": info["train_loss"]})
    return {"checkpoint": str(root / f"epoch-{s.epochs}"), "key": key, "epochs_trained": trained,
            "reused": trained == 0, "dev_acc": dev_acc, "seconds": round(time.perf_counter() - t0, 2)}


# ============================================================================================== the trial
def point_of(config: dict[str, Any]) -> dict[str, Any]:
    """The searched point of a Tune config (grid: ``config["point"]``; Optuna: the top-level keys)."""
    p = config.get("point", config)
    return {k: p[k] for k in SEARCHED}


def _predictions(certs) -> list:
    from frs_ray.defenses.base import DefensePrediction

    return [DefensePrediction(label=c.label, length_tokens=c.length_tokens, queries=sum(c.queries.values()),
                              seconds=sum(c.seconds.values()), radius=c.radius["conditional"].tokens,
                              radius_unconditional=c.radius["unconditional"].tokens) for c in certs]


def evaluate_point(checkpoint: str, point: dict[str, Any], s: StudySettings, data: dict[str, Any],
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Certify the clean and the triggered subsets with FRS at ``point``; CA, PA, ASR, radii, cost."""
    import numpy as np

    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig, build
    from frs_ray.evaluation import metrics as M

    cfg = build(CertifyConfig, {
        "k": int(point["K"]), "alpha": s.alpha, "seed": s.cert_seed, "n_estimate": s.n_estimate,
        "fuzzing": {"budget": int(point["budget"])},
        "randomize": {"omega_m": float(point["omega_m"]), "omega_h": float(point["omega_h"]),
                      "max_distance": float(point["max_distance"])},
    })
    clf = FRSClassifier.from_checkpoint(checkpoint, cfg)
    clean, trig = data["clean"], data["triggered"]
    t0 = time.perf_counter()
    certs = clf.certify(list(clean["texts"]) + list(trig["texts"]))  # one pass: fuzzing and votes batched together
    t2 = time.perf_counter()
    nc = len(clean["texts"])
    cp, tp = _predictions(certs[:nc]), _predictions(certs[nc:])
    radius = M.radius_stats(cp, clean["labels"])
    radius_u = M.radius_stats(cp, clean["labels"], unconditional=True)
    all_r = [(p.radius or 0) if (p.label == y and p.label >= 0) else 0 for p, y in zip(cp, clean["labels"])]
    targets = set(trig["target"])
    if len(targets) == 1:
        asr = M.attack_success_rate(tp, next(iter(targets)))
    else:  # several targets: per-row comparison, same definition
        asr = float(np.mean([p.label == t for p, t in zip(tp, trig["target"])]))
    n = len(cp) + len(tp)
    cost = M.cost(cp + tp)
    return {
        "ca": M.clean_accuracy(cp, clean["labels"]),
        "pa": M.poisoned_accuracy(tp, trig["original"]),
        "asr": asr,
        "avg_radius": radius["avg"] if radius["avg"] is not None else float("nan"),
        "avg_radius_unconditional": radius_u["avg"] if radius_u["avg"] is not None else float("nan"),
        "avg_radius_all": float(np.mean(all_r)),
        "abstain": M.abstain_rate(cp),
        "abstain_triggered": M.abstain_rate(tp),
        "queries_per_input": cost["queries_per_input"],
        "seconds_per_input": (t2 - t0) / n,
        "seconds_certify": round(t2 - t0, 2),
        "n_clean": len(cp),
        "n_triggered": len(tp),
    }


def run_trial(config: dict[str, Any], settings: dict[str, Any], data: dict[str, Any]) -> None:
    """The Tune trainable: fine-tune (or reuse) the checkpoint of (sigma, H), then certify at the point."""
    from ray import tune

    import torch

    from frs_ray.cli import _quiet_transformers

    s = StudySettings.from_dict(settings)
    p = point_of(config)
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id() if ctx is not None else "local"
    tag = f"K={p['K']} sigma={p['sigma']:g} H={p['H']} budget={p['budget']}"

    def log(msg: str) -> None:
        print(f"[trial {trial_id} {tag}] {msg}", flush=True)

    _quiet_transformers()
    torch.set_num_threads(max(1, int(s.cpus_per_trial)))
    started = time.perf_counter()
    ft = ensure_finetuned(s, p["sigma"], p["H"], data["dev"], tune.report, log)
    log(f"{'reused' if ft['reused'] else 'made'} checkpoint {ft['key']} (dev acc {ft['dev_acc']:.3f}); certifying")
    metrics = evaluate_point(ft["checkpoint"], p, s, data, log)
    log(f"CA {metrics['ca']:.3f} PA {metrics['pa']:.3f} ASR {metrics['asr']:.3f} "
        f"radius {metrics['avg_radius']:.3f} ({metrics['seconds_per_input']:.2f} s/input)")
    final = {**p, **metrics, "phase": "done", "checkpoint": ft["checkpoint"], "finetune_key": ft["key"],
             "finetune_reused": ft["reused"], "epochs_trained": ft["epochs_trained"],
             "finetune_seconds": ft["seconds"], "dev_acc_final": ft["dev_acc"], "trial_seconds":
             round(time.perf_counter() - started, 2), "run_id": s.run_id, "trial_id": trial_id}
    # no "epoch"/"dev_acc" key here: ASHA only looks at the fine-tune reports
    tune.report({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in final.items()
                 if k != "dev_acc"})


def optuna_space(values: dict[str, list | dict]) -> dict[str, Any]:
    """Tune search space for Optuna: a list -> categorical (a constant if one value); a range -> uniform
    (integers: randint over LOW..HIGH inclusive)."""
    from ray import tune

    space = {}
    for k, v in values.items():
        if is_range(v):
            space[k] = (tune.randint(v["low"], v["high"] + 1) if isinstance(v["low"], int)
                        else tune.uniform(v["low"], v["high"]))
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


# ============================================================================================== Pareto and selection
def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def pareto_front(rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]] = OBJECTIVES) -> list[bool]:
    """For each row, whether no other row is at least as good in every objective and better in one.

    ``objectives``: (key, "max" | "min"). A missing or NaN value counts as the worst possible.
    """
    for _, sense in objectives:
        if sense not in ("max", "min"):
            raise ValueError(f"objective sense must be 'max' or 'min', got {sense!r}")

    def score(row):
        out = []
        for key, sense in objectives:
            v = _num(row.get(key))
            v = -math.inf if math.isnan(v) else (v if sense == "max" else -v)
            out.append(v)
        return out

    scores = [score(r) for r in rows]
    front = []
    for i, a in enumerate(scores):
        dominated = any(all(bj >= aj for aj, bj in zip(a, b)) and any(bj > aj for aj, bj in zip(a, b))
                        for j, b in enumerate(scores) if j != i)
        front.append(not dominated)
    return front


def select_best(rows: Sequence[dict[str, Any]]) -> int | None:
    """Index of the chosen configuration: highest CA - ASR; ties: higher CA, larger avg_radius_all, fewer queries."""
    best, best_key = None, None
    for i, r in enumerate(rows):
        ca, asr = _num(r.get("ca")), _num(r.get("asr"))
        if math.isnan(ca) or math.isnan(asr):
            continue
        rad = _num(r.get("avg_radius_all"))
        key = (round(ca - asr, 9), ca, -math.inf if math.isnan(rad) else rad, -_num(r.get("queries_per_input") or 0))
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


# ============================================================================================== outputs
def _fmt(v: Any, digits: int = 3) -> str:
    """Numbers with ``digits`` significant digits; NaN and None as empty cells."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k, "")) for k in CSV_COLUMNS})


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """ASR vs CA and average radius vs CA, Pareto fronts marked, best configuration starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    sigmas = sorted({r["sigma"] for r in rows})
    cmap = plt.get_cmap("viridis", max(2, len(sigmas)))
    panels = [("asr", "min", "ASR (lower is better)", "ASR vs CA; Pareto front: CA up, ASR down"),
              ("avg_radius", "max", "average certified radius (tokens)", "radius vs CA; Pareto front: CA up, radius up")]
    for ax, (ykey, sense, ylabel, subtitle) in zip(axes, panels):
        ax.set_title(subtitle, fontsize=9)
        pts = [r for r in rows if not math.isnan(_num(r.get(ykey))) and not math.isnan(_num(r.get("ca")))]
        front = pareto_front(pts, [("ca", "max"), (ykey, sense)])
        for r, on in zip(pts, front):
            ax.scatter(r["ca"], r[ykey], s=25 + 2.5 * r["K"], color=cmap(sigmas.index(r["sigma"])),
                       edgecolors="red" if on else "none", linewidths=1.6 if on else 0, alpha=0.85, zorder=3)
            ax.annotate(f"K{r['K']}", (r["ca"], r[ykey]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        fr = sorted((r for r, on in zip(pts, front) if on), key=lambda r: r["ca"])
        if fr:
            ax.step([r["ca"] for r in fr], [r[ykey] for r in fr], where="post", color="red", lw=1.2, ls="--",
                    zorder=2, label="Pareto front")
        for r in pts:
            if r.get("best"):
                ax.scatter(r["ca"], r[ykey], marker="*", s=260, color="gold", edgecolors="black", zorder=4,
                           label="chosen (best_config.yaml)")
        ax.set_xlabel("CA (clean accuracy, abstain = wrong)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, "no finished trial has this metric", ha="center", transform=ax.transAxes)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=f"sigma={s:g}") for i, s in enumerate(sigmas)]
    h0, l0 = axes[0].get_legend_handles_labels()
    axes[0].legend(handles=handles + h0, fontsize=7, loc="best")
    fig.suptitle(title + "  (marker size ~ K)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_serve_config(row: dict[str, Any], s: StudySettings, path: Path) -> dict[str, Any]:
    """The chosen configuration as a Serve config in the format of deployments/frs.yaml (ready for ``serve run``)."""
    import yaml

    from frs_ray.serving.settings import ServiceSettings

    if SERVE_TEMPLATE.is_file():
        doc = yaml.safe_load(SERVE_TEMPLATE.read_text())
    else:  # the same structure, should the template be missing
        doc = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 180},
               "applications": [{"name": "frs", "route_prefix": "/", "import_path": "frs_ray.serving.router:build_app",
                                 "args": {"voter_actors": 2, "fuzz_actors": 2, "num_cpus_per_actor": 0.25,
                                          "torch_threads": 1, "max_budget": 50},
                                 "deployments": [{"name": "FRSRouter", "user_config": {}}]}]}
    app = doc["applications"][0]
    args = app.setdefault("args", {})
    k, budget = int(row["K"]), int(row["budget"])
    args["checkpoint"] = str(Path(row["checkpoint"]).resolve())
    args["k"] = k
    args["voter_actors"] = max(1, min(int(args.get("voter_actors", 2)), k))
    args["max_budget"] = max(int(args.get("max_budget", 50)), budget)
    certify = {"alpha": s.alpha, "seed": s.cert_seed, "fuzzing": {"budget": budget},
               "randomize": {"omega_m": float(row["omega_m"]), "omega_h": float(row["omega_h"]),
                             "max_distance": float(row["max_distance"])}}
    if s.n_estimate is not None:
        certify["n_estimate"] = s.n_estimate
    args["certify"] = certify
    ServiceSettings.model_validate(args)  # the router would reject anything else
    for dep in app.get("deployments", []):
        if dep.get("name") == "FRSRouter":
            dep["user_config"] = {"alpha": s.alpha, "budget": budget}
    header = (
        f"# serve run {path.resolve()}\n"
        f"# Best configuration of the FRS Tune study '{s.name}' (rule: highest CA - ASR; ties: higher CA, larger radius, fewer queries).\n"
        f"# K={k} sigma={_fmt(row['sigma'], 4)} H={row['H']} budget={budget} omega_h={row['omega_h']} "
        f"omega_m={row['omega_m']} Lambda={row['max_distance']}: CA={_fmt(row['ca'])} PA={_fmt(row['pa'])} "
        f"ASR={_fmt(row['asr'])} avg radius={_fmt(row['avg_radius']) or 'n/a'} (n={row['n_clean']} clean, "
        f"{row['n_triggered']} triggered).\n"
        f"# sigma and H are properties of the checkpoint (its frs.json); the service reads them from there.\n"
    )
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return doc


MD_COLUMNS = [("K", "K"), ("sigma", "sigma"), ("H", "H"), ("budget", "budget"), ("omega_h", "omega_H"),
              ("omega_m", "omega_M"), ("max_distance", "Lambda"), ("ca", "CA"), ("pa", "PA"), ("asr", "ASR"),
              ("avg_radius", "avg radius"), ("avg_radius_all", "radius (all)"), ("abstain", "abstain"),
              ("queries_per_input", "queries/input"), ("seconds_per_input", "s/input"), ("dev_acc", "dev acc"),
              ("finetune_reused", "ckpt reused"), ("pareto", "Pareto")]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for r in rows:
        cells = []
        for k, _ in MD_COLUMNS:
            v = r.get(k)
            cell = _fmt(v, 3)
            cells.append(f"**{cell}**" if r.get("best") and k in ("ca", "pa", "asr") else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(rows, s: StudySettings, study: dict[str, Any], path: Path, png_name: str) -> None:
    run = study["runs"][-1]
    best = next((r for r in rows if r.get("best")), None)
    ev = study["evaluation"]
    out = [
        f"# FRS hyperparameter study `{s.name}`",
        "",
        f"- Date: {run['finished']}; machine: {study['machine']['summary']}",
        f"- Command: `{run['command']}` (wall time of this run {run['wall_seconds']:.0f} s; study runs: {len(study['runs'])})",
        f"- Pre-trained model: `{s.model}`; fine-tuned on `{s.train_data}` (train, {s.train_n or 'all'} examples, "
        f"{s.epochs} epoch(s), lr {s.lr}, batch {s.batch_size}, max length {s.max_length}, seed {s.seed}); "
        f"fine-tune per (sigma, H), reused across K / budget / omegas",
        f"- Clean test: {ev['clean']['n']} sentences of `{ev['clean']['source']}`; triggered: {ev['triggered']['n']} "
        f"sentences of `{ev['triggered']['source']}` (labels: {ev['triggered']['labels_mode']}); one certification seed "
        f"({s.cert_seed}), alpha {s.alpha}",
        f"- Search: {s.mode}" + (f" ({s.design} design)" if s.mode == "grid" else f" (Optuna multi-objective, {s.num_samples} samples; "
                                                                                  f"objectives CA max, ASR min, radius(all) max)")
        + f"; ASHA on the per-epoch dev accuracy: {'on' if s.asha and s.epochs > 1 else 'off'}",
        f"- Trials: {study['trials']['finished']} finished, {study['trials']['stopped_early']} stopped early (ASHA), "
        f"{study['trials']['errored']} errored" + (f", {study['trials']['unfinished']} unfinished (interrupted; "
                                                   f"`--resume` continues)" if study['trials'].get('unfinished') else ""),
        "",
        "CA, PA, ASR: shares of the certified label (ABSTAIN counts as wrong and as no attack success). "
        "avg radius: mean conditional certified radius (tokens; trigger inside T(x')) over correct, non-abstained "
        "clean inputs (Table 2); radius (all): the same over all clean inputs with 0 for wrong or abstained ones "
        "(the search objective). Pareto: not dominated in (CA up, ASR down, radius (all) up).",
        "",
        markdown_table(rows),
        "",
        f"![trade-off]({png_name})",
        "",
    ]
    if best is not None:
        out += [f"Chosen configuration (highest CA - ASR): K={best['K']}, sigma={_fmt(best['sigma'], 4)}, H={best['H']}, "
                f"budget={best['budget']} -> `best_config.yaml` (`serve run {Path(s.out).resolve() / 'best_config.yaml'}`).", ""]
    if s.quick:
        out += ["*Quick mode*: tiny fine-tune and evaluation subsets; the numbers test the pipeline, they are not results.", ""]
    path.write_text("\n".join(out))


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    def ver(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    commit = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "git_commit": commit,
            "versions": {n: ver(n) for n in ("torch", "transformers", "ray", "optuna", "frs-ray")}}
    info["summary"] = f"{info['machine']}, {info['cpus']} cores, Python {info['python']}, torch {info['versions']['torch']}, ray {info['versions']['ray']}"
    return info


def rows_from_results(results: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Finished rows (phase == done) and counts of stopped/errored trials from a Tune ResultGrid."""
    rows, counts = [], {"finished": 0, "stopped_early": 0, "errored": 0}
    for res in results:
        m = res.metrics or {}
        if getattr(res, "error", None) is not None:
            counts["errored"] += 1
        elif m.get("phase") == "done":
            counts["finished"] += 1
            row = {k: m.get(k) for k in m}
            row["dev_acc"] = m.get("dev_acc_final")
            for k in ("avg_radius", "avg_radius_unconditional"):
                if row.get(k) is None:
                    row[k] = float("nan")
            rows.append(row)
        else:
            counts["stopped_early"] += 1
    rows.sort(key=lambda r: tuple(r[k] for k in SEARCHED))
    return rows, counts


def write_outputs(rows: list[dict[str, Any]], s: StudySettings, study: dict[str, Any]) -> dict[str, Path]:
    out = Path(s.out)
    front = pareto_front(rows)
    best = select_best(rows)
    for i, r in enumerate(rows):
        r["pareto"] = front[i]
        r["best"] = i == best
    paths = {"csv": out / "results.csv", "md": out / "results.md", "png": out / "tradeoff.png",
             "yaml": out / "best_config.yaml", "json": out / "study.json"}
    write_csv(rows, paths["csv"])
    plot_tradeoff(rows, paths["png"], f"FRS study {s.name}: {s.model}, {s.data}")
    if best is not None:
        write_serve_config(rows[best], s, paths["yaml"])
        study["best"] = {k: rows[best].get(k) for k in CSV_COLUMNS}
    else:
        paths.pop("yaml")
        study["best"] = None
    paths["json"].write_text(json.dumps(study, indent=2, default=str))
    write_markdown(rows, s, study, paths["md"], paths["png"].name)
    return paths


def publish(paths: dict[str, Path], folder: Path) -> None:
    """Copy results.md / results.csv / tradeoff.png to ``folder`` as tune.md, tune.csv, tune_tradeoff.png."""
    folder.mkdir(parents=True, exist_ok=True)
    md = paths["md"].read_text().replace(f"]({paths['png'].name})", "](tune_tradeoff.png)")
    (folder / "tune.md").write_text(md)
    shutil.copyfile(paths["csv"], folder / "tune.csv")
    shutil.copyfile(paths["png"], folder / "tune_tradeoff.png")


__all__ = ["CSV_COLUMNS", "OBJECTIVES", "SEARCHED", "StudySettings", "ensure_finetuned", "evaluate_point",
           "grid_points", "load_triggered", "pareto_front", "parse_list", "prepare_eval_data", "rows_from_results",
           "run_trial", "select_best", "validate_values", "write_outputs", "write_serve_config"]
