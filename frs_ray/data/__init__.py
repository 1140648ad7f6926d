"""Datasets from a data folder, local files or the Hugging Face hub.

Modules: :mod:`.dataset` (:class:`TextDataset`), :mod:`.formats` (TSV, CSV and JSONL files),
:mod:`.named` (datasets in the data folder), :mod:`.hub` (``hf:`` specs), :mod:`.loaders`
(:func:`load_dataset`, which dispatches on the spec) and :mod:`.lines` (texts to classify).
"""

from __future__ import annotations

from frs_ray.data.dataset import TextDataset
from frs_ray.data.formats import load_file
from frs_ray.data.lines import read_text_lines
from frs_ray.data.loaders import load_dataset
from frs_ray.data.named import DATA_DIR_ENV, KNOWN_DATASETS, SPLITS, default_data_dir

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
