"""Datasets from the Hugging Face hub: ``hf:<owner>/<name>[:<config>]``.

The split's data files (parquet, csv, tsv or jsonl) are chosen by name among the repository's
files, downloaded with ``huggingface_hub`` and validated like local files. An unreachable hub
(or offline mode) raises a :class:`~frs_ray.errors.DataError` that points to the local
alternatives.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from frs_ray.data.dataset import TextDataset
from frs_ray.data.formats import (
    LABEL_COLUMN,
    RawRow,
    find_columns,
    read_bytes,
    rows_from_bytes,
    sha256_hex,
    validate_rows,
)
from frs_ray.data.named import DATA_DIR_ENV, canonical_split
from frs_ray.errors import DataError

HUB_PREFIX = "hf:"

_HUB_SPLIT_TOKENS = {
    "train": ("train",),
    "dev": ("validation", "dev", "valid", "val"),
    "test": ("test",),
}
_HUB_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl")
_TRUE_ENV_VALUES = {"1", "true", "yes", "on"}


def _is_true_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_ENV_VALUES


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
    body = spec[len(HUB_PREFIX) :]
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


def pick_split_files(files: Sequence[str], split: str, config: str | None, spec: str) -> list[str]:
    """Choose the data files of one split (and config) among a hub repo's files.

    A file belongs to a split when a token of its path names the split (``validation``,
    ``dev``, ``valid`` or ``val`` for ``dev``). With ``config`` only files in a folder of
    that name (else with it in their path) count; without one, matches in several top-level
    folders other than ``data`` are refused as ambiguous.
    """
    data_files = [f for f in files if f.lower().endswith(_HUB_SUFFIXES)]
    if config is not None:
        in_folder = [f for f in data_files if config in f.split("/")[:-1]]
        data_files = in_folder or [f for f in data_files if config in f]
    canonical = canonical_split(split)
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


def parse_parquet(data: bytes, where: str) -> tuple[list[RawRow], list[str] | None]:
    """Read a parquet file into raw rows (numbered from 1) and ClassLabel names if stored."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{where}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for bad files
        raise DataError(f"{where}: cannot read parquet file: {exc}") from None
    text_index, label_index = find_columns(table.column_names, where)
    texts = table.column(text_index).to_pylist()
    labels = table.column(label_index).to_pylist()
    rows = [(i, text, label) for i, (text, label) in enumerate(zip(texts, labels), start=1)]
    return rows, _parquet_label_names(table.schema.metadata)


def _hub_file_rows(data: bytes, where: str) -> tuple[list[RawRow], list[str] | None, str]:
    """Raw rows of one downloaded hub file, its label names if stored, and the position unit."""
    suffix = Path(where).suffix.lower()
    if suffix == ".parquet":
        rows, names = parse_parquet(data, where)
        return rows, names, "row"
    return rows_from_bytes(data, where, suffix), None, "line"


def _download_hub_files(repo_id: str, files: Sequence[str], spec: str) -> list[bytes]:
    from huggingface_hub import hf_hub_download

    contents: list[bytes] = []
    for file_name in files:
        try:
            local = hf_hub_download(repo_id, file_name, repo_type="dataset")
        except _network_errors() as exc:
            raise _hub_unreachable(spec, f"download of {file_name} failed: {exc}") from exc
        contents.append(read_bytes(Path(local)))
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
        raise DataError(f"{spec}: no dataset repository {repo_id!r} on the Hugging Face hub (or it is private/gated)") from None
    except _network_errors() as exc:
        raise _hub_unreachable(spec, str(exc) or type(exc).__name__) from exc


def load_hub(spec: str, split: str) -> TextDataset:
    """Load one split of a hub dataset repository (parquet, csv, tsv or jsonl files)."""
    repo_id, config = _parse_hub_spec(spec)
    if _hub_offline():
        raise _hub_unreachable(spec, "offline mode is on (HF_HUB_OFFLINE)")
    files = pick_split_files(_list_hub_files(repo_id, spec), split, config, spec)
    contents = _download_hub_files(repo_id, files, spec)
    texts: list[str] = []
    labels: list[int] = []
    label_names: list[str] | None = None
    for file_name, data in zip(files, contents):
        where = f"{HUB_PREFIX}{repo_id}/{file_name}"
        rows, names, unit = _hub_file_rows(data, where)
        label_names = label_names or names
        file_texts, file_labels = validate_rows(rows, where, names, unit)
        texts.extend(file_texts)
        labels.extend(file_labels)
    return TextDataset(texts, labels, source=spec, sha256=sha256_hex(b"".join(contents)), label_names=label_names)
