"""Local data files: reading bytes, decoding lines, and the TSV, CSV and JSONL formats.

Every problem with the user's data raises :class:`~frs_ray.errors.DataError` whose message starts
with ``<file>:<line>:`` (1-based) where a line is to blame.

TSV files are read without any quoting: sentences may start with ``"``. Each line is split on tabs
and must have as many fields as the header (the staged data never has a tab inside a sentence).
CSV files allow double-quote quoting. A JSONL file holds one object per line with ``"sentence"``
or ``"text"`` and ``"label"``.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

from frs_ray.data.dataset import TextDataset
from frs_ray.errors import DataError

TEXT_COLUMNS = ("sentence", "text")
"""Accepted names of the text column, in order of preference when both are present."""
LABEL_COLUMN = "label"
LOCAL_SUFFIXES = (".tsv", ".csv", ".jsonl")

RawRow = tuple[int, Any, Any]
"""(1-based line or row number, text value, label value) before validation."""


# --------------------------------------------------------------------------- low-level reading


def read_bytes(path: Path) -> bytes:
    """Read a whole file, turning OS errors into :class:`DataError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 checksum of ``data``."""
    return hashlib.sha256(data).hexdigest()


def decode_lines(data: bytes, where: str) -> list[str]:
    """Split bytes into decoded lines, reporting the 1-based line of invalid UTF-8.

    A leading UTF-8 byte-order mark and a ``\\r`` before each ``\\n`` are removed. A final
    newline does not start an extra (empty) line.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
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
                f"{raw[exc.start : exc.start + 1]!r}); save the file as UTF-8"
            ) from None
    return lines


def location(where: str, position: int, unit: str = "line") -> str:
    """Location prefix of an error message: ``file:line`` or ``file: row N``."""
    return f"{where}:{position}" if unit == "line" else f"{where}: {unit} {position}"


# --------------------------------------------------------------------------- rows and columns


def find_columns(header: Sequence[str], where: str) -> tuple[int, int]:
    """Return the indices of the text and label columns of a header."""
    names = [str(name).strip().lower() for name in header]
    text_index = next((names.index(c) for c in TEXT_COLUMNS if c in names), None)
    label_count = names.count(LABEL_COLUMN)
    if text_index is None or label_count != 1:
        problem = (
            "no text column"
            if text_index is None
            else ("no 'label' column" if label_count == 0 else "more than one 'label' column")
        )
        raise DataError(
            f"{where}: {problem} in header {list(header)}; expected a text column named "
            f"'sentence' or 'text' and one 'label' column"
        )
    return text_index, names.index(LABEL_COLUMN)


def _parse_label(value: Any, where: str) -> int:
    """Convert a label cell to a non-negative int."""
    if isinstance(value, bool):
        raise DataError(f"{where}: label {value!r} is not an integer")
    if isinstance(value, int):
        label = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        label = int(value)
    else:
        shown = "missing" if value is None else repr(value)
        raise DataError(f"{where}: label {shown} is not an integer")
    if label < 0:
        raise DataError(f"{where}: label {label} is negative (hidden test label?)")
    return label


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        shown = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise DataError(f"{where}: text is {shown}")
    if not value.strip():
        raise DataError(f"{where}: text is empty or whitespace-only")
    return value


def validate_rows(
    rows: Sequence[RawRow],
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
        at = location(where, position, unit)
        texts.append(_check_text(text, at))
        label = _parse_label(label_value, at)
        if label_names is not None and label >= len(label_names):
            raise DataError(f"{at}: label {label} is out of range 0..{len(label_names) - 1} ({', '.join(label_names)})")
        labels.append(label)
    return texts, labels


# --------------------------------------------------------------------------- file formats


def _parse_tsv(lines: list[str], where: str) -> list[RawRow]:
    """Tab-separated rows under a header; no quoting, field count must match the header."""
    if not lines:
        return []
    header = lines[0].split("\t")
    text_index, label_index = find_columns(header, location(where, 1))
    rows: list[RawRow] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise DataError(f"{location(where, lineno)}: blank line")
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"{location(where, lineno)}: expected {len(header)} tab-separated fields "
                f"({', '.join(header)}), found {len(fields)}"
            )
        rows.append((lineno, fields[text_index], fields[label_index]))
    return rows


def _parse_csv(lines: list[str], where: str) -> list[RawRow]:
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
            at = location(where, max(start, reader.line_num))
            raise DataError(f"{at}: bad CSV: {exc}") from None
        records.append((start, record))
    header_line, header = records[0]
    text_index, label_index = find_columns(header, location(where, header_line))
    rows: list[RawRow] = []
    for lineno, record in records[1:]:
        if not record or (len(record) == 1 and not record[0].strip()):
            raise DataError(f"{location(where, lineno)}: blank line")
        if len(record) != len(header):
            raise DataError(
                f"{location(where, lineno)}: expected {len(header)} comma-separated fields "
                f"({', '.join(header)}), found {len(record)}"
            )
        rows.append((lineno, record[text_index], record[label_index]))
    return rows


def parse_json_object(line: str, where: str) -> dict[str, Any]:
    """Parse one JSONL line that must hold a JSON object; ``where`` prefixes the errors."""
    if not line.strip():
        raise DataError(f"{where}: blank line")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _parse_jsonl(lines: list[str], where: str) -> list[RawRow]:
    """One JSON object per line with ``"sentence"`` or ``"text"`` and ``"label"``."""
    rows: list[RawRow] = []
    for lineno, line in enumerate(lines, start=1):
        at = location(where, lineno)
        obj = parse_json_object(line, at)
        text_key = next((key for key in TEXT_COLUMNS if key in obj), None)
        if text_key is None:
            raise DataError(f"{at}: no 'sentence' or 'text' field (keys: {sorted(obj)})")
        if LABEL_COLUMN not in obj:
            raise DataError(f"{at}: no 'label' field (keys: {sorted(obj)})")
        rows.append((lineno, obj[text_key], obj[LABEL_COLUMN]))
    return rows


_LINE_PARSERS = {".tsv": _parse_tsv, ".csv": _parse_csv, ".jsonl": _parse_jsonl}


def rows_from_bytes(data: bytes, where: str, suffix: str) -> list[RawRow]:
    """Decode a text-format file (``.tsv``, ``.csv``, ``.jsonl``) into raw rows."""
    lines = decode_lines(data, where)
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
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use .tsv, .csv or .jsonl")
    data = read_bytes(path)
    where = str(path)
    texts, labels = validate_rows(rows_from_bytes(data, where, suffix), where, label_names)
    names = list(label_names) if label_names is not None else None
    return TextDataset(texts, labels, source=where, sha256=sha256_hex(data), label_names=names)
