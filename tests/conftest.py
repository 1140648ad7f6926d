"""Shared fixtures: the data folder (missing data skips a test, and fails it when ``CI=true``) and a real MiniLM
fine-tuned on a small SST-2 subset (once per session)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def in_ci() -> bool:
    """True when ``$CI`` is set to a true value (``true``, ``1``, ``yes``), as CI services and ``.ci/run`` set it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_data(reason: str) -> None:
    """A test's data is missing: fail in CI (``CI=true``), where the data must be staged; skip elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}: stage the data (FRS_DATA_DIR or shared/data beside the checkout)",
                    pytrace=False)
    pytest.skip(reason)


def _data_dir_or_skip():
    from frs_ray.data import default_data_dir

    d = default_data_dir()
    if d is None:
        missing_data("no data folder: set FRS_DATA_DIR or place shared/data beside the checkout")
    return d


@pytest.fixture(scope="session")
def data_dir():
    """The staged data folder (``frs_ray.data.default_data_dir``); missing: skip, or fail when ``CI=true``."""
    return _data_dir_or_skip()


@pytest.fixture(scope="session")
def require_data():
    """``require_data(path)``: ``path`` when it exists; otherwise skip the test, or fail it when ``CI=true``."""
    from pathlib import Path

    def require(path):
        path = Path(path)
        if not path.exists():
            missing_data(f"{path} is not staged")
        return path

    return require


@pytest.fixture(scope="session")
def minilm_checkpoint(tmp_path_factory, data_dir):
    """`frs finetune` of the packaged MiniLM on 192 SST-2 sentences, 1 epoch, default smoothing."""
    from frs_ray.cli import main

    out = tmp_path_factory.mktemp("ckpt") / "sst2-small"
    rc = main(["finetune", "--model", "minilm", "--data", "sst2", "--out", str(out), "--epochs", "1",
               "--max-train-examples", "192", "--lr", "1e-4", "--seed", "3", "--no-progress"])
    assert rc == 0
    return out
