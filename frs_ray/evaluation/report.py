"""Summaries of an ``frs eval`` run: JSON, CSV, a Markdown table shaped like Table 1, and PNG plots.

One summary record per (dataset, attack, defense): the mean and standard deviation over seeds of every metric,
with the keys ``dataset``, ``attack``, ``defense``, ``ca``, ``pa``, ``asr``, ``avg_radius``, ``max_radius``,
``seeds`` (plus ``*_std`` and the rest). Plots: certified accuracy against perturbation level, one line per
certified defense, one panel per (dataset, attack).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

SCALARS = (
    "ca",
    "pa",
    "asr",
    "ca_certified",
    "pa_certified",
    "asr_certified",
    "not_certified_clean",
    "not_certified_triggered",
    "abstain_clean",
    "abstain_triggered",
    "avg_radius",
    "max_radius",
    "avg_radius_unconditional",
    "max_radius_unconditional",
    "share_radius_positive",
    "localization_flagged",
    "clean_queries_per_input",
    "clean_seconds_per_input",
    "triggered_queries_per_input",
    "triggered_seconds_per_input",
)


def load_cells(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "cells").rglob("*.json"))]


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _signature(cell: dict[str, Any]) -> str:
    """Everything that defines a cell except its seed (cells of one summary row must agree on it)."""
    return json.dumps({k: v for k, v in cell.get("settings", {}).items() if k != "seed"}, sort_keys=True, default=str)


def _machine(cell: dict[str, Any]) -> str:
    from .runner import machine_line

    return machine_line(cell.get("machine") or {})


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (dataset, attack, defense), over the seeds of its newest settings: cells left in the run
    folder by an earlier configuration (other attack, victim or defense settings) are not mixed in; they are
    counted in ``stale_cells_skipped``."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["attack"], c["defense"]), []).append(c)
    out = []
    for (d, a, f), all_cs in groups.items():
        newest = _signature(max(all_cs, key=lambda c: c.get("created", "")))
        cs = [c for c in all_cs if _signature(c) == newest]
        rec: dict[str, Any] = {
            "dataset": d,
            "attack": a,
            "defense": f,
            "seeds": sorted(c["seed"] for c in cs),
            "n_clean": cs[0]["data"]["n_clean"],
            "n_triggered": cs[0]["data"]["n_triggered"],
            "radius_assumes": cs[0]["metrics"].get("radius_assumes"),
            "wall_seconds": float(sum(c["wall_seconds"] for c in cs)),
            "stale_cells_skipped": len(all_cs) - len(cs),
            "machines": sorted({_machine(c) for c in cs}),
        }
        for k in SCALARS:
            rec[k], rec[f"{k}_std"] = _mean_std([c["metrics"].get(k) for c in cs])
        levels = cs[0]["metrics"]["certified_accuracy"].keys()
        rec["certified_accuracy"] = {lv: _mean_std([c["metrics"]["certified_accuracy"][lv] for c in cs])[0] for lv in levels}
        if "localization_by_budget" in cs[0]["metrics"]:
            rec["localization_by_budget"] = {
                b: _mean_std([c["metrics"]["localization_by_budget"][b] for c in cs])[0]
                for b in cs[0]["metrics"]["localization_by_budget"]
            }
        out.append(rec)
    order = {
        "none": 0,
        "onion": 1,
        "strip": 2,
        "rap": 3,
        "textguard": 4,
        "ranmask": 5,
        "uniform": 6,
        "no-ftr": 7,
        "no-bmps": 8,
        "no-bmps-ft": 9,
        "no-bmps-inf": 10,
        "frs": 11,
        "frs-fluency": 12,
        "frs-transplant": 13,
        "frs-fluency-transplant": 14,
    }
    return sorted(out, key=lambda r: (r["dataset"], r["attack"], order.get(r["defense"], 99), r["defense"]))


def _pct(v: float | None, s: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" + (f" ± {100 * s:.1f}" if s else "")


def _num(v: float | None, s: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" + (f" ± {s:.2f}" if s else "")


def _cert_cols(r: dict[str, Any]) -> str:
    if r.get("ca_certified") is None:
        return "-"
    return " / ".join(_pct(r[k]) for k in ("ca_certified", "pa_certified", "asr_certified"))


def markdown(summary: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {header.get('name', 'eval')}", ""]
    for k in ("command", "machine", "date", "profile", "wall_time"):
        if k in header:
            lines.append(f"- {k.replace('_', ' ')}: {header[k]}")
    lines += [
        "",
        "CA, PA and ASR in % (mean ± std over seeds) of each defense's prediction (Appendix B.1; for the "
        "smoothing defenses the K voters' majority vote, a tie abstains); an abstention counts as wrong for "
        'CA/PA and as no attack success. "Certified" CA / PA / ASR count an input only where the '
        'defense\'s certificate holds (FRS: Clopper-Pearson p_lower > 0.5 at alpha); "not certified" is '
        "the share where it abstains. Radii in word tokens over clean inputs certified correct; `frs` and "
        "the fuzzed ablations report the conditional radius (assumes the trigger lies in the found span "
        "T(x'), omega_H), `uniform`/`ranmask` the unconditional one (omega_M), `textguard` its word-group "
        "certificate; `frs-fluency` (an extension, not the paper's method: FRS whose span is kept only where "
        "deleting it lowers a language model's perplexity) the conditional one where a span is kept, else "
        "the unconditional one; `frs-transplant` (an extension, not the paper's method: FRS whose span is kept only "
        "where inserting it into clean reference texts of other labels moves them to the input's label, "
        "threshold calibrated on clean dev data) likewise, and `frs-fluency-transplant` (an extension: the span is "
        "kept where either check keeps it) likewise. Queries are model forward passes per input (LM "
        "ones and the transplant check's included).",
        "",
    ]
    datasets = sorted({r["dataset"] for r in summary})
    for d in datasets:
        machines = sorted({m for r in summary if r["dataset"] == d for m in r.get("machines", [])})
        stale = sum(r.get("stale_cells_skipped", 0) for r in summary if r["dataset"] == d)
        cell_s = sum(r["wall_seconds"] for r in summary if r["dataset"] == d)
        lines += [
            f"## {d}",
            "",
            f"Cells ran on: {'; '.join(machines) or 'not recorded'}; their compute time: "
            f"{cell_s:.0f} s (defense build + predictions; model training in the zoo not included)"
            + (f" ({stale} cells of earlier settings in the run folder not included)" if stale else ""),
            "",
            "| attack | defense | CA | PA | ASR | certified CA / PA / ASR | not certified (clean / trig.) | "
            "avg radius | max radius | cert. acc. 10/20/30/40/50% | queries / input | s / input | "
            "n (clean / trig.) | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in summary if r["dataset"] == d):
            ca = r["certified_accuracy"]
            cert = "-" if all(v is None for v in ca.values()) else " / ".join(_pct(v) for v in ca.values())
            lines.append(
                f"| {r['attack']} | {r['defense']} | {_pct(r['ca'], r['ca_std'])} | {_pct(r['pa'], r['pa_std'])} | "
                f"{_pct(r['asr'], r['asr_std'])} | {_cert_cols(r)} | "
                f"{_pct(r['not_certified_clean'])} / {_pct(r['not_certified_triggered'])} | "
                f"{_num(r['avg_radius'], r['avg_radius_std'])} | {_num(r['max_radius'])} | {cert} | "
                f"{_num(r['clean_queries_per_input'])} | {_num(r['clean_seconds_per_input'])} | "
                f"{r['n_clean']} / {r['n_triggered']} | {len(r['seeds'])} |"
            )
        loc = [r for r in summary if r["dataset"] == d and r.get("localization_by_budget")]
        if loc:
            budgets = list(loc[0]["localization_by_budget"])
            lines += [
                "",
                "Trigger localization of the MCTS spans on triggered inputs (Appendix I): share whose "
                "top span contains a trigger piece.",
                "",
                "| attack | " + " | ".join(f"budget {b}" for b in budgets) + " |",
                "|---|" + "---|" * len(budgets),
            ]
            for r in loc:
                lines.append(f"| {r['attack']} | " + " | ".join(_pct(r["localization_by_budget"][b]) for b in budgets) + " |")
        lines.append("")
    return "\n".join(lines)


def write_csv(summary: list[dict[str, Any]], path: Path) -> None:
    cols = (
        ["dataset", "attack", "defense", "ca", "pa", "asr", "avg_radius", "max_radius"]
        + [k for k in SCALARS if k not in ("ca", "pa", "asr", "avg_radius", "max_radius")]
        + [f"{k}_std" for k in ("ca", "pa", "asr", "avg_radius")]
        + ["seeds", "n_clean", "n_triggered"]
    )
    levels = list(summary[0]["certified_accuracy"]) if summary else []
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + [f"certified_accuracy_{lv}" for lv in levels])
        for r in summary:
            w.writerow(
                [" ".join(map(str, r[c])) if c == "seeds" else r.get(c) for c in cols]
                + [r["certified_accuracy"].get(lv) for lv in levels]
            )


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["attack"]) for r in summary})
    panels = [
        p
        for p in panels
        if any(
            r["certified_accuracy"] and any(v is not None for v in r["certified_accuracy"].values())
            for r in summary
            if (r["dataset"], r["attack"]) == p
        )
    ]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (d, a) in zip(axes[0], panels):
        for r in (r for r in summary if (r["dataset"], r["attack"]) == (d, a)):
            ca = r["certified_accuracy"]
            if all(v is None for v in ca.values()):
                continue
            ax.plot([100 * float(k) for k in ca], [100 * v for v in ca.values()], marker="o", label=r["defense"])
        ax.set(title=f"{d} / {a}", xlabel="perturbation level (% of tokens)", ylabel="certified accuracy (%)", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bars(summary: list[dict[str, Any]], path: Path) -> None:
    """CA, PA and ASR of every defense as grouped bars, one panel per (dataset, attack)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["attack"]) for r in summary})
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), squeeze=False)
    for ax, (d, a) in zip(axes[:, 0], panels):
        rows = [r for r in summary if (r["dataset"], r["attack"]) == (d, a)]
        x = np.arange(len(rows))
        for i, (k, colour) in enumerate((("ca", "tab:blue"), ("pa", "tab:green"), ("asr", "tab:red"))):
            vals = [100 * (r[k] or 0.0) for r in rows]
            errs = [100 * (r.get(f"{k}_std") or 0.0) for r in rows]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=errs, color=colour, label=k.upper(), capsize=2)
        ax.set_xticks(x, [r["defense"] for r in rows], fontsize=8)
        ax.set(title=f"{d} / {a} (n seeds = {max(len(r['seeds']) for r in rows)})", ylabel="%", ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(root: Path, header: dict[str, Any], results_dir: Path | None = None) -> dict[str, Path]:
    """Write eval.json/.csv/.md and the two plots into ``root``; with ``results_dir``, copies named after the run
    (:func:`copy_reports`)."""
    summary = summarize(load_cells(root))
    doc = {**header, "records": summary}
    paths = {
        "json": root / "eval.json",
        "csv": root / "eval.csv",
        "md": root / "eval.md",
        "png": root / "eval_certified_accuracy.png",
        "bars": root / "eval_ca_pa_asr.png",
    }
    paths["json"].write_text(json.dumps(doc, indent=2))
    write_csv(summary, paths["csv"])
    paths["md"].write_text(
        markdown(summary, header) + f"\n![CA, PA, ASR]({paths['bars'].name})\n\n![certified accuracy]({paths['png'].name})\n"
    )
    plot(summary, paths["png"])
    plot_bars(summary, paths["bars"])
    if results_dir is not None:
        copy_reports(paths, results_dir, str(header.get("name") or "eval"))
    return paths


def copy_reports(paths: dict[str, Path], results_dir: Path, stem: str) -> None:
    """Copy the run's reports into ``results_dir`` named after the run (``eval.md`` -> ``<stem>.md``, the plots
    likewise, with the Markdown's image links renamed to match), so runs of different configs never overwrite
    each other's published reports."""
    results_dir.mkdir(parents=True, exist_ok=True)
    renamed = {p.name: p.name.replace("eval", stem, 1) for p in paths.values()}
    for key, p in paths.items():
        if not p.is_file():
            continue
        if key == "md":
            text = p.read_text()
            for old, new in renamed.items():
                text = text.replace(f"]({old})", f"]({new})")
            (results_dir / renamed[p.name]).write_text(text)
        else:
            (results_dir / renamed[p.name]).write_bytes(p.read_bytes())
