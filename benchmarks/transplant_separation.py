"""How well the frs-transplant check's two statistics separate triggered from clean inputs, from `frs eval` cells.

Reads the ``frs-transplant`` cells of an evaluation run (``describe()["checks"]``: per input, in the order the
runner predicts them, the clean inputs then the triggered ones: centre label, the top span's mean shift in P(y)
and its flip share, kept or not) and writes, per (dataset, attack, seed): mean shift / flip on clean and triggered
inputs, ROC AUC of each statistic (triggered against clean), the share of each group whose span the check kept,
and the calibrated threshold and m. This is a measurement on test inputs after the fact; the check's threshold was
calibrated on clean dev data only and is not changed by it.

Usage::

    python benchmarks/transplant_separation.py --run runs/eval/transplant --out docs/results/transplant_separation
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def roc_auc(pos: list[float], neg: list[float]) -> float | None:
    """P(score of a random positive > that of a random negative) + 0.5 P(tie) (Mann-Whitney)."""
    if not pos or not neg:
        return None
    p, n = np.asarray(pos, dtype=float)[:, None], np.asarray(neg, dtype=float)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def analyse(cell: dict) -> dict:
    d = cell["defense_settings"]
    checks, n_clean = d["checks"], cell["data"]["n_clean"]
    clean, trig = checks[:n_clean], checks[n_clean:]
    out = {
        "dataset": cell["dataset"],
        "attack": cell["attack"],
        "seed": cell["seed"],
        "n_clean": len(clean),
        "n_triggered": len(trig),
        "threshold": d["transplant_settings"]["threshold"],
        "m": d["transplant_settings"]["m"],
        "statistic": d["transplant_settings"]["statistic"],
        "calibration": d.get("transplant_calibration"),
    }
    for i, name in ((1, "shift"), (2, "flip")):
        c = [r[i] for r in clean if r[i] is not None]
        t = [r[i] for r in trig if r[i] is not None]
        out[f"{name}_clean_mean"] = float(np.mean(c)) if c else None
        out[f"{name}_triggered_mean"] = float(np.mean(t)) if t else None
        out[f"{name}_auc"] = roc_auc(t, c)
    out["kept_clean"] = float(np.mean([r[3] for r in clean])) if clean else None
    out["kept_triggered"] = float(np.mean([r[3] for r in trig])) if trig else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="an frs eval run folder (holding cells/)")
    ap.add_argument("--out", required=True, help="output path without suffix (.json and .md are written)")
    args = ap.parse_args(argv)
    cells = sorted(Path(args.run).glob("cells/*/*/frs-transplant-seed*.json"))
    if not cells:
        print(f"no frs-transplant cells under {args.run}", file=sys.stderr)
        return 1
    rows = [analyse(json.loads(p.read_text())) for p in cells]
    header = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "run": args.run,
    }
    Path(args.out + ".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))

    def f(v, p=3):
        return "-" if v is None else f"{v:.{p}f}"

    lines = [
        "# frs-transplant: which statistic separates triggered from clean inputs",
        "",
        *[f"- {k}: {v}" for k, v in header.items()],
        "",
        (
            "Per input, the top MCTS span of T(x') (budget 10, centre model) transplanted into the check's m clean "
            "dev references of other centre labels (start + random gap): mean shift in P(y) and share flipped to "
            "y (y: the input's centre label). AUC: triggered against clean test inputs (1 = perfect). Kept: share "
            "of inputs whose span passed the check at the threshold calibrated on clean dev data (target: at most "
            "5% of clean calibration texts). An extension, not the paper's method."
        ),
        "",
        (
            "| dataset | attack | seed | n (clean / trig.) | statistic | threshold | m | shift clean / trig. | "
            "shift AUC | flip clean / trig. | flip AUC | kept clean / trig. |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['attack']} | {r['seed']} | {r['n_clean']} / {r['n_triggered']} | "
            f"{r['statistic']} | {f(r['threshold'])} | {r['m']} | {f(r['shift_clean_mean'])} / "
            f"{f(r['shift_triggered_mean'])} | {f(r['shift_auc'])} | {f(r['flip_clean_mean'])} / "
            f"{f(r['flip_triggered_mean'])} | {f(r['flip_auc'])} | {f(r['kept_clean'], 2)} / "
            f"{f(r['kept_triggered'], 2)} |"
        )
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
