"""Does a span's length separate a one-word trigger from a decisive clean clause (frs-transplant, an extension)?

For the victim of one ``frs eval`` cell (its BMPS checkpoint's centre model, no voters): the top MCTS span of each
of the cell's clean and triggered test inputs (the same seeded subsets ``frs eval`` uses) and of the clean dev
calibration texts (the same seeded split the check uses) is grown and scored as ``frs-transplant`` does it
(:meth:`TransplantSpanFilter.score_grown`, statistic ``shift``, m references per label, start + random gap). Each
rule below is calibrated on the clean dev texts only, so that at most ``target_keep`` of them keep a span, and the
kept shares of clean / triggered test inputs are reported:

- ``shift``: the check's rule (the mean rise of P(y) over the 2m transplanted texts above one threshold);
- ``shift per token``: shift divided by the span's length in tokens, above one threshold;
- ``shift by length [edges]``: one threshold per span-length stratum (the check's ``length_strata``,
  :func:`frs_ray.fuzzing.strata.stratified_thresholds`; default edges 1, 3: 1 token, 2-3, 4 or more);
- ``shift or per token``: kept where either of the first two passes, each at half of ``target_keep``.

Usage::

    python benchmarks/transplant_length.py --cell runs/eval/X/cells/sst2/lwp/frs-transplant-seed0.json \
        --out docs/results/transplant_length_lwp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frs_ray.attacks import build_triggered_set, make_trigger  # noqa: E402
from frs_ray.certify.smooth import FRSClassifier  # noqa: E402
from frs_ray.config import CertifyConfig  # noqa: E402
from frs_ray.data import load_dataset  # noqa: E402
from frs_ray.errors import ConfigError  # noqa: E402
from frs_ray.fuzzing.calibration import clean_data_for, split_clean  # noqa: E402
from frs_ray.fuzzing.strata import check_edges, keep_rate, stratified_thresholds, stratum_of, threshold_keeping  # noqa: E402
from frs_ray.fuzzing.transplant import TransplantSpanFilter  # noqa: E402

GROUPS = ("calibration (clean dev)", "clean test", "triggered test")
BUCKETS = ((1, 1), (2, 3), (4, 10**6))


def auc(pos, neg) -> float:
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def rules(cal: dict[str, np.ndarray], target_keep: float, strata: list[tuple[int, ...]]):
    """Each rule as (name, keep(shift, length) -> bool array, thresholds), calibrated on ``cal`` only."""
    t_shift = threshold_keeping(cal["shift"], target_keep)
    t_tok = threshold_keeping(cal["shift"] / cal["length"], target_keep)
    t_half = (threshold_keeping(cal["shift"], target_keep / 2), threshold_keeping(cal["shift"] / cal["length"], target_keep / 2))
    out = [
        ("shift", lambda sh, ln: sh > t_shift, [t_shift]),
        ("shift per token", lambda sh, ln: sh / ln > t_tok, [t_tok]),
        ("shift or per token", lambda sh, ln: (sh > t_half[0]) | (sh / ln > t_half[1]), list(t_half)),
    ]
    for edges in strata:
        best = [{stratum_of(edges, int(n)): float(v)} for v, n in zip(cal["shift"], cal["length"])]
        thr = stratified_thresholds(best, len(edges) + 1, target_keep)

        def keep(sh, ln, edges=edges, thr=thr):
            return np.array([keep_rate([{stratum_of(edges, int(n)): float(v)}], thr) > 0 for v, n in zip(sh, ln)], dtype=bool)

        out.append((f"shift by length {list(edges)}", keep, thr))
    return out


def figure(per: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rng = np.random.default_rng(0)
    for g, marker in zip(GROUPS, ("o", "s", "^")):
        v = per[g]
        ax.scatter(v["length"] + rng.uniform(-0.2, 0.2, len(v["length"])), v["shift"], s=14, marker=marker, alpha=0.6, label=g)
    ax.set_xlabel("span length after growth (tokens, jittered)")
    ax.set_ylabel("transplant shift (mean rise of P(y))")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", required=True, help="an frs eval cell (any defense): its victim, seed and test subsets")
    ap.add_argument("--out", required=True, help="output stem: writes STEM.md, STEM.json, STEM.png")
    ap.add_argument("--target-keep", type=float, default=0.02)
    ap.add_argument("--m", type=int, default=8, help="references per label (the cells' calibrated m: 8)")
    ap.add_argument("--grow", type=int, default=8)
    ap.add_argument("--min-gain", type=float, default=0.01)
    ap.add_argument("--budget", type=int, default=10, help="MCTS budget (the quick profile's: 10)")
    ap.add_argument("--n-calibration", type=int, default=200)
    ap.add_argument(
        "--strata", nargs="+", default=["1,3"], help="length_strata edges to try, each comma-separated (default: 1,3)"
    )
    args = ap.parse_args(argv)
    try:
        strata = [check_edges([int(e) for e in spec.split(",")]) for spec in args.strata]
    except (ValueError, ConfigError) as e:
        ap.error(f"--strata: {e}")
    if not 0 < args.target_keep < 1:
        ap.error(f"--target-keep must be in (0, 1), got {args.target_keep}")
    cell_path = Path(args.cell)
    if not cell_path.is_file():
        ap.error(f"--cell: no such file: {cell_path}")
    t0 = time.time()
    cell = json.loads(cell_path.read_text())
    seed = cell["seed"]
    cfg = CertifyConfig(k=1, seed=seed, fuzzing={"budget": args.budget})
    clf = FRSClassifier.from_checkpoint(cell["models"]["smoothed"], cfg, voter_ids=None)
    test = load_dataset(cell["dataset"], "test")
    clean = test.subset(cell["data"]["n_clean"], seed=seed)
    target = cell["settings"].get("target", 1)
    ts = build_triggered_set(test, make_trigger(cell["attack"]), target, seed=seed, max_examples=cell["data"]["n_triggered"])
    dev = clean_data_for(str(load_dataset(cell["dataset"], "train").source))
    refs, cal = split_clean(dev.texts, 200, args.n_calibration, seed)
    check = TransplantSpanFilter(clf.backend.predict_proba, refs, m=args.m, seed=seed, grow=args.grow, min_gain=args.min_gain)
    per: dict[str, dict[str, np.ndarray]] = {}
    examples: dict[str, list[dict]] = {}
    for g, texts in zip(GROUPS, (cal, clean.texts, ts.texts)):
        fuzzed = clf.fuzz(list(texts))
        items = [([t.text for t in fr.tokens], fr.vulnerable(1), int(np.argmax(fr.reference))) for fr in fuzzed]
        grown, scored, _ = check.score_grown(items, args.m)
        keep = [i for i, p in enumerate(scored) if p]
        per[g] = {
            "shift": np.array([check.statistic_of(*scored[i][0], args.m) for i in keep]),
            "length": np.array([grown[i][1][0].token_end - grown[i][1][0].token_start for i in keep], dtype=float),
        }
        examples[g] = [
            {"span": " ".join(grown[i][0][grown[i][1][0].token_start : grown[i][1][0].token_end]), "shift": round(float(s), 3)}
            for i, s in sorted(zip(keep, per[g]["shift"]), key=lambda p: -p[1])[:5]
        ]
    rows = []
    for name, keep_fn, thr in rules(per[GROUPS[0]], args.target_keep, strata):
        kept = {g: float(np.mean(keep_fn(v["shift"], v["length"]))) for g, v in per.items()}
        rows.append({"rule": name, "thresholds": [round(t, 4) for t in thr], "kept": kept})
    lengths = {
        g: {
            f"{lo}-{hi}" if hi < 10**6 else f"{lo}+": int(np.sum((v["length"] >= lo) & (v["length"] <= hi))) for lo, hi in BUCKETS
        }
        for g, v in per.items()
    }
    stats = {
        g: {"median_shift": float(np.median(v["shift"])), "median_length": float(np.median(v["length"]))} for g, v in per.items()
    }
    aucs = {
        "shift": auc(per["triggered test"]["shift"], per["clean test"]["shift"]),
        "shift per token": auc(
            per["triggered test"]["shift"] / per["triggered test"]["length"],
            per["clean test"]["shift"] / per["clean test"]["length"],
        ),
    }
    header = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cell": args.cell,
        "victim": cell["models"]["smoothed"],
        "attack": cell["attack"],
        "seed": seed,
        "n": {g: len(v["shift"]) for g, v in per.items()},
        "target_keep": args.target_keep,
        "m": args.m,
        "grow": args.grow,
        "min_gain": args.min_gain,
        "budget": args.budget,
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "header": header,
        "rows": rows,
        "lengths": lengths,
        "stats": stats,
        "auc_test": aucs,
        "top_spans": examples,
        "spans": {g: {"shift": v["shift"].round(5).tolist(), "length": v["length"].astype(int).tolist()} for g, v in per.items()},
    }
    Path(f"{out}.json").write_text(json.dumps(payload, indent=1))
    figure(per, Path(f"{out}.png"), f"{cell['dataset']} / {cell['attack']}, seed {seed}: top span after growth")
    lines = [
        "# frs-transplant: span length as a second signal (an extension, not the paper's method)",
        "",
        *[f"- {k}: {v}" for k, v in header.items()],
        "",
        " ".join(__doc__.split("\n\n")[1].split()),
        "",
        "| rule | thresholds (clean dev) | kept: calibration / clean test / triggered test |",
        "|---|---|---|",
    ]
    for r in rows:
        k = r["kept"]
        lines.append(
            f"| {r['rule']} | {' / '.join(f'{t:.3f}' for t in r['thresholds'])} | "
            f"{k[GROUPS[0]]:.2f} / {k[GROUPS[1]]:.2f} / {k[GROUPS[2]]:.2f} |"
        )
    lines += ["", "| group | spans of 1 / 2-3 / 4+ tokens | median shift | median length |", "|---|---|---|---|"]
    for g in GROUPS:
        b = list(lengths[g].values())
        lines.append(f"| {g} | {' / '.join(map(str, b))} | {stats[g]['median_shift']:.3f} | {stats[g]['median_length']:.0f} |")
    lines += [
        "",
        f"ROC AUC triggered against clean test: shift {aucs['shift']:.3f}, per token {aucs['shift per token']:.3f}.",
        "",
    ]
    for g in GROUPS:
        lines.append(f"Top spans by shift, {g}: " + "; ".join(f'"{e["span"]}" ({e["shift"]})' for e in examples[g]))
        lines.append("")
    lines.append(f"![shift against span length]({out.name}.png)")
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
