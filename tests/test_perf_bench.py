"""benchmarks/perf.py's model-shape mode (the GPU study of issue 14) on tiny shapes on the CPU: it runs the same
code path as on a GPU host and writes the report's keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_perf_shapes_mode_writes_ratios_for_every_implementation(tmp_path, data_dir):
    out = tmp_path / "perf_shapes"
    env = {
        **os.environ,
        "FRS_DATA_DIR": str(data_dir),
        "OMP_NUM_THREADS": "1",  # and this checkout's frs_ray
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "perf.py"),
            "--shapes",
            "tiny-bert,tiny-llama",
            "--k",
            "3",
            "--sizes",
            "1,2",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.with_suffix(".json").read_text())
    assert set(r["shapes"]) == {"tiny-bert", "tiny-llama"}
    for shape in r["shapes"].values():
        ratios = shape["voter_pass_ratio"]
        assert set(ratios) == {
            "loop, noise regenerated",
            "loop, noise cached",
            "stacked, noise resident",
            "stacked, noise per batch",
        }
        assert all(set(row) == {"1", "2"} and all(v > 0 for v in row.values()) for row in ratios.values())
        assert shape["top_h"] == 2 and shape["depth"] == 3
        assert shape["memory"]["stacked_weights_bytes"] == 3 * 4 * shape["smoothed_parameters"]
    assert "tiny-llama" in out.with_suffix(".md").read_text()
