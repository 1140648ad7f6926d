"""Named datasets in the data folder: finding the folder, split files and label names.

A dataset folder (``"sst2"``, ``"poisoned/badnets/sst2"``) under the data dir holds one
``<split>.tsv`` per split and optionally a ``labels.txt`` of label names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from frs_ray.data.dataset import TextDataset
from frs_ray.data.formats import decode_lines, load_file, location, read_bytes
from frs_ray.errors import DataError

DATA_DIR_ENV = "FRS_DATA_DIR"
"""Environment variable naming the folder that holds the staged datasets."""

SPLITS = ("train", "dev", "test")
LABEL_NAMES_FILE = "labels.txt"

_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev"}

KNOWN_DATASETS: dict[str, dict[str, Any]] = {
    "sst2": {
        "label_names": ["negative", "positive"],
        "description": "SST-2 sentence-level split of backdoor papers (6920/872/1821)",
    },
    "offenseval": {
        "label_names": ["not_offensive", "offensive"],
        "description": "OLID / OffensEval 2019 subtask A (11915/1323/859)",
    },
    "agnews": {
        "label_names": ["World", "Sports", "Business", "Sci/Tech"],
        "description": "AG News (train is an 11106-row subset; dev 10000, test 7600)",
    },
    "imdb": {
        "label_names": ["negative", "positive"],
        "description": "IMDB reviews (20000/5000/5000)",
    },
    "twenty_newsgroups": {
        "label_names": None,
        "label_names_file": LABEL_NAMES_FILE,
        "description": "20 Newsgroups by date, headers/footers/quotes removed (9805/1089/7221)",
    },
    "hsol_davidson": {
        "label_names": ["neither", "hate_or_offensive"],
        "description": "Davidson et al. 2017 hate/offensive tweets, binary (19826/2478/2479)",
    },
}
"""Datasets expected in the data dir, with their label names (index = label id)."""


def canonical_split(split: str) -> str:
    """The split name with ``validation``/``valid``/``val`` mapped to ``dev``."""
    split = split.strip()
    return _SPLIT_ALIASES.get(split.lower(), split)


def default_data_dir() -> Path | None:
    """Find the folder of staged datasets.

    1. ``$FRS_DATA_DIR`` when set and non-empty (it must be an existing folder);
    2. the first existing of ``<cwd>/../shared/data`` and ``<repo root>/../shared/data``;
    3. ``None``.
    """
    env_value = os.environ.get(DATA_DIR_ENV, "")
    if env_value:
        path = Path(env_value).expanduser()
        if not path.is_dir():
            raise DataError(f"{DATA_DIR_ENV}={env_value!r}: {path} does not exist or is not a folder")
        return path
    repo_root = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _read_label_names_file(path: Path) -> list[str]:
    """Read ``labels.txt``: one name per line, or ``<id><TAB><name>`` lines for ids 0..n-1."""
    lines = decode_lines(read_bytes(path), str(path))
    entries = [(lineno, line) for lineno, line in enumerate(lines, start=1) if line.strip()]
    if not entries:
        raise DataError(f"{path}: no label names")
    if not all("\t" in line for _, line in entries):
        return [line.strip() for _, line in entries]
    names: list[str] = []
    for lineno, line in entries:
        index, name = line.split("\t", 1)
        if index.strip() != str(len(names)):
            raise DataError(f"{location(str(path), lineno)}: expected label id {len(names)}, found {index.strip()!r}")
        names.append(name.strip())
    return names


def _label_names_for(folder: Path, spec: str) -> list[str] | None:
    """Label names of a dataset folder: its ``labels.txt``, else the known dataset's names.

    A folder such as ``poisoned/badnets/sst2`` takes the names of its last component.
    """
    names_file = folder / LABEL_NAMES_FILE
    if names_file.is_file():
        return _read_label_names_file(names_file)
    info = KNOWN_DATASETS.get(spec) or KNOWN_DATASETS.get(Path(spec).name)
    if info is None or info.get("label_names") is None:
        return None
    return list(info["label_names"])


def _resolve_data_dir(data_dir: str | Path | None) -> Path:
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"data dir {path} does not exist or is not a folder")
        return path
    found = default_data_dir()
    if found is None:
        raise DataError(
            f"no data dir found (looked for ../shared/data next to the working directory and "
            f"the repository); set {DATA_DIR_ENV} to the folder that holds the datasets, or "
            f"pass a .tsv/.csv/.jsonl file"
        )
    return found


def _dataset_folder(spec: str, data_dir: str | Path | None) -> Path:
    """Folder of a named dataset, or a DataError naming the data dir that was searched."""
    if Path(spec).is_absolute() and Path(spec).is_dir():
        return Path(spec)
    root = _resolve_data_dir(data_dir)
    folder = root / spec
    if folder.is_dir():
        return folder
    kind = "dataset" if spec in KNOWN_DATASETS else "unknown dataset"
    raise DataError(
        f"{kind} {spec!r} not found: no folder {folder} in data dir {root}; known datasets: "
        f"{', '.join(KNOWN_DATASETS)} (or a relative folder such as poisoned/badnets/sst2, "
        f"a .tsv/.csv/.jsonl file, or hf:<owner>/<name>)"
    )


def _split_file(folder: Path, split: str) -> Path:
    canonical = canonical_split(split)
    if not canonical or "/" in canonical or "\\" in canonical:
        raise DataError(f"{folder}: invalid split name {split!r}")
    path = folder / f"{canonical}.tsv"
    if path.is_file():
        return path
    available = sorted(p.stem for p in folder.glob("*.tsv"))
    raise DataError(
        f"{path}: no split {split!r} in {folder}; available splits: {', '.join(available) if available else '(none)'}"
    )


def load_named(spec: str, split: str, data_dir: str | Path | None) -> TextDataset:
    """Load ``<data_dir>/<spec>/<split>.tsv`` with the folder's label names.

    ``data_dir`` of ``None`` means :func:`default_data_dir`; ``spec`` may also be an absolute
    dataset folder.
    """
    folder = _dataset_folder(spec, data_dir)
    path = _split_file(folder, split)
    return load_file(path, label_names=_label_names_for(folder, spec))
