"""Texts to classify, one per line of a file or standard input."""

from __future__ import annotations

import sys
from pathlib import Path

from frs_ray.data.formats import decode_lines, location, parse_json_object, read_bytes
from frs_ray.errors import DataError


def read_text_lines(path: str | Path) -> list[str]:
    """Read texts to classify: one per line, or a ``"text"`` field per line of a ``.jsonl`` file.

    ``"-"`` reads standard input. Blank lines are kept as ``""`` (the caller reports them), but a
    final newline does not add an entry. Invalid UTF-8 raises :class:`DataError` with the line.
    """
    if str(path) == "-":
        where, data, is_jsonl = "<stdin>", sys.stdin.buffer.read(), False
    else:
        file_path = Path(path)
        where, data = str(file_path), read_bytes(file_path)
        is_jsonl = file_path.suffix.lower() == ".jsonl"
    lines = decode_lines(data, where)
    if not is_jsonl:
        return lines
    return [_jsonl_text(line, location(where, lineno)) for lineno, line in enumerate(lines, start=1)]


def _jsonl_text(line: str, where: str) -> str:
    """The ``"text"`` field of one JSONL line; a blank line gives ``""``."""
    if not line.strip():
        return ""
    obj = parse_json_object(line, where)
    if "text" not in obj:
        raise DataError(f"{where}: no 'text' field (keys: {sorted(obj)})")
    if not isinstance(obj["text"], str):
        raise DataError(f"{where}: 'text' is not a string ({type(obj['text']).__name__})")
    return obj["text"]
