"""Datasets from a data folder, local files or the Hugging Face hub (see :mod:`.loaders`)."""

from __future__ import annotations

from frs_ray.data.loaders import (
    DATA_DIR_ENV,
    KNOWN_DATASETS,
    SPLITS,
    TextDataset,
    default_data_dir,
    load_dataset,
    load_file,
    read_text_lines,
)

__all__ = [
    "DATA_DIR_ENV",
    "KNOWN_DATASETS",
    "SPLITS",
    "TextDataset",
    "default_data_dir",
    "load_dataset",
    "load_file",
    "read_text_lines",
]
