"""The markdown report of a study (results.md) and its number formatting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .settings import StudySettings


def _fmt(v: Any, digits: int = 3) -> str:
    """Numbers with ``digits`` significant digits; NaN and None as empty cells."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


MD_COLUMNS = [
    ("K", "K"),
    ("sigma", "sigma"),
    ("H", "H"),
    ("budget", "budget"),
    ("omega_h", "omega_H"),
    ("omega_m", "omega_M"),
    ("max_distance", "Lambda"),
    ("n_max", "n_max"),
    ("ca", "CA (vote)"),
    ("pa", "PA (vote)"),
    ("asr", "ASR (vote)"),
    ("certified_ca", "certified CA"),
    ("certified_pa", "certified PA"),
    ("certified_asr", "certified ASR"),
    ("avg_radius", "avg radius"),
    ("avg_radius_all", "radius (all)"),
    ("abstain", "cert. abstain"),
    ("queries_per_input", "queries/input"),
    ("seconds_per_input", "s/input"),
    ("dev_acc", "dev acc"),
    ("finetune_reused", "ckpt reused"),
    ("pareto", "Pareto"),
]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for r in rows:
        cells = []
        for k, _ in MD_COLUMNS:
            v = r.get(k)
            cell = _fmt(v, 3)
            cells.append(
                f"**{cell}**"
                if r.get("best") and k in ("ca", "pa", "asr", "certified_ca", "certified_pa", "certified_asr")
                else cell
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(rows, s: StudySettings, study: dict[str, Any], path: Path, png_name: str) -> None:
    run = study["runs"][-1]
    best = next((r for r in rows if r.get("best")), None)
    ev = study["evaluation"]
    out = [
        f"# FRS hyperparameter study `{s.name}`",
        "",
        f"- Date: {run['finished']}; machine: {study['machine']['summary']}",
        f"- Command: `{run['command']}` (wall time of this run {run['wall_seconds']:.0f} s; study runs: {len(study['runs'])})",
        f"- Pre-trained model: `{s.model}`; fine-tuned on `{s.train_data}` (train, {s.train_n or 'all'} examples, "
        f"{s.epochs} epoch(s), lr {s.lr}, batch {s.batch_size}, max length {s.max_length}, seed {s.seed}); "
        f"fine-tune per (sigma, H), reused across K / budget / omegas",
        f"- Clean test: {ev['clean']['n']} sentences of `{ev['clean']['source']}`; triggered: {ev['triggered']['n']} "
        f"sentences of `{ev['triggered']['source']}` (labels: {ev['triggered']['labels_mode']}); one certification seed "
        f"({s.cert_seed}), alpha {s.alpha}",
        f"- Code: git commit `{study['machine'].get('git_commit') or 'unknown'}`"
        + (" (with uncommitted changes)" if study["machine"].get("git_dirty") else ""),
        f"- Search: {s.mode}"
        + (
            f" ({s.design} design)"
            if s.mode == "grid"
            else f" (Optuna multi-objective, {s.num_samples} samples; "
            f"objectives CA max, ASR min (both on the vote), radius(all) max)"
        )
        + f"; ASHA on the per-epoch dev accuracy: {'on' if s.asha and s.epochs > 1 else 'off'}",
        f"- Trials: {study['trials']['finished']} finished, {study['trials']['stopped_early']} stopped early (ASHA), "
        f"{study['trials']['errored']} errored"
        + (
            f", {study['trials']['unfinished']} unfinished (interrupted; `--resume` continues)"
            if study["trials"].get("unfinished")
            else ""
        ),
        "",
        "CA, PA, ASR (vote): shares of the K voters' majority vote (Appendix B.1's f(x), as in `frs eval`; a tie "
        "abstains). certified CA, PA, ASR: the same shares of the certified label, which abstains where the "
        "Clopper-Pearson bound fails (cert. abstain: share of clean inputs whose certificate abstains). ABSTAIN counts "
        "as wrong and as no attack success. avg radius: mean conditional certified radius (tokens; trigger inside T(x')) over correct, non-abstained "
        "clean inputs (Table 2); radius (all): the same over all clean inputs with 0 for wrong or abstained ones "
        "(the search objective). Pareto: not dominated in (CA up, ASR down, radius (all) up).",
        "",
        markdown_table(rows),
        "",
        f"![trade-off]({png_name})",
        "",
    ]
    if best is not None:
        out += [
            f"Chosen configuration (highest CA - ASR, both on the vote): K={best['K']}, sigma={_fmt(best['sigma'], 4)}, H={best['H']}, "
            f"budget={best['budget']} -> `best_config.yaml` (`serve run {Path(s.out).resolve() / 'best_config.yaml'}`).",
            "",
        ]
    if s.quick:
        out += ["*Quick mode*: tiny fine-tune and evaluation subsets; the numbers test the pipeline, they are not results.", ""]
    path.write_text("\n".join(out))
