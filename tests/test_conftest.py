"""tests/conftest.py: missing data skips a test on a developer machine and fails it in CI (``CI=true``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed"), ("1", "1 failed"), ("", "1 skipped"), ("false", "1 skipped")])
def test_missing_data_fails_only_in_ci(tmp_path, ci, outcome):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")  # the real conftest, in a folder of its own
    (tmp_path / "test_needs_data.py").write_text(
        "def test_needs_data(require_data, tmp_path):\n    require_data(tmp_path / 'no_such_dataset' / 'test.tsv')\n"
    )
    import frs_ray

    # the child imports the same frs_ray as this process (the conftest sets up the process with frs_ray.runtime)
    here = str(Path(frs_ray.__file__).resolve().parents[1])
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    if outcome == "1 failed":
        assert res.returncode == 1 and "CI=true and" in res.stdout and "is not staged" in res.stdout
    else:
        assert res.returncode == 0


def test_require_data_returns_an_existing_path(require_data, tmp_path):
    (tmp_path / "d.tsv").write_text("x")
    assert require_data(tmp_path / "d.tsv") == tmp_path / "d.tsv"
