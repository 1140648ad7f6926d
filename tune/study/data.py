"""Evaluation data of a study: the triggered test set, seeded subsets that fit the model's max length, and the
model's depth."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from frs_ray.errors import ConfigError, DataError

from .settings import StudySettings


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
        raise ConfigError(
            f"{p} has no 'target' column: pass --target N, or --triggered-labels target if every label is the target"
        )
    if labels == "target" and num_labels != 2:
        raise ConfigError(
            f"--triggered-labels target needs a binary task (the original label is the other class); "
            f"this task has {num_labels} classes"
        )
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
    return {
        "texts": texts,
        "original": original,
        "target": targets,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "source": str(p),
        "rows": len(lines) - 1,
        "labels_mode": labels,
    }


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
    log(
        f"evaluation: {len(ci)} clean {s.data}/{s.split}, {len(ti)} triggered ({trig['source']}, labels: "
        f"{trig['labels_mode']}), {len(di)} clean {s.data}/{s.dev_split} for the per-epoch dev accuracy"
    )
    return {
        "clean": {
            "texts": [clean.texts[i] for i in ci],
            "labels": [clean.labels[i] for i in ci],
            "source": clean.source,
            "sha256": clean.sha256,
        },
        "dev": {
            "texts": [dev.texts[i] for i in di],
            "labels": [dev.labels[i] for i in di],
            "source": dev.source,
            "sha256": dev.sha256,
        },
        "triggered": {
            "texts": [trig["texts"][i] for i in ti],
            "original": [trig["original"][i] for i in ti],
            "target": [trig["target"][i] for i in ti],
            "source": trig["source"],
            "sha256": trig["sha256"],
            "labels_mode": trig["labels_mode"],
        },
        "label_names": clean.label_names,
        "num_labels": clean.num_labels,
    }
