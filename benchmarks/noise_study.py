"""Noise-aware fine-tuning: does randomizing the fine-tuning data (Eq. 3's D_F + eps) recover FRS's clean accuracy?

FRS's voters read fuzzed randomizations: the MCTS span T(x') mutated with probability omega_H (0.9), the rest with
omega_L. On clean text the span MCTS finds is the word the label rests on (the sentiment word of an SST-2
review), so most votes lose it and the majority vote's clean accuracy (CA) drops. BMPS (Sec. 4.2) smooths the
parameters, not the data, so the voters never saw damaged text in fine-tuning. ``SmoothingConfig.data_noise``
re-randomizes each fine-tuning text at every step with FTR's mutation set (see ``frs_ray.smoothing.data_noise``).
This study fine-tunes the smoothed victim at each rate and evaluates none / uniform / FRS on the same test subsets
as the main evaluation (``configs/eval/sst2.yaml``: BadNets and RIPPLe_a, K=20, quick profile). Rate 0 is the main
evaluation run (``runs/eval/eval``); each other rate is its own resumable ``frs eval`` run (``runs/eval/noise-<rate>``).

    python benchmarks/noise_study.py --rates 0 0.15 0.3 --seeds 0 1 2

Writes ``docs/results/noise_aware.{md,json,png}``: per rate and attack, CA / PA / ASR (mean +- std over seeds),
the CA drop against no defense (paired by seed), certified CA and the average radius.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from _plots import METRIC_COLOURS, attack_panels

from frs_ray.evaluation.config import load_eval_config
from frs_ray.evaluation.runner import cell_path, machine_line, run_eval
from frs_ray.runtime import configure_process

KEYS = ("ca", "pa", "asr", "ca_certified", "avg_radius", "not_certified_clean")
DEFENSES = ("none", "uniform", "frs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/eval/sst2.yaml")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.15, 0.3], help="data_noise values (0 = BMPS only)")
    ap.add_argument("--attacks", nargs="+", default=["badnets", "ripple"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--dataset", default=None, help="one dataset of the config (default: its first)")
    ap.add_argument("--out", default="docs/results/noise_aware")
    args = ap.parse_args()
    bad = [r for r in args.rates if not 0 <= r < 1]
    if bad:
        ap.error(f"--rates must lie in [0, 1), got {bad}")
    configure_process()
    started = time.perf_counter()
    rows = []
    for rate in args.rates:
        over = {"attacks": args.attacks, "defenses": list(DEFENSES), "seeds": args.seeds}
        if args.dataset:
            over["datasets"] = [args.dataset]
        if rate > 0:
            over |= {"name": f"noise-{rate:g}", "bmps": {"data_noise": rate}}
        cfg = load_eval_config(args.config, overrides=over)
        root = run_eval(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        for attack in args.attacks:
            for seed in args.seeds:
                for defense in DEFENSES:
                    path = cell_path(root, cfg.datasets[0], attack, defense, seed)
                    if not path.is_file():
                        print(f"missing cell {path} (it failed; see the log above)", file=sys.stderr)
                        continue
                    cell = json.loads(path.read_text())
                    rows.append(
                        {
                            "rate": rate,
                            "dataset": cfg.datasets[0],
                            "attack": attack,
                            "defense": defense,
                            "seed": seed,
                            "n_clean": cell["data"]["n_clean"],
                            "n_triggered": cell["data"]["n_triggered"],
                            "smoothed": cell["models"]["smoothed"],
                            "cell_seconds": cell["wall_seconds"],
                            **{k: cell["metrics"].get(k) for k in KEYS},
                        }
                    )
    doc = {
        "command": "python benchmarks/noise_study.py " + shlex.join(sys.argv[1:]),
        "machine": machine_line(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.perf_counter() - started),
        "rows": rows,
        "summary": summarize(rows),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    out.with_suffix(".md").write_text(_markdown(doc, out.with_suffix(".png").name))
    _plot(doc["summary"], out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())
    return 0


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (rate, attack, defense); ``ca_drop``: none's CA minus this CA, paired by seed."""
    none_ca = {(r["attack"], r["seed"]): r["ca"] for r in rows if r["defense"] == "none" and r["rate"] == 0} or {
        (r["attack"], r["seed"]): r["ca"] for r in rows if r["defense"] == "none"
    }
    out = []
    for key in sorted({(r["rate"], r["attack"], r["defense"]) for r in rows}):
        group = [r for r in rows if (r["rate"], r["attack"], r["defense"]) == key]
        rec = {
            "rate": key[0],
            "attack": key[1],
            "defense": key[2],
            "seeds": sorted(r["seed"] for r in group),
            "n_clean": group[0]["n_clean"],
            "n_triggered": group[0]["n_triggered"],
        }
        for k in KEYS:
            vals = [r[k] for r in group if r[k] is not None]
            rec[k] = float(np.mean(vals)) if vals else None
            rec[f"{k}_std"] = float(np.std(vals)) if len(vals) > 1 else None
        drops = [none_ca[(r["attack"], r["seed"])] - r["ca"] for r in group if (r["attack"], r["seed"]) in none_ca]
        rec["ca_drop"] = float(np.mean(drops)) if drops else None
        rec["ca_drop_std"] = float(np.std(drops)) if len(drops) > 1 else None
        out.append(rec)
    return out


def _pm(v, s, scale=100.0, fmt="{:.1f}") -> str:
    if v is None:
        return "-"
    return fmt.format(scale * v) + ("" if s is None else " ± " + fmt.format(scale * s))


def _markdown(doc: dict, png: str) -> str:
    datasets = ", ".join(sorted({r["dataset"] for r in doc["rows"]}))
    lines = [
        f"# Noise-aware fine-tuning (Eq. 3's randomized fine-tuning data) and FRS's clean accuracy ({datasets}, K=20)",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}  ",
        f"Date: {doc['date']}  ",
        f"Compute time of the cells: {round(sum(r['cell_seconds'] for r in doc['rows']))} s on one core (this "
        f"invocation: {doc['wall_seconds']} s; cells already computed are reused; rate 0 is the main evaluation "
        "run), not counting the smoothed fine-tunes",
        "",
        "`rate` is `SmoothingConfig.data_noise`: the per-token mutation probability of the randomized fine-tuning "
        "texts of the smoothed (BMPS) victim; 0 is the paper's BMPS. `none` (the plain victim) does not depend on "
        "it. CA / PA / ASR (%) of the voters' majority vote, mean ± std over seeds; `CA drop` is no defense's CA "
        "minus this CA on the same seed's test subset, in points. With 100 sentences per set, one seed's "
        "differences under about 10 points are noise.",
        "",
        "| attack | rate | defense | CA | CA drop | PA | ASR | certified CA | avg radius | seeds | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(doc["summary"], key=lambda r: (r["attack"], r["defense"] != "none", r["defense"], r["rate"])):
        if (
            r["defense"] == "none"
            and r["rate"] != 0
            and any(x["defense"] == "none" and x["rate"] == 0 and x["attack"] == r["attack"] for x in doc["summary"])
        ):
            continue  # the plain victim does not depend on the rate: one row
        lines.append(
            f"| {r['attack']} | {'-' if r['defense'] == 'none' else format(r['rate'], 'g')} | {r['defense']} | "
            f"{_pm(r['ca'], r['ca_std'])} | {_pm(r['ca_drop'], r['ca_drop_std'])} | {_pm(r['pa'], r['pa_std'])} | "
            f"{_pm(r['asr'], r['asr_std'])} | {_pm(r['ca_certified'], r['ca_certified_std'])} | "
            f"{_pm(r['avg_radius'], r['avg_radius_std'], 1.0, '{:.2f}')} | "
            f"{','.join(map(str, r['seeds']))} | {r['n_clean']} + {r['n_triggered']} |"
        )
    frs = [r for r in doc["summary"] if r["defense"] == "frs" and r["ca_drop"] is not None]
    if frs:
        best = min(frs, key=lambda r: r["ca_drop"])
        lines += [
            "",
            f"Smallest FRS CA drop: {100 * best['ca_drop']:.1f} points ({best['attack']}, rate "
            f"{best['rate']:g}; PA {100 * best['pa']:.0f}, ASR {100 * best['asr']:.0f}). "
            + ("Within" if best["ca_drop"] <= 0.02 else "Not within")
            + " the 2-point target.",
        ]
    return "\n".join(lines) + f"\n\n![CA, PA, ASR against the data-noise rate]({png})\n"


def _plot(summary: list[dict], path: Path) -> None:
    def draw(ax, attack: str) -> str:
        for defense, ls in (("frs", "-"), ("uniform", "--")):
            rs = sorted((r for r in summary if r["attack"] == attack and r["defense"] == defense), key=lambda r: r["rate"])
            for k, colour in METRIC_COLOURS:
                ax.errorbar(
                    [r["rate"] for r in rs],
                    [100 * r[k] for r in rs],
                    yerr=[100 * (r[f"{k}_std"] or 0) for r in rs],
                    color=colour,
                    ls=ls,
                    marker="o",
                    capsize=3,
                    label=f"{defense} {k.upper()}",
                )
        none = [r for r in summary if r["attack"] == attack and r["defense"] == "none"]
        if none:
            ax.axhline(100 * none[0]["ca"], color="tab:blue", ls=":", lw=1, label="none CA")
        return attack

    attack_panels(
        sorted({r["attack"] for r in summary}),
        path,
        draw,
        xlabel="data_noise (fine-tuning text randomization)",
        width=4.6,
        legend={"fontsize": 7, "ncol": 2},
    )


if __name__ == "__main__":
    sys.exit(main())
