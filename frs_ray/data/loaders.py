"""Labelled text datasets from a data folder, local files or the Hugging Face hub.

Three kinds of dataset spec are understood by :func:`load_dataset`:

* a dataset folder under the data dir (``"sst2"``, ``"poisoned/badnets/sst2"``), read from
  ``<data_dir>/<spec>/<split>.tsv``;
* a local ``.tsv``, ``.csv`` or ``.jsonl`` file (the split is ignored);
* ``"hf:<owner>/<name>[:<config>]"``, a dataset repository on the Hugging Face hub.

Every problem with the user's data raises :class:`~frs_ray.errors.DataError` whose message starts
with ``<file>:<line>:`` (1-based) where a line is to blame.

TSV files are read without any quoting: sentences may start with ``"``. Each line is split on tabs
and must have as many fields as the header (the staged data never has a tab inside a sentence).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import json
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from frs_ray.errors import ConfigError, DataError

DATA_DIR_ENV = "FRS_DATA_DIR"
"""Environment variable naming the folder that holds the staged datasets."""

HUB_PREFIX = "hf:"
TEXT_COLUMNS = ("sentence", "text")
"""Accepted names of the text column, in order of preference when both are present."""
LABEL_COLUMN = "label"
LOCAL_SUFFIXES = (".tsv", ".csv", ".jsonl")
SPLITS = ("train", "dev", "test")
LABEL_NAMES_FILE = "labels.txt"

_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev"}
_HUB_SPLIT_TOKENS = {
    "train": ("train",),
    "dev": ("validation", "dev", "valid", "val"),
    "test": ("test",),
}
_HUB_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl")
_TRUE_ENV_VALUES = {"1", "true", "yes", "on"}

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


@dataclass(frozen=True)
class TextDataset:
    """Texts with integer labels, and where they came from.

    ``sha256`` is the checksum of the file bytes that were read (for hub datasets: of the
    downloaded files, concatenated in the order they were read).
    """

    texts: list[str]
    labels: list[int]
    source: str
    sha256: str
    label_names: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(
                f"TextDataset: {len(self.texts)} texts but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes: ``len(label_names)`` when known, else ``max(label) + 1``."""
        if self.label_names is not None:
            return len(self.label_names)
        return max(self.labels) + 1 if self.labels else 0

    def subset(self, n: int | None, seed: int = 0) -> TextDataset:
        """Return a seeded random sample of ``n`` rows, kept in their original order.

        ``n`` of ``None`` or at least ``len(self)`` returns ``self``. ``source`` and ``sha256``
        are unchanged (they identify the file the rows came from).
        """
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise ConfigError(f"subset size must be >= 0, got {n}")
        indices = sorted(random.Random(seed).sample(range(len(self)), n))
        return dataclasses.replace(
            self,
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
        )


# --------------------------------------------------------------------------- data dir


def _is_true_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_ENV_VALUES


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
            raise DataError(
                f"{DATA_DIR_ENV}={env_value!r}: {path} does not exist or is not a folder"
            )
        return path
    repo_root = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


# --------------------------------------------------------------------------- low-level reading


def _read_bytes(path: Path) -> bytes:
    """Read a whole file, turning OS errors into :class:`DataError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode_lines(data: bytes, where: str) -> list[str]:
    """Split bytes into decoded lines, reporting the 1-based line of invalid UTF-8.

    A leading UTF-8 byte-order mark and a ``\\r`` before each ``\\n`` are removed. A final
    newline does not start an extra (empty) line.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    lines: list[str] = []
    for lineno, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{where}:{lineno}: invalid UTF-8 (byte {exc.start + 1} of the line: "
                f"{raw[exc.start:exc.start + 1]!r}); save the file as UTF-8"
            ) from None
    return lines


def _at(where: str, position: int, unit: str = "line") -> str:
    """Location prefix of an error message: ``file:line`` or ``file: row N``."""
    return f"{where}:{position}" if unit == "line" else f"{where}: {unit} {position}"


# --------------------------------------------------------------------------- rows and columns

_RawRow = tuple[int, Any, Any]
"""(1-based line or row number, text value, label value) before validation."""


def _find_columns(header: Sequence[str], where: str) -> tuple[int, int]:
    """Return the indices of the text and label columns of a header."""
    names = [str(name).strip().lower() for name in header]
    text_index = next((names.index(c) for c in TEXT_COLUMNS if c in names), None)
    label_count = names.count(LABEL_COLUMN)
    if text_index is None or label_count != 1:
        problem = "no text column" if text_index is None else (
            "no 'label' column" if label_count == 0 else "more than one 'label' column"
        )
        raise DataError(
            f"{where}: {problem} in header {list(header)}; expected a text column named "
            f"'sentence' or 'text' and one 'label' column"
        )
    return text_index, names.index(LABEL_COLUMN)


def _parse_label(value: Any, location: str) -> int:
    """Convert a label cell to a non-negative int."""
    if isinstance(value, bool):
        raise DataError(f"{location}: label {value!r} is not an integer")
    if isinstance(value, int):
        label = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        label = int(value)
    else:
        shown = "missing" if value is None else repr(value)
        raise DataError(f"{location}: label {shown} is not an integer")
    if label < 0:
        raise DataError(f"{location}: label {label} is negative (hidden test label?)")
    return label


def _check_text(value: Any, location: str) -> str:
    if not isinstance(value, str):
        shown = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise DataError(f"{location}: text is {shown}")
    if not value.strip():
        raise DataError(f"{location}: text is empty or whitespace-only")
    return value


def _validate_rows(
    rows: Sequence[_RawRow],
    where: str,
    label_names: Sequence[str] | None,
    unit: str = "line",
) -> tuple[list[str], list[int]]:
    """Check every row's text and label; return the texts and int labels."""
    if not rows:
        raise DataError(f"{where}: no data rows (the file is empty or has only a header)")
    texts: list[str] = []
    labels: list[int] = []
    for position, text, label_value in rows:
        location = _at(where, position, unit)
        texts.append(_check_text(text, location))
        label = _parse_label(label_value, location)
        if label_names is not None and label >= len(label_names):
            raise DataError(
                f"{location}: label {label} is out of range 0..{len(label_names) - 1} "
                f"({', '.join(label_names)})"
            )
        labels.append(label)
    return texts, labels


# --------------------------------------------------------------------------- file formats


def _parse_tsv(lines: list[str], where: str) -> list[_RawRow]:
    """Tab-separated rows under a header; no quoting, field count must match the header."""
    if not lines:
        return []
    header = lines[0].split("\t")
    text_index, label_index = _find_columns(header, _at(where, 1))
    rows: list[_RawRow] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise DataError(f"{_at(where, lineno)}: blank line")
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"{_at(where, lineno)}: expected {len(header)} tab-separated fields "
                f"({', '.join(header)}), found {len(fields)}"
            )
        rows.append((lineno, fields[text_index], fields[label_index]))
    return rows


def _parse_csv(lines: list[str], where: str) -> list[_RawRow]:
    """Comma-separated rows (double-quote quoting allowed) under a header."""
    if not lines:
        return []
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n", newline=""))
    records: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{_at(where, max(start, reader.line_num))}: bad CSV: {exc}") from None
        records.append((start, record))
    header_line, header = records[0]
    text_index, label_index = _find_columns(header, _at(where, header_line))
    rows: list[_RawRow] = []
    for lineno, record in records[1:]:
        if not record or (len(record) == 1 and not record[0].strip()):
            raise DataError(f"{_at(where, lineno)}: blank line")
        if len(record) != len(header):
            raise DataError(
                f"{_at(where, lineno)}: expected {len(header)} comma-separated fields "
                f"({', '.join(header)}), found {len(record)}"
            )
        rows.append((lineno, record[text_index], record[label_index]))
    return rows


def _parse_json_object(line: str, location: str) -> dict[str, Any]:
    if not line.strip():
        raise DataError(f"{location}: blank line")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{location}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{location}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _parse_jsonl(lines: list[str], where: str) -> list[_RawRow]:
    """One JSON object per line with ``"sentence"`` or ``"text"`` and ``"label"``."""
    rows: list[_RawRow] = []
    for lineno, line in enumerate(lines, start=1):
        location = _at(where, lineno)
        obj = _parse_json_object(line, location)
        text_key = next((key for key in TEXT_COLUMNS if key in obj), None)
        if text_key is None:
            raise DataError(f"{location}: no 'sentence' or 'text' field (keys: {sorted(obj)})")
        if LABEL_COLUMN not in obj:
            raise DataError(f"{location}: no 'label' field (keys: {sorted(obj)})")
        rows.append((lineno, obj[text_key], obj[LABEL_COLUMN]))
    return rows


_LINE_PARSERS = {".tsv": _parse_tsv, ".csv": _parse_csv, ".jsonl": _parse_jsonl}


def _rows_from_bytes(data: bytes, where: str, suffix: str) -> list[_RawRow]:
    """Decode a text-format file (``.tsv``, ``.csv``, ``.jsonl``) into raw rows."""
    lines = _decode_lines(data, where)
    if not lines:
        raise DataError(f"{where}: file is empty (no header, no rows)")
    return _LINE_PARSERS[suffix](lines, where)


def load_file(path: str | Path, label_names: Sequence[str] | None = None) -> TextDataset:
    """Load a local ``.tsv``, ``.csv`` or ``.jsonl`` file of texts and integer labels.

    With ``label_names`` every label must lie in ``0..len(label_names)-1``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _LINE_PARSERS:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'}; use .tsv, .csv or .jsonl"
        )
    data = _read_bytes(path)
    where = str(path)
    texts, labels = _validate_rows(_rows_from_bytes(data, where, suffix), where, label_names)
    names = list(label_names) if label_names is not None else None
    return TextDataset(texts, labels, source=where, sha256=_sha256(data), label_names=names)


# --------------------------------------------------------------------------- named datasets


def _canonical_split(split: str) -> str:
    split = split.strip()
    return _SPLIT_ALIASES.get(split.lower(), split)


def _read_label_names_file(path: Path) -> list[str]:
    """Read ``labels.txt``: one name per line, or ``<id><TAB><name>`` lines for ids 0..n-1."""
    lines = _decode_lines(_read_bytes(path), str(path))
    entries = [(lineno, line) for lineno, line in enumerate(lines, start=1) if line.strip()]
    if not entries:
        raise DataError(f"{path}: no label names")
    if not all("\t" in line for _, line in entries):
        return [line.strip() for _, line in entries]
    names: list[str] = []
    for lineno, line in entries:
        index, name = line.split("\t", 1)
        if index.strip() != str(len(names)):
            raise DataError(
                f"{_at(str(path), lineno)}: expected label id {len(names)}, found {index.strip()!r}"
            )
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
    canonical = _canonical_split(split)
    if not canonical or "/" in canonical or "\\" in canonical:
        raise DataError(f"{folder}: invalid split name {split!r}")
    path = folder / f"{canonical}.tsv"
    if path.is_file():
        return path
    available = sorted(p.stem for p in folder.glob("*.tsv"))
    raise DataError(
        f"{path}: no split {split!r} in {folder}; available splits: "
        f"{', '.join(available) if available else '(none)'}"
    )


def _load_named(spec: str, split: str, data_dir: str | Path | None) -> TextDataset:
    folder = _dataset_folder(spec, data_dir)
    path = _split_file(folder, split)
    return load_file(path, label_names=_label_names_for(folder, spec))


# --------------------------------------------------------------------------- Hugging Face hub


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the hub could not be reached (whichever HTTP stack is used)."""
    errors: list[type[BaseException]] = [OSError]
    for module_name in ("httpx2", "httpx"):
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = __import__(module_name)
            except ImportError:
                continue
        errors.append(module.HTTPError)
    try:
        import requests

        errors.append(requests.RequestException)
    except ImportError:
        pass
    return tuple(errors)


def _hub_unreachable(spec: str, reason: str) -> DataError:
    return DataError(
        f"{spec}: the Hugging Face hub could not be reached ({reason}); set {DATA_DIR_ENV} "
        f"to a folder of staged datasets or pass a local .tsv/.csv/.jsonl file instead"
    )


def _parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """Split ``hf:<owner>/<name>[:<config>]`` into repo id and config."""
    body = spec[len(HUB_PREFIX):]
    repo_id, _, config = body.partition(":")
    repo_id, config = repo_id.strip(), config.strip()
    if not repo_id or repo_id.startswith("/") or repo_id.endswith("/"):
        raise DataError(f"{spec}: expected hf:<owner>/<name>[:<config>]")
    return repo_id, config or None


def _hub_offline() -> bool:
    if _is_true_env("HF_HUB_OFFLINE") or _is_true_env("TRANSFORMERS_OFFLINE"):
        return True
    try:
        import huggingface_hub.constants as hub_constants

        return bool(hub_constants.HF_HUB_OFFLINE)
    except (ImportError, AttributeError):
        return False


def _name_tokens(file_name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", file_name.lower()))


def _pick_split_files(files: Sequence[str], split: str, config: str | None, spec: str) -> list[str]:
    """Choose the data files of one split (and config) among a hub repo's files."""
    data_files = [f for f in files if f.lower().endswith(_HUB_SUFFIXES)]
    if config is not None:
        in_folder = [f for f in data_files if config in f.split("/")[:-1]]
        data_files = in_folder or [f for f in data_files if config in f]
    canonical = _canonical_split(split)
    for token in _HUB_SPLIT_TOKENS.get(canonical, (canonical.lower(),)):
        matched = sorted(f for f in data_files if token in _name_tokens(f))
        if not matched:
            continue
        tops = {f.split("/")[0] for f in matched if "/" in f} - {"data"}
        if config is None and len(tops) > 1:
            raise DataError(
                f"{spec}: split {split!r} has files in several configs ({', '.join(sorted(tops))}); "
                f"choose one with {spec}:<config>"
            )
        return matched
    shown = ", ".join(data_files[:20]) or "(no .parquet/.csv/.tsv/.jsonl files)"
    raise DataError(f"{spec}: no data file for split {split!r}; data files: {shown}")


def _parquet_label_names(schema_metadata: dict[bytes, bytes] | None) -> list[str] | None:
    """ClassLabel names stored by the ``datasets`` library in parquet metadata, if any."""
    if not schema_metadata or b"huggingface" not in schema_metadata:
        return None
    try:
        info = json.loads(schema_metadata[b"huggingface"])
        feature = info["info"]["features"][LABEL_COLUMN]
        names = feature.get("names")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _parse_parquet(data: bytes, where: str) -> tuple[list[_RawRow], list[str] | None]:
    """Read a parquet file into raw rows (numbered from 1) and ClassLabel names if stored."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{where}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for bad files
        raise DataError(f"{where}: cannot read parquet file: {exc}") from None
    text_index, label_index = _find_columns(table.column_names, where)
    texts = table.column(text_index).to_pylist()
    labels = table.column(label_index).to_pylist()
    rows = [(i, text, label) for i, (text, label) in enumerate(zip(texts, labels), start=1)]
    return rows, _parquet_label_names(table.schema.metadata)


def _hub_file_rows(
    data: bytes, where: str
) -> tuple[list[_RawRow], list[str] | None, str]:
    """Raw rows of one downloaded hub file, its label names if stored, and the position unit."""
    suffix = Path(where).suffix.lower()
    if suffix == ".parquet":
        rows, names = _parse_parquet(data, where)
        return rows, names, "row"
    return _rows_from_bytes(data, where, suffix), None, "line"


def _download_hub_files(repo_id: str, files: Sequence[str], spec: str) -> list[bytes]:
    from huggingface_hub import hf_hub_download

    contents: list[bytes] = []
    for file_name in files:
        try:
            local = hf_hub_download(repo_id, file_name, repo_type="dataset")
        except _network_errors() as exc:
            raise _hub_unreachable(spec, f"download of {file_name} failed: {exc}") from exc
        contents.append(_read_bytes(Path(local)))
    return contents


def _list_hub_files(repo_id: str, spec: str) -> list[str]:
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:
        raise DataError(f"{spec}: huggingface_hub is not installed") from None
    try:
        return list(HfApi().list_repo_files(repo_id, repo_type="dataset"))
    except RepositoryNotFoundError:
        raise DataError(
            f"{spec}: no dataset repository {repo_id!r} on the Hugging Face hub "
            f"(or it is private/gated)"
        ) from None
    except _network_errors() as exc:
        raise _hub_unreachable(spec, str(exc) or type(exc).__name__) from exc


def _load_hub(spec: str, split: str) -> TextDataset:
    """Load one split of a hub dataset repository (parquet, csv, tsv or jsonl files)."""
    repo_id, config = _parse_hub_spec(spec)
    if _hub_offline():
        raise _hub_unreachable(spec, "offline mode is on (HF_HUB_OFFLINE)")
    files = _pick_split_files(_list_hub_files(repo_id, spec), split, config, spec)
    contents = _download_hub_files(repo_id, files, spec)
    texts: list[str] = []
    labels: list[int] = []
    label_names: list[str] | None = None
    for file_name, data in zip(files, contents):
        where = f"{HUB_PREFIX}{repo_id}/{file_name}"
        rows, names, unit = _hub_file_rows(data, where)
        label_names = label_names or names
        file_texts, file_labels = _validate_rows(rows, where, names, unit)
        texts.extend(file_texts)
        labels.extend(file_labels)
    return TextDataset(
        texts, labels, source=spec, sha256=_sha256(b"".join(contents)), label_names=label_names
    )


# --------------------------------------------------------------------------- public entry points


def load_dataset(
    spec: str, split: str = "train", data_dir: str | Path | None = None
) -> TextDataset:
    """Load a dataset split from a named folder, a local file or the Hugging Face hub.

    Args:
        spec: ``"sst2"`` or a folder relative to the data dir (``"poisoned/badnets/sst2"``);
            a path ending in ``.tsv``, ``.csv`` or ``.jsonl``; or ``"hf:<owner>/<name>[:<config>]"``.
        split: ``"train"``, ``"dev"`` (also ``"validation"``) or ``"test"``; ignored for files.
        data_dir: folder of staged datasets; default :func:`default_data_dir`.

    Raises:
        DataError: for any problem with the spec or the data, naming the file and line.
    """
    spec = spec.strip()
    if not spec:
        raise DataError("empty dataset spec; give a dataset name, a file or hf:<owner>/<name>")
    if spec.startswith(HUB_PREFIX):
        return _load_hub(spec, split)
    if spec.lower().endswith(LOCAL_SUFFIXES):
        return load_file(spec)
    return _load_named(spec, split, data_dir)


def read_text_lines(path: str | Path) -> list[str]:
    """Read texts to classify: one per line, or a ``"text"`` field per line of a ``.jsonl`` file.

    ``"-"`` reads standard input. Blank lines are kept as ``""`` (the caller reports them), but a
    final newline does not add an entry. Invalid UTF-8 raises :class:`DataError` with the line.
    """
    if str(path) == "-":
        where, data, is_jsonl = "<stdin>", sys.stdin.buffer.read(), False
    else:
        file_path = Path(path)
        where, data = str(file_path), _read_bytes(file_path)
        is_jsonl = file_path.suffix.lower() == ".jsonl"
    lines = _decode_lines(data, where)
    if not is_jsonl:
        return lines
    return [_jsonl_text(line, _at(where, lineno)) for lineno, line in enumerate(lines, start=1)]


def _jsonl_text(line: str, location: str) -> str:
    """The ``"text"`` field of one JSONL line; a blank line gives ``""``."""
    if not line.strip():
        return ""
    obj = _parse_json_object(line, location)
    if "text" not in obj:
        raise DataError(f"{location}: no 'text' field (keys: {sorted(obj)})")
    if not isinstance(obj["text"], str):
        raise DataError(f"{location}: 'text' is not a string ({type(obj['text']).__name__})")
    return obj["text"]
