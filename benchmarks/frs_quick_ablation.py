"""A quick FRS check on a backdoored model: FRS (fuzzed randomization) against uniform randomization (-FTR).

On the SST-2 dev split (clean, for accuracy) and on the BadNets-poisoned SST-2 dev split (triggered sentences whose
true label is the non-target one), each with a seeded sample, it certifies with the K=20 smoothed voters and
reports accuracy, abstentions, and for triggered sentences ASR (certified label = target) and PA (certified label =
the true, non-target label; binary task). Dev splits, so nothing here tunes on the test set.

    python benchmarks/frs_quick_ablation.py --smoothed runs/sst2-frs --poisoned runs/badnets-3ep --n 100 \
        --out docs/results/frs_quick_ablation
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from frs_ray.runtime import configure_process


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoothed", required=True, help="clean smoothed checkpoint (for clean accuracy)")
    ap.add_argument("--poisoned", required=True, help="backdoored checkpoint (fine-tuned on poisoned/badnets/sst2)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default="docs/results/frs_quick_ablation")
    args = ap.parse_args()
    configure_process()
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig
    from frs_ray.data import load_dataset

    clean = load_dataset("sst2", "dev").subset(args.n, seed=1)
    pois = load_dataset("poisoned/badnets/sst2", "dev").subset(args.n, seed=1)
    variants = {
        "FRS": CertifyConfig(),
        "-FTR (uniform omega_M)": CertifyConfig(fuzz=False),
        "FRS, n_estimate=60": CertifyConfig(n_estimate=60),
    }
    rows = []
    for name, cfg in variants.items():
        row: dict = {"variant": name}
        for split, ckpt, data in (("clean", args.smoothed, clean), ("triggered", args.poisoned, pois)):
            clf = FRSClassifier.from_checkpoint(ckpt, cfg)
            t = time.perf_counter()
            lab = np.array([c.certified_label for c in clf.certify(data.texts, progress=True)])
            dt = time.perf_counter() - t
            y = np.array(data.labels)
            row[f"{split}_abstain"] = float((lab == -1).mean())
            row[f"{split}_texts_per_s"] = round(len(data) / dt, 3)
            if split == "clean":
                row["ca"] = float((lab == y).mean())
            else:
                row["asr"] = float((lab == y).mean())
                row["pa"] = float((lab == 1 - y).mean())
                row["asr_centre_model"] = float((clf.predict_centre(data.texts) == y).mean())
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, 2-core CPU, Python {platform.python_version()}",
        "command": shlex.join(["python"] + sys.argv),
        "n_clean": len(clean),
        "n_triggered": len(pois),
        "sample_seed": 1,
        "certify_seed": 0,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    lines = [
        "# Quick FRS check on a BadNets-backdoored MiniLM (dev splits)",
        "",
        f"- Date {res['date']}; machine {res['machine']}; command `{res['command']}`",
        f"- Clean: {len(clean)} SST-2 dev sentences (checkpoint `{args.smoothed}`); triggered: {len(pois)} poisoned "
        f"SST-2 dev sentences (checkpoint `{args.poisoned}`); one seed; K=20, budget 10, alpha 0.05.",
        "- CA, PA and ASR count the certified label; ABSTAIN counts as neither correct nor target.",
        "",
        "| variant | CA | clean abstain | ASR | PA | triggered abstain | ASR of the undefended centre model |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {100 * r['ca']:.0f}% | {100 * r['clean_abstain']:.0f}% | {100 * r['asr']:.0f}% | "
            f"{100 * r['pa']:.0f}% | {100 * r['triggered_abstain']:.0f}% | {100 * r['asr_centre_model']:.0f}% |"
        )
    lines += [
        "",
        "Small samples (n = 100 each): differences under ~10 points are within noise. The full comparison "
        "(attacks on pre-trained models, baselines, seeds) is the evaluation issue's work.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
