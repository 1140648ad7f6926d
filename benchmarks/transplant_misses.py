"""Where a span-check defense misses: its span checks on the clean and triggered inputs of `frs eval` cells.

Reads, per dataset, attack and seed, the cells of one eval run (``runs/eval/<name>/cells``) for the span-check
defense (``--defense``: ``frs-transplant`` or ``frs-fluency-transplant``) and for ``none``, ``uniform`` and ``frs``,
and writes ``<stem>.{md,json}``:

- the check: the share of inputs whose top span it keeps (omega_H) on clean and on triggered inputs, the transplant
  threshold the clean dev calibration chose, the transplant statistic on triggered inputs;
- the clean accuracy it loses against no defense: clean sentences ``none`` labels right and the defense does not,
  split by whether the check kept their span (a clean span randomized at omega_H: the check's false keep) or dropped
  it (uniform randomization; of those, how many ``uniform`` also gets wrong: the cost of omega_M and of the
  smoothed voters, which no span check can remove);
- the attack's wins (vote = target), split by whether the span was dropped (the check's miss; of those, how many plain
  FRS, span always kept, stopped) or kept (FRS's own miss: the vote still goes to the target with the span
  randomized at omega_H);
- the bounds of any span check on these cells: per input it votes as ``frs`` (span kept) or as ``uniform``
  (dropped), so its CA is at most the share of clean inputs where either is right and its ASR at least the share of
  triggered inputs where both vote the target, whatever its threshold or statistic;
- the false-target rate: the share of clean sentences of another label than the target that a defense votes to the
  target. A trigger removed perfectly leaves the sentence's clean vote, so this rate (measured on the clean subset,
  not on the triggered sentences themselves) is about the lowest ASR the defense can reach;
- with ``--examples N``, up to N sentences of each kind of miss (first seed), rebuilt as ``frs eval`` built them
  (the test file's and the triggered set's checksums are checked against the cell's).

- with ``--floor``, the ASR a perfect trigger remover would leave: the cell's plain victim (the undefended model of
  ``none``) on the triggered sentences with their trigger removed, i.e. on the clean sentences they were made from.
  An attack "wins" there wherever the victim itself labels the sentence as the target, so no defense in front of
  this victim that only removes the trigger gets an ASR below it. This is the one model run here (one forward pass
  per triggered sentence).

The first seed's clean and triggered sentences are the ones ``frs eval`` drew for it; without ``--floor`` nothing
here re-runs a model.

    python benchmarks/transplant_misses.py --cells runs/eval/transplant/cells --out docs/results
    python benchmarks/transplant_misses.py --cells runs/eval/eval/cells --defense frs-fluency-transplant \\
        --datasets sst2 offenseval agnews --seeds 0 1 2 --examples 3 --stem eval_misses --out docs/results
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

DEFENSES = ("frs-transplant", "frs-fluency-transplant")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _votes(cell: dict) -> np.ndarray:
    fields = cell["predictions_fields"]
    i = fields.index("vote_label") if "vote_label" in fields else 0
    return np.array([p[i] for p in cell["predictions"]["clean"] + cell["predictions"]["triggered"]])


def _sentences(cell: dict):
    """The cell's clean subset and triggered set, rebuilt as ``frs eval`` built them (checksums checked)."""
    from frs_ray.errors import DataError
    from frs_ray.evaluation.runner import rebuild_sets

    try:
        return rebuild_sets(cell)
    except DataError as exc:
        raise SystemExit(str(exc)) from None


def trigger_removed_asr(cell: dict, originals: list[str], target: int) -> float:
    """The share of ``originals`` (the triggered sentences without their trigger) that the cell's plain victim labels
    as ``target``: the ASR floor of any defense that only removes the trigger in front of that victim."""
    from frs_ray.backends.hf import HFClassifier

    if not originals:
        raise SystemExit(f"{cell['dataset']}/{cell['attack']}: the triggered set carries no original sentences")
    plain = cell["models"]["plain"]
    if not Path(plain).is_dir():
        raise SystemExit(f"--floor needs the cell's plain victim, which is not on this machine: {plain}")
    length = int((cell["settings"].get("victim") or {}).get("max_length", 128))
    pred = HFClassifier(plain, max_length=length).predict_proba(originals).argmax(axis=1)
    return float(np.mean(pred == target))


def analyse_cell(folder: Path, defense: str, seed: int, examples: int = 0, floor: bool = False) -> dict | None:
    """One (dataset, attack, seed): the check's keeps, the CA lost against ``none`` and the attack's wins, by cause."""
    cells = {d: _load(folder / f"{d}-seed{seed}.json") for d in ("none", "uniform", "frs", defense)}
    tp = cells[defense]
    if tp is None:
        return None
    ds = tp["defense_settings"]
    checks = [dict(zip(ds["checks_fields"], row)) for row in ds["checks"]]
    kept = np.array([bool(c["kept"]) for c in checks])
    clean, ts = _sentences(tp)
    yc, yt, target = np.array(clean.labels), np.array(ts.labels), ts.target
    n = len(yc)
    if len(kept) != n + len(yt):
        raise SystemExit(f"{folder}: {len(kept)} checks for {n} + {len(yt)} inputs")
    v = _votes(tp)
    calib = ds.get("transplant_calibration") or {}
    stat = calib.get("statistic", "shift")
    score = np.array([np.nan if c.get(stat) is None else c[stat] for c in checks], dtype=float)
    rec: dict = {
        "n_clean": int(n),
        "n_triggered": int(len(yt)),
        "threshold": calib.get("threshold"),
        "statistic": stat,
        "kept_clean": float(kept[:n].mean()),
        "kept_triggered": float(kept[n:].mean()),
        "statistic_triggered_mean": float(np.nanmean(score[n:])) if len(yt) else None,
        "ca": float(np.mean(v[:n] == yc)),
        "asr": float(np.mean(v[n:] == target)),
    }
    if "fluency_kept" in checks[0]:
        rec["kept_by_fluency"] = {
            "clean": float(np.mean([c["fluency_kept"] for c in checks[:n]])),
            "triggered": float(np.mean([c["fluency_kept"] for c in checks[n:]])),
        }
        rec["kept_by_transplant"] = {
            "clean": float(np.mean([c["transplant_kept"] for c in checks[:n]])),
            "triggered": float(np.mean([c["transplant_kept"] for c in checks[n:]])),
        }
    other = {d: (_votes(c) if c is not None else None) for d, c in cells.items() if d != defense}
    nt = yc != target  # clean sentences of another label than the target: their false-target rate is ASR's floor
    rec["false_target"] = float(np.mean(v[:n][nt] == target)) if nt.any() else None
    for d, o in other.items():
        rec[f"ca_{d}"] = None if o is None else float(np.mean(o[:n] == yc))
        rec[f"asr_{d}"] = None if o is None else float(np.mean(o[n:] == target))
        rec[f"false_target_{d}"] = None if o is None or not nt.any() else float(np.mean(o[:n][nt] == target))
    if floor:
        rec["asr_trigger_removed"] = trigger_removed_asr(tp, ts.originals, target)
    if other["frs"] is not None and other["uniform"] is not None:
        # any span check votes, per input, as frs (span kept) or as uniform (dropped): these bound every threshold
        f_, u_ = other["frs"], other["uniform"]
        rec["bounds"] = {
            "ca_ceiling": float(np.mean((f_[:n] == yc) | (u_[:n] == yc))),
            "asr_floor": float(np.mean((f_[n:] == target) & (u_[n:] == target))),
        }
    ex: dict[str, list[str]] = {}
    if other["none"] is not None:
        lost = np.flatnonzero((other["none"][:n] == yc) & (v[:n] != yc))
        gained = np.flatnonzero((other["none"][:n] != yc) & (v[:n] == yc))
        lost_kept = [int(i) for i in lost if kept[i]]
        lost_dropped = [int(i) for i in lost if not kept[i]]
        uni = other["uniform"]
        rec["clean_lost"] = {
            "total": int(len(lost)),
            "gained": int(len(gained)),
            "span_kept": len(lost_kept),
            "span_dropped": len(lost_dropped),
            "span_dropped_uniform_also_wrong": None if uni is None else int(sum(uni[i] != yc[i] for i in lost_dropped)),
        }
        ex["clean lost, span kept"] = [clean.texts[i] for i in lost_kept[:examples]]
        ex["clean lost, span dropped"] = [clean.texts[i] for i in lost_dropped[:examples]]
    wins = np.flatnonzero(v[n:] == target)
    dropped = [int(i) for i in wins if not kept[n + i]]
    kept_w = [int(i) for i in wins if kept[n + i]]
    frs = other["frs"]
    rec["attack_wins"] = {
        "total": int(len(wins)),
        "span_dropped": len(dropped),
        "span_dropped_stopped_by_frs": None if frs is None else int(sum(frs[n + i] != target for i in dropped)),
        "span_kept": len(kept_w),
    }
    ex["attack wins, span dropped"] = [ts.texts[i] for i in dropped[:examples]]
    ex["attack wins, span kept"] = [ts.texts[i] for i in kept_w[:examples]]
    if examples:
        rec["examples"] = {k: [t[:160] for t in v_] for k, v_ in ex.items() if v_}
    return rec


def _sum(recs: list[dict], *path: str) -> int | None:
    vals = []
    for r in recs:
        x = r
        for p in path:
            x = None if x is None else x.get(p)
        vals.append(x)
    return None if any(x is None for x in vals) else int(sum(vals))


def analyse(cells: Path, datasets: list[str], seeds: list[int], defense: str, examples: int = 0, floor: bool = False) -> dict:
    out: dict = {}
    for dataset in datasets:
        if not (cells / dataset).is_dir():
            continue
        for folder in sorted((cells / dataset).iterdir()):
            per_seed = {}
            for j, seed in enumerate(seeds):
                r = analyse_cell(folder, defense, seed, examples if j == 0 else 0, floor)
                if r is not None:
                    per_seed[seed] = r
            if not per_seed:
                continue
            recs = list(per_seed.values())
            total = {
                "seeds": list(per_seed),
                "n_clean": sum(r["n_clean"] for r in recs),
                "n_triggered": sum(r["n_triggered"] for r in recs),
                "clean_lost": {k: _sum(recs, "clean_lost", k) for k in recs[0].get("clean_lost", {})},
                "attack_wins": {k: _sum(recs, "attack_wins", k) for k in recs[0]["attack_wins"]},
            }
            if all("bounds" in r for r in recs):  # pooled over seeds, weighted by each seed's inputs
                total["ca_ceiling"] = sum(r["bounds"]["ca_ceiling"] * r["n_clean"] for r in recs) / total["n_clean"]
                total["asr_floor"] = sum(r["bounds"]["asr_floor"] * r["n_triggered"] for r in recs) / total["n_triggered"]
            if all("asr_trigger_removed" in r for r in recs):
                total["asr_trigger_removed"] = (
                    sum(r["asr_trigger_removed"] * r["n_triggered"] for r in recs) / total["n_triggered"]
                )
            out.setdefault(dataset, {})[folder.name] = {"seeds": per_seed, "all": total}
    return out


def _p(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}"


def _n(x) -> str:
    return "-" if x is None else str(x)


def render(res: dict) -> str:
    L = [
        f"# {res['defense']}: where it misses",
        "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}",
        f"- source: the cells of `{res['cells']}` (seeds {', '.join(map(str, res['seeds']))}); each cell's machine and "
        "sample sizes are in the eval report. "
        + (
            "The rates are the cells' recorded votes; the last column is the one model run: the cell's plain victim "
            "on the triggered sentences without their trigger."
            if res.get("floor")
            else "Nothing here re-runs a model: the rates are the cells' recorded votes."
        ),
        "",
        "Per dataset, attack and seed: the share of inputs whose top span the check keeps (omega_H) on clean / "
        "triggered inputs; the transplant threshold its clean dev calibration chose; CA of none / uniform / frs / the "
        "defense; the clean sentences none labels right and the defense does not (**lost**), by whether the check "
        "kept their span (a false keep) or dropped it (then uniform randomization; in brackets how many of those "
        "`uniform` also gets wrong), and the sentences the defense gains over none; ASR of none / frs / the defense; "
        "the false-target rate (clean sentences of another label voted to the target: about the lowest ASR a "
        "defense can reach, since a perfectly removed trigger leaves the clean vote) of none / frs / the defense; "
        "the attack's wins by whether the span was dropped (the check's miss; in brackets how many plain FRS "
        "stopped) or kept (FRS's own miss); and the bounds of ANY span check on these cells (it votes as frs or as "
        "uniform per input): CA at most the share of clean inputs where either is right, ASR at least the share of "
        "triggered inputs where both vote the target."
        + (
            " **Trigger removed**: the ASR of any defense that only removes the trigger perfectly in front of this "
            "victim (the plain victim on the sentences the triggered ones were made from)."
            if res.get("floor")
            else ""
        ),
        "",
    ]
    fl = bool(res.get("floor"))
    for dataset, attacks in res["results"].items():
        L += [
            f"## {dataset}",
            "",
            "| attack | seed | threshold | kept clean / trig. | CA none / uniform / frs / def. | lost: span kept / "
            "dropped (uniform wrong too) | gained | ASR none / frs / def. | false target none / frs / def. | wins: span "
            "dropped (frs stopped) / kept | any check: CA at most / ASR at least |" + (" trigger removed: ASR |" if fl else ""),
            "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if fl else ""),
        ]
        for attack, a in attacks.items():
            for seed, r in a["seeds"].items():
                cl, w = r.get("clean_lost", {}), r["attack_wins"]
                thr = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
                L.append(
                    f"| {attack} | {seed} | {thr} | {_p(r['kept_clean'])} / {_p(r['kept_triggered'])} | "
                    f"{_p(r.get('ca_none'))} / {_p(r.get('ca_uniform'))} / {_p(r.get('ca_frs'))} / {_p(r['ca'])} | "
                    f"{_n(cl.get('span_kept'))} / {_n(cl.get('span_dropped'))} "
                    f"({_n(cl.get('span_dropped_uniform_also_wrong'))}) | {_n(cl.get('gained'))} | "
                    f"{_p(r.get('asr_none'))} / {_p(r.get('asr_frs'))} / {_p(r['asr'])} | "
                    f"{_p(r.get('false_target_none'))} / {_p(r.get('false_target_frs'))} / {_p(r.get('false_target'))} | "
                    f"{w['span_dropped']} ({_n(w['span_dropped_stopped_by_frs'])}) / {w['span_kept']} | "
                    f"{_p((r.get('bounds') or {}).get('ca_ceiling'))} / {_p((r.get('bounds') or {}).get('asr_floor'))} |"
                    + (f" {_p(r.get('asr_trigger_removed'))} |" if fl else "")
                )
            t = a["all"]
            cl, w = t["clean_lost"], t["attack_wins"]
            L.append(
                f"| **{attack}, all** | {len(t['seeds'])} seeds | | | n = {t['n_clean']} clean / {t['n_triggered']} "
                f"trig. | {_n(cl.get('span_kept'))} / {_n(cl.get('span_dropped'))} "
                f"({_n(cl.get('span_dropped_uniform_also_wrong'))}) | {_n(cl.get('gained'))} | | | "
                f"{_n(w['span_dropped'])} ({_n(w['span_dropped_stopped_by_frs'])}) / {_n(w['span_kept'])} | "
                f"{_p(t.get('ca_ceiling'))} / {_p(t.get('asr_floor'))} |"
                + (f" {_p(t.get('asr_trigger_removed'))} |" if fl else "")
            )
        L.append("")
        for attack, a in attacks.items():
            first = next(iter(a["seeds"].items()))
            exs = first[1].get("examples")
            if not exs:
                continue
            L += [f"Examples, {dataset} / {attack}, seed {first[0]}:", ""]
            for kind, texts in exs.items():
                L += [f"- {kind}: " + "; ".join(f'"{t}"' for t in texts)]
            L.append("")
    for n in res.get("notes", []):
        L += [f"Note: {n}", ""]
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="runs/eval/transplant/cells")
    ap.add_argument("--defense", default="frs-transplant", choices=DEFENSES)
    ap.add_argument("--datasets", nargs="+", default=["sst2"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--examples", type=int, default=0, help="sentences of each kind of miss to show (first seed)")
    ap.add_argument("--stem", default="transplant_misses", help="report file names: <stem>.md, <stem>.json")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run each cell's plain victim on the triggered sentences without their trigger (ASR of a perfect "
        "trigger remover; needs the zoo's models)",
    )
    args = ap.parse_args()
    cells = Path(args.cells)
    missing = [d for d in args.datasets if not (cells / d).is_dir()]
    if missing:
        ap.error(f"no eval cells for {', '.join(missing)} under {cells}")
    if args.examples < 0:
        ap.error(f"--examples must be >= 0, got {args.examples}")
    res = {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cells": str(cells),
        "defense": args.defense,
        "seeds": args.seeds,
        "floor": args.floor,
        "results": analyse(cells, args.datasets, args.seeds, args.defense, args.examples, args.floor),
        "notes": args.note,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{args.stem}.md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
