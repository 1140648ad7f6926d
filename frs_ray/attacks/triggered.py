"""Triggered test sets: triggered versions of the non-target sentences of any clean set, with trigger spans.

ASR and PA (Appendix B.1) are measured on these. Each sentence's trigger draw is seeded by (seed, row index), so
the same clean set, trigger and seed give the same file. Sentences the trigger cannot change (e.g. no sentiment
word to reverse) are left out and counted.

File format (TSV, header): ``sentence``, ``label`` (original, correct label), ``target``, ``trigger_spans`` (JSON
list of [start, end) character spans in ``sentence``). :func:`read_triggered` also reads the reference
data-poisoning files of ``shared/data/poisoned`` (``sentence``, ``label`` = target) when told the task's labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..data import TextDataset
from ..errors import DataError
from .base import Trigger, TriggeredSet


def build_triggered_set(
    clean: TextDataset, trigger: Trigger, target: int, seed: int = 0, max_examples: int | None = None
) -> TriggeredSet:
    """Trigger every non-target sentence of ``clean`` (first ``max_examples`` after a seeded shuffle, if given)."""
    rows = [i for i, y in enumerate(clean.labels) if y != target]
    if max_examples is not None and max_examples < len(rows):
        rows = sorted(np.random.default_rng(seed).permutation(rows)[:max_examples].tolist())
    texts, labels, spans, originals, skipped = [], [], [], [], 0
    for i in rows:
        t = trigger.apply(clean.texts[i], np.random.default_rng([seed, i]))
        if not t.changed:
            skipped += 1
            continue
        texts.append(t.text)
        originals.append(clean.texts[i])
        labels.append(clean.labels[i])
        spans.append(t.spans)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    return TriggeredSet(
        texts,
        labels,
        target,
        spans,
        clean.source,
        digest,
        trigger.name,
        seed,
        skipped,
        {"clean_sha256": clean.sha256, "rows": len(rows)},
        originals,
    )


def write_triggered(ts: TriggeredSet, path: str | Path) -> None:
    lines = ["sentence\tlabel\ttarget\ttrigger_spans"]
    for t, y, s in zip(ts.texts, ts.labels, ts.spans):
        lines.append(f"{t}\t{y}\t{ts.target}\t{json.dumps([list(x) for x in s])}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_triggered(path: str | Path, num_labels: int | None = None) -> TriggeredSet:
    """Read a file written by :func:`write_triggered`, or a reference poisoned file (``sentence``, ``label`` =
    target; binary tasks only, ``num_labels`` = 2: the original label is then the other class)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"triggered test set {p} does not exist")
    raw = p.read_bytes()
    lines = raw.decode("utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    texts, labels, spans, target = [], [], [], None
    if header[:4] == ["sentence", "label", "target", "trigger_spans"]:
        for n, line in enumerate(lines[1:], start=2):
            parts = line.split("\t")
            if len(parts) != 4:
                raise DataError(f"{p}:{n}: expected 4 tab-separated columns, got {len(parts)}")
            try:
                texts.append(parts[0])
                labels.append(int(parts[1]))
                target = int(parts[2])
                spans.append(tuple(tuple(s) for s in json.loads(parts[3])))
            except ValueError as exc:
                raise DataError(f"{p}:{n}: {exc}") from None
    elif header[:2] == ["sentence", "label"]:
        if num_labels != 2:
            raise DataError(
                f"{p} has only the target label per row; its original labels are known for binary tasks only (pass num_labels=2)"
            )
        for n, line in enumerate(lines[1:], start=2):
            s, y = line.rsplit("\t", 1)
            texts.append(s)
            target = int(y)
            labels.append(1 - int(y))
            spans.append(())
    else:
        raise DataError(f"{p}: header must be 'sentence, label, target, trigger_spans' or 'sentence, label'")
    if target is None:
        raise DataError(f"{p} has no rows")
    return TriggeredSet(texts, labels, target, spans, str(p), hashlib.sha256(raw).hexdigest(), p.stem, 0)
