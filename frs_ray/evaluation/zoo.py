"""The model zoo of an evaluation: poisoned pre-trained checkpoints and the victims fine-tuned from them, cached.

Layout under ``root`` (default ``runs/zoo``)::

    <task>/<attack>-<hash of attack settings>/poisoned/        what the victim downloads (attack.json inside)
    <task>/<attack>-<hash>/victim-<plain|bmps>-<hash of victim settings>/   the victim's fine-tuned checkpoint

``attack`` ``clean`` is the un-poisoned packaged model (no poisoned folder). A folder is reused when its
``attack.json`` / ``frs.json`` exists, so interrupted evaluations resume and evaluations that share models (the
attack benchmark and ``frs eval``) train each one once. ``tune/sweep.py`` does not use the zoo: it takes a
pre-trained model folder (e.g. a zoo entry's ``poisoned/``) and keeps its own fine-tune cache
(``tune/study/finetune_cache.py``). The hashes cover every setting, so a
changed setting never reuses a stale model. A model is built in a private folder and moved into place when done
(:func:`frs_ray.storage.build_once`), so two processes that need the same model at once (two ``frs eval`` runs,
one per core) never delete or overwrite each other's files: the first to finish is kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..attacks import run_attack
from ..attacks.poison import ATTACK_FILE
from ..config import FinetuneConfig, SmoothingConfig, build
from ..data import load_dataset
from ..smoothing.finetune import META_FILE, finetune
from ..storage import build_once as _build_once


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


# Settings added after checkpoints were first cached, with the value that reproduces the older behaviour: left
# out of the hash at that value, so every existing zoo entry keeps its name (and is not retrained).
_ADDED_SMOOTHING_DEFAULTS = {"data_noise": 0.0, "new_head": "smoothed"}


def _hashed(finetune: dict[str, Any]) -> dict[str, Any]:
    sm = {
        k: v
        for k, v in finetune["smoothing"].items()
        if not (k in _ADDED_SMOOTHING_DEFAULTS and v == _ADDED_SMOOTHING_DEFAULTS[k])
    }
    return {**finetune, "smoothing": sm}


def attack_dir(root: str | Path, task: str, attack: str, settings: dict[str, Any]) -> Path:
    return Path(root) / task / (f"{attack}-{settings_hash({'attack': attack, **settings})}" if attack != "clean" else "clean")


def poisoned_model(root: str | Path, task: str, attack: str, settings: dict[str, Any], progress: bool = True) -> str:
    """Path of the poisoned pre-trained model of ``attack`` for ``task`` (built once); ``"minilm"`` for clean."""
    if attack == "clean":
        return settings.get("poison", {}).get("model", "minilm")
    out = attack_dir(root, task, attack, settings) / "poisoned"
    _build_once(
        out,
        ATTACK_FILE,
        lambda tmp: run_attack(attack, tmp, task=task, settings=json.loads(json.dumps(settings)), progress=progress),
    )
    return str(out)


def victim_config(
    base: str, task: str, victim: dict[str, Any], smoothing: SmoothingConfig | None, seed: int, data_dir: str | None = None
) -> FinetuneConfig:
    """The victim's fine-tune of ``base`` on clean ``task`` train data; ``smoothing`` None = plain."""
    sm = smoothing or SmoothingConfig(finetune_mode="none")
    return build(
        FinetuneConfig, {**victim, "model": base, "data": task, "data_dir": data_dir, "seed": seed, "smoothing": sm.model_dump()}
    )


def victim_dir(root: str | Path, task: str, attack: str, attack_settings: dict[str, Any], cfg: FinetuneConfig) -> Path:
    """Where the victim fine-tuned with ``cfg`` lives in the zoo: ``victim-<plain|bmps>-<hash of cfg>``."""
    kind = "plain" if cfg.smoothing.finetune_mode == "none" else "bmps"
    return attack_dir(root, task, attack, attack_settings) / f"victim-{kind}-{settings_hash(_hashed(cfg.model_dump()))}"


def victim_checkpoint(
    root: str | Path,
    task: str,
    attack: str,
    attack_settings: dict[str, Any],
    victim: dict[str, Any],
    smoothing: SmoothingConfig | None,
    seed: int,
    data_dir: str | None = None,
    progress: bool = True,
) -> str:
    """The victim's fine-tune of the (poisoned) model on clean ``task`` train data (:func:`victim_config`),
    trained once into :func:`victim_dir`."""
    base = poisoned_model(root, task, attack, attack_settings, progress)
    cfg = victim_config(base, task, victim, smoothing, seed, data_dir)
    out = victim_dir(root, task, attack, attack_settings, cfg)
    if not (out / META_FILE).is_file():
        train = load_dataset(task, "train", data_dir).subset(cfg.max_train_examples, seed=cfg.seed)
        _build_once(out, META_FILE, lambda tmp: finetune(cfg, train, tmp, progress=progress))
    return str(out)
