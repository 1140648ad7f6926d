"""Where frs-transplant misses: its span checks on the clean and triggered inputs of `frs eval` cells.

Reads the frs-transplant and frs cells of one eval run (``runs/eval/<name>/cells``) and writes
``transplant_misses.{md,json}``: per attack, the share of spans kept on clean and on triggered inputs, the
threshold the clean dev calibration chose, the check's statistic on triggered inputs, and for the triggered inputs
the attack still wins on (vote = target under frs-transplant) whether their span was kept and whether plain FRS
(span always kept) stopped them.

    python benchmarks/transplant_misses.py --cells runs/eval/transplant/cells --out docs/results
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def analyse(cells: Path, dataset: str, seed: int) -> dict:
    out = {}
    for folder in sorted((cells / dataset).iterdir()):
        tp = _load(folder / f"frs-transplant-seed{seed}.json")
        frs = _load(folder / f"frs-seed{seed}.json")
        if tp is None:
            continue
        ds = tp["defense_settings"]
        fields = ds["checks_fields"]
        checks = [dict(zip(fields, row)) for row in ds["checks"]]
        n_clean = tp["data"]["n_clean"]
        clean, trig = checks[:n_clean], checks[n_clean:]
        target = tp["settings"]["target"]
        vote = tp["predictions_fields"].index("vote_label") if "vote_label" in tp["predictions_fields"] else 0
        tp_trig = [p[vote] for p in tp["predictions"]["triggered"]]
        frs_trig = [p[vote] for p in frs["predictions"]["triggered"]] if frs else None
        wins = [i for i, y in enumerate(tp_trig) if y == target]
        calib = ds["transplant_calibration"]
        stat = calib["statistic"]
        rec = {
            "threshold": calib["threshold"],
            "statistic": stat,
            "m": calib["m"],
            "n_clean": len(clean),
            "n_triggered": len(trig),
            "kept_clean": float(np.mean([c["kept"] for c in clean])),
            "kept_triggered": float(np.mean([c["kept"] for c in trig])),
            "statistic_triggered": {
                "mean": float(np.mean([c[stat] for c in trig])),
                "median": float(np.median([c[stat] for c in trig])),
            },
            "statistic_clean": {
                "mean": float(np.mean([c[stat] for c in clean])),
                "p95": float(np.quantile([c[stat] for c in clean], 0.95)),
            },
            "asr": tp["metrics"]["asr"],
            "asr_frs": frs["metrics"]["asr"] if frs else None,
            "attack_wins": len(wins),
            "wins_span_dropped": sum(not trig[i]["kept"] for i in wins),
            "wins_stopped_by_frs": (sum(frs_trig[i] != target for i in wins) if frs_trig else None),
            "wins_statistic_mean": float(np.mean([trig[i][stat] for i in wins])) if wins else None,
        }
        out[folder.name] = rec
    return out


def render(res: dict) -> str:
    L = [
        "# frs-transplant: where it misses",
        "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}",
        f"- source: the cells of `{res['cells']}` ({res['dataset']}, seed {res['seed']}); each cell's machine and "
        "sample sizes are in the eval report.",
        "",
        "Per attack: the share of inputs whose top span the check keeps (omega_H) on clean and triggered inputs; "
        "the threshold on the check's statistic (calibrated on clean dev texts only, to keep 5% of clean spans); "
        "the statistic's mean on triggered inputs; and of the triggered inputs the attack still wins under "
        "frs-transplant, how many had their span dropped (randomized uniformly) and how many plain FRS (span "
        "always kept) stopped.",
        "",
        "| attack | threshold | kept clean | kept triggered | stat. triggered (mean / median) | stat. clean "
        "(mean / p95) | ASR transplant | ASR frs | wins | wins with span dropped | of those, stopped by frs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a, r in res["attacks"].items():
        st, sc = r["statistic_triggered"], r["statistic_clean"]
        asr_frs = "-" if r["asr_frs"] is None else f"{100 * r['asr_frs']:.1f}%"
        stopped = "-" if r["wins_stopped_by_frs"] is None else r["wins_stopped_by_frs"]
        L.append(
            f"| {a} | {r['threshold']:.3f} | {100 * r['kept_clean']:.1f}% | {100 * r['kept_triggered']:.1f}% | "
            f"{st['mean']:.3f} / {st['median']:.3f} | {sc['mean']:.3f} / {sc['p95']:.3f} | "
            f"{100 * r['asr']:.1f}% | {asr_frs} | "
            f"{r['attack_wins']} | {r['wins_span_dropped']} | "
            f"{stopped} |"
        )
    L.append("")
    for n in res.get("notes", []):
        L += [f"Note: {n}", ""]
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="runs/eval/transplant/cells")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()
    cells = Path(args.cells)
    if not (cells / args.dataset).is_dir():
        ap.error(f"{cells / args.dataset} is not a folder of eval cells")
    res = {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cells": str(cells),
        "dataset": args.dataset,
        "seed": args.seed,
        "attacks": analyse(cells, args.dataset, args.seed),
        "notes": args.note,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transplant_misses.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "transplant_misses.md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
