"""What the transplant check's threshold trades: CA, PA and ASR of frs-transplant (and of frs-fluency-transplant)
at every threshold, read exactly off the cells of one `frs eval` run.

Why exact. A span check only decides, per input, whether T(x') is kept (the text randomized as FRS does, omega_H on
the span) or dropped (uniform randomization, omega_M); the voters and every random draw are those of ``frs`` and
``uniform`` (same seed, same text). So an input's prediction under the check at ANY threshold is the ``frs`` cell's
prediction where its score exceeds the threshold and the ``uniform`` cell's where it does not. The script first
asserts that identity on the recorded run (every frs-transplant prediction equals frs's where the check kept the
span and uniform's where it dropped it; the same for frs-fluency-transplant) and stops if it fails.

What it is not. The thresholds swept here are read against triggered inputs: the curve is an oracle view of what
the transplant statistic can separate, not a calibration (frs-transplant calibrates on clean dev data only). The
clean keep rate at each threshold is measured on the cells' clean test inputs.

    python benchmarks/transplant_tradeoff.py --cells runs/eval/transplant/cells --out docs/results
    python benchmarks/transplant_tradeoff.py --cells runs/eval/transplant/cells --seed 1 --out docs/results  # _seed1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from frs_ray.runtime import configure_process

THRESHOLDS = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _gold(cell: dict):
    """The cell's clean labels, triggered labels and target, rebuilt as ``frs eval`` built them (checked)."""
    from frs_ray.errors import DataError
    from frs_ray.evaluation.runner import rebuild_sets

    try:
        clean, ts = rebuild_sets(cell)
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    return np.array(clean.labels), np.array(ts.labels), ts.target


def _rates(vote_c: np.ndarray, vote_t: np.ndarray, yc: np.ndarray, yt: np.ndarray, target: int) -> dict:
    return {
        "ca": float(np.mean(vote_c == yc)),
        "pa": float(np.mean(vote_t == yt)),
        "asr": float(np.mean(vote_t == target)),
    }


def analyse(cells: Path, dataset: str, seed: int) -> dict:
    out = {}
    for folder in sorted((cells / dataset).iterdir()):
        load = {d: _load(folder / f"{d}-seed{seed}.json") for d in ("none", "uniform", "frs", "frs-transplant")}
        if any(v is None for v in load.values()):
            continue
        union = _load(folder / f"frs-fluency-transplant-seed{seed}.json")
        tp = load["frs-transplant"]
        yc, yt, target = _gold(tp)
        n_clean = len(yc)

        def votes(cell: dict) -> np.ndarray:
            i = cell["predictions_fields"].index("vote_label") if "vote_label" in cell["predictions_fields"] else 0
            return np.array([p[i] for p in cell["predictions"]["clean"] + cell["predictions"]["triggered"]])

        frs, uni = votes(load["frs"]), votes(load["uniform"])
        rows = {
            n: [dict(zip(c["defense_settings"]["checks_fields"], r)) for r in c["defense_settings"]["checks"]]
            for n, c in (("transplant", tp), ("union", union))
            if c is not None
        }
        # the identity the sweep rests on, checked on the recorded decisions
        for name, cell in (("transplant", tp), ("union", union)):
            if cell is None:
                continue
            kept = np.array([bool(r["kept"]) for r in rows[name]])
            if not np.array_equal(votes(cell), np.where(kept, frs, uni)):
                raise SystemExit(f"{folder.name}: {name} predictions are not frs's where kept and uniform's where dropped")
        stat = tp["defense_settings"]["transplant_calibration"]["statistic"]
        score = np.array([np.nan if r[stat] is None else r[stat] for r in rows["transplant"]], dtype=float)
        fluency = np.array([bool(r["fluency_kept"]) for r in rows["union"]]) if union is not None else None

        def at(keep: np.ndarray) -> dict:
            v = np.where(keep, frs, uni)
            return {
                **_rates(v[:n_clean], v[n_clean:], yc, yt, target),
                "kept_clean": float(np.mean(keep[:n_clean])),
                "kept_triggered": float(np.mean(keep[n_clean:])),
            }

        sweep = []
        for thr in THRESHOLDS:
            keep = np.nan_to_num(score, nan=-np.inf) > thr
            rec = {"threshold": thr, "transplant": at(keep)}
            if fluency is not None:
                rec["union"] = at(keep | fluency)
            sweep.append(rec)
        none_c, none_t = votes(load["none"])[:n_clean], votes(load["none"])[n_clean:]
        out[folder.name] = {
            "statistic": stat,
            "calibrated_threshold": tp["defense_settings"]["transplant_calibration"]["threshold"],
            "n_clean": n_clean,
            "n_triggered": len(yt),
            "none": _rates(none_c, none_t, yc, yt, target),
            "uniform": _rates(uni[:n_clean], uni[n_clean:], yc, yt, target),
            "frs": _rates(frs[:n_clean], frs[n_clean:], yc, yt, target),
            "recorded": {"transplant": at(np.array([bool(r["kept"]) for r in rows["transplant"]]))}
            | ({"union": at(np.array([bool(r["kept"]) for r in rows["union"]]))} if union is not None else {}),
            "sweep": sweep,
        }
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.0f}"


def render(res: dict, stem: str = "transplant_tradeoff") -> str:
    lines = [
        "# The transplant check's threshold: what it trades",
        "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}; source: the cells of `{res['cells']}` ({res['dataset']}, seed {res['seed']})",
        "- method: exact, from the recorded frs and uniform predictions (see the script's docstring; the identity is "
        "asserted on the recorded frs-transplant and frs-fluency-transplant cells before anything is computed).",
        "- the swept thresholds are read against triggered inputs: an oracle view of what the statistic separates, "
        "NOT a calibration (the defense calibrates on clean dev data only).",
        "",
    ]
    for attack, r in res["attacks"].items():
        lines += [
            f"## {attack}",
            "",
            f"n = {r['n_clean']} clean + {r['n_triggered']} triggered; statistic `{r['statistic']}`, calibrated "
            f"threshold {r['calibrated_threshold']:.3f}. none CA / ASR {_pct(r['none']['ca'])} / {_pct(r['none']['asr'])}, "
            f"uniform {_pct(r['uniform']['ca'])} / {_pct(r['uniform']['asr'])}, frs {_pct(r['frs']['ca'])} / "
            f"{_pct(r['frs']['asr'])}.",
            "",
            "| threshold | transplant CA / PA / ASR | kept clean / trig. | fluency OR transplant CA / PA / ASR | kept clean / trig. |",
            "|---|---|---|---|---|",
        ]
        for s in r["sweep"]:
            t, u = s["transplant"], s.get("union")
            cells = [
                f"{s['threshold']:.2f}",
                f"{_pct(t['ca'])} / {_pct(t['pa'])} / {_pct(t['asr'])}",
                f"{_pct(t['kept_clean'])} / {_pct(t['kept_triggered'])}",
                f"{_pct(u['ca'])} / {_pct(u['pa'])} / {_pct(u['asr'])}" if u else "-",
                f"{_pct(u['kept_clean'])} / {_pct(u['kept_triggered'])}" if u else "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"![trade-off]({stem}.png)", ""]
    lines += [f"Note: {n}" for n in res.get("notes", [])]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(res["attacks"])
    fig, axes = plt.subplots(1, len(attacks), figsize=(4 * len(attacks), 3.6), sharey=True, squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        r = res["attacks"][attack]
        for key, style in (("transplant", "-o"), ("union", "-s")):
            pts = [(s[key]["asr"], s[key]["ca"]) for s in r["sweep"] if key in s]
            if pts:
                ax.plot([100 * a for a, _ in pts], [100 * c for _, c in pts], style, ms=3, label=key)
        for name, mark in (("none", "k*"), ("uniform", "kx"), ("frs", "k^")):
            ax.plot(100 * r[name]["asr"], 100 * r[name]["ca"], mark, ms=8, label=name)
        ax.axvline(25, color="grey", lw=0.6, ls=":")
        ax.axhline(100 * r["none"]["ca"] - 2, color="grey", lw=0.6, ls=":")
        ax.set_title(attack)
        ax.set_xlabel("ASR %")
    axes[0][0].set_ylabel("CA %")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("threshold swept 0-1 (oracle view); dotted: ASR 25%, none's CA - 2", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="runs/eval/transplant/cells")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()
    configure_process()
    res = {
        "command": shlex.join(["python"] + sys.argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cells": args.cells,
        "dataset": args.dataset,
        "seed": args.seed,
        "notes": args.note,
        "attacks": analyse(Path(args.cells), args.dataset, args.seed),
    }
    if not res["attacks"]:
        raise SystemExit(f"no attack under {args.cells}/{args.dataset} has none, uniform, frs and frs-transplant cells")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "transplant_tradeoff" + ("" if args.seed == 0 else f"_seed{args.seed}")  # seed 0 keeps its old name
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    plot(res, out / f"{stem}.png")
    (out / f"{stem}.md").write_text(render(res, stem))
    print(render(res, stem))
    return 0


if __name__ == "__main__":
    sys.exit(main())
