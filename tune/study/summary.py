"""The end of a run of ``tune/sweep.py``: the summary lines and the exit status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable


def log_summary(
    run_rec: dict[str, Any],
    counts: dict[str, int],
    paths: dict[str, Path],
    best: dict[str, Any] | None,
    log: Callable[[str], None],
) -> None:
    """Log the run's trial counts and epochs trained, the output files and the chosen configuration."""
    log(
        f"done in {run_rec['wall_seconds']:.0f} s: {counts['finished']} finished, {counts['stopped_early']} stopped "
        f"early, {counts['errored']} errored; {run_rec['epochs_trained']} fine-tune epoch(s) trained in this run"
    )
    for key, path in paths.items():
        log(f"{key}: {path}")
    if best:
        log(
            f"best: K={best['K']} sigma={best['sigma']} H={best['H']} budget={best['budget']} CA={best['ca']:.3f} "
            f"PA={best['pa']:.3f} ASR={best['asr']:.3f} -> serve run {paths['yaml']}"
        )


def exit_status(counts: dict[str, int], out: Path) -> int:
    """0 when trials finished; 130 (with how to continue) when some were interrupted; 1 when none finished."""
    if counts["unfinished"]:
        print(
            f"interrupted: {counts['unfinished']} trial(s) unfinished; the outputs above cover the finished ones. "
            f"Continue with: python tune/sweep.py --out {out} --resume",
            file=sys.stderr,
        )
        return 130
    if counts["finished"] == 0:
        print("error: no trial finished; see the messages above", file=sys.stderr)
        return 1
    return 0
