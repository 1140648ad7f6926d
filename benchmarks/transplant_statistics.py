"""Which transplant statistic and m separate a trigger span from a clean input's span (frs-transplant, an extension).

For the victim of one ``frs eval`` cell (its BMPS checkpoint's centre model, no voters): the top MCTS span of each
clean and triggered test input (the same seeded subsets ``frs eval`` uses) and of 100 clean dev calibration texts
is transplanted into the check's 16 references per label (start + random gap, :class:`TransplantSpanFilter`), in
one scoring pass. Statistics of the 2m transplanted texts: ``shift`` (mean rise of P(y)), ``flip`` (share flipped
to y), ``min_shift`` (the smallest rise: a trigger is input-agnostic, so it should move *every* reference) and
``q25_shift`` (lower quartile). For each statistic and m in (4, 8, 16), the threshold is calibrated on the clean dev
texts only (at most 5% keep a span) and the kept shares of clean / triggered test inputs are reported with ROC AUC.

Usage::

    python benchmarks/transplant_statistics.py --cell runs/eval/transplant/cells/sst2/badnets/frs-transplant-seed0.json \
        --out docs/results/transplant_statistics
"""

from __future__ import annotations

import argparse
import json
import math
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
from frs_ray.fuzzing.calibration import clean_data_for, split_clean  # noqa: E402
from frs_ray.fuzzing.transplant import TransplantSpanFilter  # noqa: E402

STATS = {
    "shift": lambda sh, fl: float(np.mean(sh)),
    "flip": lambda sh, fl: float(np.mean(fl)),
    "min_shift": lambda sh, fl: float(np.min(sh)),
    "q25_shift": lambda sh, fl: float(np.quantile(sh, 0.25)),
}


def auc(pos, neg) -> float:
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--target-keep", type=float, default=0.05)
    args = ap.parse_args(argv)
    t0 = time.time()
    cell = json.loads(Path(args.cell).read_text())
    s = cell["settings"]
    seed = cell["seed"]
    cfg = CertifyConfig(k=1, seed=seed)
    clf = FRSClassifier.from_checkpoint(cell["models"]["smoothed"], cfg, voter_ids=None)
    test = load_dataset(cell["dataset"], "test")
    clean = test.subset(cell["data"]["n_clean"], seed=seed)
    ts = build_triggered_set(
        test, make_trigger(cell["attack"]), s.get("target", 1), seed=seed, max_examples=cell["data"]["n_triggered"]
    )
    dev = clean_data_for(str(load_dataset(cell["dataset"], "train").source))
    refs, cal = split_clean(dev.texts, 200, 100, seed)
    check = TransplantSpanFilter(clf.backend.predict_proba, refs, m=16, seed=seed)
    groups = {"calibration (clean dev)": cal, "clean test": clean.texts, "triggered test": ts.texts}
    per: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, texts in groups.items():
        fuzzed = clf.fuzz(texts)
        items = [([t.text for t in fr.tokens], fr.vulnerable(1), int(np.argmax(fr.reference))) for fr in fuzzed]
        scored, _ = check.score_spans(items, m=16)
        per[name] = [p[0] for p in scored if p]
    rows = []
    npos = len(check.positions)
    for stat, fn in STATS.items():
        for m in (4, 8, 16):
            vals = {g: [fn(sh[: npos * m], fl[: npos * m]) for sh, fl in v] for g, v in per.items()}
            c = np.sort(vals["calibration (clean dev)"])[::-1]
            k = int(math.floor(args.target_keep * len(c)))
            thr = float(c[k])
            rows.append(
                {
                    "statistic": stat,
                    "m": m,
                    "threshold": thr,
                    "kept_calibration": float(np.mean(np.array(vals["calibration (clean dev)"]) > thr)),
                    "kept_clean_test": float(np.mean(np.array(vals["clean test"]) > thr)),
                    "kept_triggered_test": float(np.mean(np.array(vals["triggered test"]) > thr)),
                    "auc_test": auc(vals["triggered test"], vals["clean test"]),
                    "clean_test_mean": float(np.mean(vals["clean test"])),
                    "triggered_test_mean": float(np.mean(vals["triggered test"])),
                }
            )
    header = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cell": args.cell,
        "victim": cell["models"]["smoothed"],
        "n": {g: len(v) for g, v in per.items()},
        "target_keep": args.target_keep,
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.out + ".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    lines = [
        "# frs-transplant: statistics and m (an extension, not the paper's method)",
        "",
        *[f"- {k}: {v}" for k, v in header.items()],
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        "| statistic | m | threshold (clean dev) | kept: calibration / clean test / triggered test | AUC (test) | "
        "mean clean / triggered |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['statistic']} | {r['m']} | {r['threshold']:.3f} | {r['kept_calibration']:.2f} / "
            f"{r['kept_clean_test']:.2f} / {r['kept_triggered_test']:.2f} | {r['auc_test']:.3f} | "
            f"{r['clean_test_mean']:.3f} / {r['triggered_test_mean']:.3f} |"
        )
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
