"""Outputs of a study: results.csv, tradeoff.png, best_config.yaml (a Serve config), study.json, machine info,
rows from a Tune ResultGrid, and the copy to a publish folder."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Sequence

from .pareto import _num, pareto_front, select_best
from .report import _fmt, write_markdown
from .settings import SEARCHED, StudySettings

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_TEMPLATE = REPO_ROOT / "deployments" / "frs.yaml"
# Columns of results.csv, in order: ca, pa, asr on the voters' majority vote, certified_* on the certified label
# (definitions: study.trial.point_metrics).
CSV_COLUMNS = [
    "K",
    "sigma",
    "H",
    "budget",
    "ca",
    "pa",
    "asr",
    "certified_ca",
    "certified_pa",
    "certified_asr",
    "avg_radius",
    "omega_h",
    "omega_m",
    "max_distance",
    "n_max",
    "abstain",
    "abstain_triggered",
    "vote_abstain",
    "avg_radius_unconditional",
    "avg_radius_all",
    "queries_per_input",
    "seconds_per_input",
    "dev_acc",
    "n_clean",
    "n_triggered",
    "finetune_reused",
    "epochs_trained",
    "pareto",
    "best",
    "trial_id",
    "checkpoint",
]


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k, "")) for k in CSV_COLUMNS})


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """ASR vs CA (both on the majority vote) and average certified radius vs CA, Pareto fronts marked, best
    configuration starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    sigmas = sorted({r["sigma"] for r in rows})
    cmap = plt.get_cmap("viridis", max(2, len(sigmas)))
    panels = [
        ("asr", "min", "ASR, majority vote (lower is better)", "ASR vs CA; Pareto front: CA up, ASR down"),
        ("avg_radius", "max", "average certified radius (tokens)", "radius vs CA; Pareto front: CA up, radius up"),
    ]
    for ax, (ykey, sense, ylabel, subtitle) in zip(axes, panels):
        ax.set_title(subtitle, fontsize=9)
        pts = [r for r in rows if not math.isnan(_num(r.get(ykey))) and not math.isnan(_num(r.get("ca")))]
        front = pareto_front(pts, [("ca", "max"), (ykey, sense)])
        for r, on in zip(pts, front):
            ax.scatter(
                r["ca"],
                r[ykey],
                s=25 + 2.5 * r["K"],
                color=cmap(sigmas.index(r["sigma"])),
                edgecolors="red" if on else "none",
                linewidths=1.6 if on else 0,
                alpha=0.85,
                zorder=3,
            )
            ax.annotate(f"K{r['K']}", (r["ca"], r[ykey]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        fr = sorted((r for r, on in zip(pts, front) if on), key=lambda r: r["ca"])
        if fr:
            ax.step(
                [r["ca"] for r in fr],
                [r[ykey] for r in fr],
                where="post",
                color="red",
                lw=1.2,
                ls="--",
                zorder=2,
                label="Pareto front",
            )
        for r in pts:
            if r.get("best"):
                ax.scatter(
                    r["ca"],
                    r[ykey],
                    marker="*",
                    s=260,
                    color="gold",
                    edgecolors="black",
                    zorder=4,
                    label="chosen (best_config.yaml)",
                )
        ax.set_xlabel("CA, majority vote (clean accuracy, abstain = wrong)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, "no finished trial has this metric", ha="center", transform=ax.transAxes)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=f"sigma={s:g}") for i, s in enumerate(sigmas)]
    h0, l0 = axes[0].get_legend_handles_labels()
    axes[0].legend(handles=handles + h0, fontsize=7, loc="best")
    fig.suptitle(title + "  (marker size ~ K)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_serve_config(row: dict[str, Any], s: StudySettings, path: Path) -> dict[str, Any]:
    """The chosen configuration as a Serve config in the format of deployments/frs.yaml (ready for ``serve run``)."""
    import yaml

    from frs_ray.serving.settings import ServiceSettings

    if SERVE_TEMPLATE.is_file():
        doc = yaml.safe_load(SERVE_TEMPLATE.read_text())
    else:  # the same structure, should the template be missing
        doc = {
            "proxy_location": "HeadOnly",
            "http_options": {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 180},
            "applications": [
                {
                    "name": "frs",
                    "route_prefix": "/",
                    "import_path": "frs_ray.serving.router:build_app",
                    "args": {
                        "voter_actors": 2,
                        "fuzz_actors": 2,
                        "num_cpus_per_actor": 0.25,
                        "torch_threads": 1,
                        "max_budget": 50,
                    },
                    "deployments": [{"name": "FRSRouter", "user_config": {}}],
                }
            ],
        }
    app = doc["applications"][0]
    args = app.setdefault("args", {})
    k, budget = int(row["K"]), int(row["budget"])
    args["checkpoint"] = str(Path(row["checkpoint"]).resolve())
    args["k"] = k
    args["voter_actors"] = max(1, min(int(args.get("voter_actors", 2)), k))
    args["max_budget"] = max(int(args.get("max_budget", 50)), budget)
    certify = {
        "alpha": s.alpha,
        "seed": s.cert_seed,
        "fuzzing": {"budget": budget},
        "randomize": {
            "omega_m": float(row["omega_m"]),
            "omega_h": float(row["omega_h"]),
            "max_distance": float(row["max_distance"]),
        },
    }
    if s.n_estimate is not None:
        certify["n_estimate"] = s.n_estimate
    n_max = int(row.get("n_max") or 0)
    if n_max > 0:  # sequential CERTIFY
        certify["n_max"] = n_max
        args["max_n_max"] = max(int(args.get("max_n_max", 640)), n_max)
    args["certify"] = certify
    ServiceSettings.model_validate(args)  # the router would reject anything else
    for dep in app.get("deployments", []):
        if dep.get("name") == "FRSRouter":
            dep["user_config"] = {"alpha": s.alpha, "budget": budget}
    header = (
        f"# serve run {path.resolve()}\n"
        f"# Best configuration of the FRS Tune study '{s.name}' (rule: highest CA - ASR; ties: higher CA, larger radius, fewer queries).\n"
        f"# K={k} sigma={_fmt(row['sigma'], 4)} H={row['H']} budget={budget} omega_h={row['omega_h']} "
        f"omega_m={row['omega_m']} Lambda={row['max_distance']}: CA={_fmt(row['ca'])} PA={_fmt(row['pa'])} "
        f"ASR={_fmt(row['asr'])} (majority vote); certified CA={_fmt(row.get('certified_ca'))} "
        f"PA={_fmt(row.get('certified_pa'))} ASR={_fmt(row.get('certified_asr'))}; avg radius={_fmt(row['avg_radius']) or 'n/a'} (n={row['n_clean']} clean, "
        f"{row['n_triggered']} triggered).\n"
        f"# sigma and H are properties of the checkpoint (its frs.json); the service reads them from there.\n"
    )
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return doc


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    def ver(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    commit, dirty = None, None
    with contextlib.suppress(Exception):
        commit = (
            subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "versions": {n: ver(n) for n in ("torch", "transformers", "ray", "optuna", "frs-ray")},
    }
    info["summary"] = (
        f"{info['machine']}, {info['cpus']} cores, Python {info['python']}, torch {info['versions']['torch']}, ray {info['versions']['ray']}"
    )
    return info


def rows_from_results(results: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Finished rows (phase == done) and counts of stopped/errored trials from a Tune ResultGrid."""
    rows, counts = [], {"finished": 0, "stopped_early": 0, "errored": 0}
    for res in results:
        m = res.metrics or {}
        if getattr(res, "error", None) is not None:
            counts["errored"] += 1
        elif m.get("phase") == "done":
            counts["finished"] += 1
            row = {k: m.get(k) for k in m}
            row["dev_acc"] = m.get("dev_acc_final")
            for k in ("avg_radius", "avg_radius_unconditional"):
                if row.get(k) is None:
                    row[k] = float("nan")
            rows.append(row)
        else:
            counts["stopped_early"] += 1
    rows.sort(key=lambda r: tuple(r[k] for k in SEARCHED))
    return rows, counts


def write_outputs(rows: list[dict[str, Any]], s: StudySettings, study: dict[str, Any]) -> dict[str, Path]:
    out = Path(s.out)
    front = pareto_front(rows)
    best = select_best(rows)
    for i, r in enumerate(rows):
        r["pareto"] = front[i]
        r["best"] = i == best
    paths = {
        "csv": out / "results.csv",
        "md": out / "results.md",
        "png": out / "tradeoff.png",
        "yaml": out / "best_config.yaml",
        "json": out / "study.json",
    }
    write_csv(rows, paths["csv"])
    plot_tradeoff(rows, paths["png"], f"FRS study {s.name}: {s.model}, {s.data}")
    if best is not None:
        write_serve_config(rows[best], s, paths["yaml"])
        study["best"] = {k: rows[best].get(k) for k in CSV_COLUMNS}
    else:
        paths.pop("yaml")
        study["best"] = None
    paths["json"].write_text(json.dumps(study, indent=2, default=str))
    write_markdown(rows, s, study, paths["md"], paths["png"].name)
    return paths


def publish(paths: dict[str, Path], folder: Path) -> None:
    """Copy results.md / results.csv / tradeoff.png to ``folder`` as tune.md, tune.csv, tune_tradeoff.png."""
    folder.mkdir(parents=True, exist_ok=True)
    md = paths["md"].read_text().replace(f"]({paths['png'].name})", "](tune_tradeoff.png)")
    (folder / "tune.md").write_text(md)
    shutil.copyfile(paths["csv"], folder / "tune.csv")
    shutil.copyfile(paths["png"], folder / "tune_tradeoff.png")
