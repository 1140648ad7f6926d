"""The fine-tune cache: one checkpoint per (sigma, H), trained epoch by epoch under a file lock.

Fine-tune cache. ``<cache>/<key>/epoch-<e>/`` is the checkpoint after epoch e of the fine-tune identified by
``key`` = sha256 of (pre-trained model folder and its file sizes/mtimes, training data checksum and subset,
learning rate, batch size, max length, seed, sigma, H). A per-key ``fcntl`` file lock makes concurrent trials
of the same (sigma, H) wait for one fine-tune instead of repeating it; the lock is released by the OS if a trial
is killed (ASHA stop, interruption), and an epoch folder appears only complete (``frs_ray.storage.build_once``:
written to a private folder, then renamed; a leftover of a killed trial is removed when the next one builds). A trial that finds the epochs cached *replays* their recorded dev accuracies to Tune.

Epoch-wise training (for ASHA). Epoch e is one ``finetune(..., epochs=1)`` call that starts from the checkpoint
of epoch e-1 (epoch 1 from the pre-trained model), with the training seed ``seed + e - 1`` (data order and
noise). Differences to one ``frs finetune --epochs E`` run, stated plainly: the learning-rate schedule warms up
and decays within each epoch (a cyclic schedule), and AdamW's moments restart each epoch. Clip_rho stays the
same: epochs >= 2 use the reference norms of epoch 1 (the pre-trained weights, as in one run), not those of the
previous epoch. After each epoch the centre model's accuracy on a clean dev subset (``dev_acc``) is reported;
ASHA stops trials whose fine-tune is below the cut at a rung, so a bad (sigma, H) costs few epochs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from frs_ray.storage import build_once, file_lock

from .settings import StudySettings

__all__ = ["EPOCH_MARKER", "centre_accuracy", "ensure_finetuned", "file_lock", "finetune_key"]

EPOCH_MARKER = "tune_epoch.json"  # an epoch folder is complete when this file exists


def _model_fingerprint(path: str | Path) -> list:
    p = Path(path)
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in p.iterdir() if f.is_file())


def finetune_key(s: StudySettings, sigma: float, top_h: int, train_sha256: str) -> tuple[str, dict[str, Any]]:
    """Cache key of the fine-tune of (sigma, H): everything that changes its weights, except the epoch count."""
    ident = {
        "model": s.model,
        "model_path": s.model_path,
        "model_files": _model_fingerprint(s.model_path),
        "train_data": s.train_data,
        "train_sha256": train_sha256,
        "train_n": s.train_n,
        "lr": s.lr,
        "batch_size": s.batch_size,
        "max_length": s.max_length,
        "seed": s.seed,
        "sigma": float(sigma),
        "top_h": int(top_h),
        "finetune_mode": "perturb",
        "scheme": "epochwise-v1",
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return f"s{float(sigma):g}-H{int(top_h)}-{digest[:12]}", ident


def centre_accuracy(checkpoint: Path, texts: Sequence[str], labels: Sequence[int], max_length: int) -> float:
    """Accuracy of the un-noised centre model Clip_rho(theta) of a checkpoint."""
    from frs_ray.backends.hf import HFClassifier

    backend = HFClassifier(checkpoint, max_length=max_length)
    pred = backend.predict_proba(texts).argmax(axis=1)
    return float(sum(int(a == b) for a, b in zip(pred, labels)) / len(labels))


def _train_one_epoch(
    s: StudySettings, sigma: float, top_h: int, epoch: int, prev: Path | None, out: Path, train, norms0: dict[str, float] | None
) -> dict[str, Any]:
    """Epoch ``epoch`` as one ``finetune(epochs=1)`` call from ``prev`` (None: the pre-trained model)."""
    import frs_ray.smoothing.finetune as ft
    from frs_ray.config import FinetuneConfig, build

    cfg = build(
        FinetuneConfig,
        {
            "model": str(prev) if prev else s.model_path,
            "data": s.train_data,
            "data_dir": s.data_dir,
            "epochs": 1,
            "batch_size": s.batch_size,
            "learning_rate": s.lr,
            "max_length": s.max_length,
            "max_train_examples": s.train_n,
            "seed": s.seed + epoch - 1,
            "smoothing": {"sigma": sigma, "top_h": top_h, "finetune_mode": "perturb"},
        },
    )
    # Clip_rho relative to the pre-trained weights (epoch 1's reference norms) in every epoch
    return ft.finetune(cfg, train, out, progress=False, norms=norms0)


def ensure_finetuned(
    s: StudySettings,
    sigma: float,
    top_h: int,
    dev: dict[str, Any],
    report: Callable[[dict[str, Any]], None],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
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
        info_file = ep_dir / EPOCH_MARKER
        made = False
        if not info_file.is_file():
            with file_lock(
                Path(s.cache_dir) / f"{key}.lock",
                on_wait=lambda: log(f"waiting for another trial's fine-tune {key} epoch {epoch}"),
            ):
                if not info_file.is_file():  # not made while we waited
                    root.mkdir(parents=True, exist_ok=True)
                    (root / "key.json").write_text(json.dumps(ident, indent=2))
                    for stale in root.glob(".epoch-*.building-*"):  # a killed trial's; builders hold the key lock
                        shutil.rmtree(stale, ignore_errors=True)
                    sub = train.subset(s.train_n, seed=s.seed)
                    prev = root / f"epoch-{epoch - 1}" if epoch > 1 else None
                    if prev is not None and norms0 is None:
                        norms0 = json.loads((root / "epoch-1" / "frs.json").read_text())["smoothing"]["reference_norms"]
                    log(f"fine-tune {key}: epoch {epoch}/{s.epochs} on {len(sub)} examples of {s.train_data}")

                    def build_epoch(tmp: Path, epoch=epoch, prev=prev, sub=sub) -> None:
                        started = time.perf_counter()
                        meta = _train_one_epoch(s, sigma, top_h, epoch, prev, tmp, sub, norms0)
                        acc = centre_accuracy(tmp, dev["texts"], dev["labels"], s.max_length)
                        meta["base_model"] = s.model_path
                        meta["tune"] = {
                            "epoch": epoch,
                            "of": s.epochs,
                            "previous": str(prev) if prev else None,
                            "scheme": "epoch-wise finetune(epochs=1) calls; see tune/study/finetune_cache.py",
                            "train_examples": len(sub),
                        }
                        (tmp / "frs.json").write_text(json.dumps(meta, indent=2))
                        info = {
                            "epoch": epoch,
                            "dev_acc": acc,
                            "dev_n": len(dev["labels"]),
                            "train_loss": meta["training"]["final_loss"],
                            "steps": meta["training"]["steps"],
                            "seconds": round(time.perf_counter() - started, 2),
                        }
                        (tmp / EPOCH_MARKER).write_text(json.dumps(info, indent=2))  # the marker: written last

                    build_once(ep_dir, EPOCH_MARKER, build_epoch)
                    trained += 1
                    made = True
        info = json.loads(info_file.read_text())
        dev_acc = info["dev_acc"]
        report({"phase": "finetune", "epoch": epoch, "dev_acc": dev_acc, "replayed": not made, "train_loss": info["train_loss"]})
    return {
        "checkpoint": str(root / f"epoch-{s.epochs}"),
        "key": key,
        "epochs_trained": trained,
        "reused": trained == 0,
        "dev_acc": dev_acc,
        "seconds": round(time.perf_counter() - t0, 2),
    }
