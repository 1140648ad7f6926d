"""One entry point for every kind of dataset spec: :func:`load_dataset`.

Three kinds of dataset spec are understood:

* a dataset folder under the data dir (``"sst2"``, ``"poisoned/badnets/sst2"``), read from
  ``<data_dir>/<spec>/<split>.tsv`` (:mod:`.named`);
* a local ``.tsv``, ``.csv`` or ``.jsonl`` file, the split is ignored (:mod:`.formats`);
* ``"hf:<owner>/<name>[:<config>]"``, a dataset repository on the Hugging Face hub (:mod:`.hub`).

Every problem with the user's data raises :class:`~frs_ray.errors.DataError` whose message starts
with ``<file>:<line>:`` (1-based) where a line is to blame.
"""

from __future__ import annotations

from pathlib import Path

from frs_ray.data.dataset import TextDataset
from frs_ray.data.formats import LOCAL_SUFFIXES, load_file
from frs_ray.data.hub import HUB_PREFIX, load_hub
from frs_ray.data.named import load_named
from frs_ray.errors import DataError


def load_dataset(spec: str, split: str = "train", data_dir: str | Path | None = None) -> TextDataset:
    """Load a dataset split from a named folder, a local file or the Hugging Face hub.

    Args:
        spec: ``"sst2"`` or a folder relative to the data dir (``"poisoned/badnets/sst2"``);
            a path ending in ``.tsv``, ``.csv`` or ``.jsonl``; or ``"hf:<owner>/<name>[:<config>]"``.
        split: ``"train"``, ``"dev"`` (also ``"validation"``) or ``"test"``; ignored for files.
        data_dir: folder of staged datasets; default :func:`~.named.default_data_dir`.

    Raises:
        DataError: for any problem with the spec or the data, naming the file and line.
    """
    spec = spec.strip()
    if not spec:
        raise DataError("empty dataset spec; give a dataset name, a file or hf:<owner>/<name>")
    if spec.startswith(HUB_PREFIX):
        return load_hub(spec, split)
    if spec.lower().endswith(LOCAL_SUFFIXES):
        return load_file(spec)
    return load_named(spec, split, data_dir)
