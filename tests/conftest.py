"""Shared fixtures: a real MiniLM fine-tuned on a small SST-2 subset (once per session)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _data_dir_or_skip():
    from frs_ray.data import default_data_dir

    d = default_data_dir()
    if d is None:
        pytest.skip("no data folder: set FRS_DATA_DIR or place shared/data beside the checkout")
    return d


@pytest.fixture(scope="session")
def data_dir():
    return _data_dir_or_skip()


@pytest.fixture(scope="session")
def minilm_checkpoint(tmp_path_factory, data_dir):
    """`frs finetune` of the packaged MiniLM on 192 SST-2 sentences, 1 epoch, default smoothing."""
    from frs_ray.cli import main

    out = tmp_path_factory.mktemp("ckpt") / "sst2-small"
    rc = main(["finetune", "--model", "minilm", "--data", "sst2", "--out", str(out), "--epochs", "1",
               "--max-train-examples", "192", "--lr", "1e-4", "--seed", "3", "--no-progress"])
    assert rc == 0
    return out
