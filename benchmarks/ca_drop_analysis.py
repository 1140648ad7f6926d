"""Where FRS loses clean accuracy: per-sentence analysis of the evaluation cells, with the MCTS spans recomputed.

For one evaluation run, dataset, attack and seed, this reads the cells of ``none``, ``uniform`` and ``frs`` (same
clean and triggered subsets, same checkpoints) and re-runs the fuzzing of FRS's smoothed checkpoint (deterministic
from the seed, so the spans are those the cell's votes used). It reports:

- the clean sentences FRS gets wrong while uniform smoothing (the same voters, no fuzzing) gets them right, with
  the span MCTS found, its score V(n) (KL, nats) and the direction of the error (into the attacker's target label
  or away from it);
- a *vulnerability gate* computed offline: FRS's prediction where the top span's score is at least tau, uniform's
  elsewhere, with tau the (1 - flag rate) quantile of the scores on clean held-out sentences (the dev split), as a
  defender could calibrate it. Exact for the cells' predictions: both defenses draw every vote from (seed, text).
- with ``--fluency``, a *fluency gate* (not the paper's method): FRS's prediction where deleting the top span makes
  the text more fluent to a language model (SmolLM2, ONION's perplexity model), uniform elsewhere. The suspicion of
  a span is s = log ppl(x') - log ppl(x' without the span) (nats per LM token; ONION's f_i, on a log scale and for
  a span); rows: s > 0 (ONION's rule) and s above the (1 - rate) quantile of the clean dev scores. Rare-word
  triggers make a text less fluent; the sentiment words FRS's MCTS finds in clean text do not.

    python benchmarks/ca_drop_analysis.py --attack badnets --seed 0

Writes ``docs/results/ca_drop_<attack>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from frs_ray.attacks import build_triggered_set, make_trigger
from frs_ray.certify.smooth import FRSClassifier
from frs_ray.config import CertifyConfig, build
from frs_ray.data import load_dataset
from frs_ray.evaluation.runner import cell_path, machine_line
from frs_ray.runtime import configure_process

FLAG_RATES = (0.05, 0.1, 0.2, 0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/eval/eval", help="evaluation run folder")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--attack", default="badnets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-dev", type=int, default=200, help="clean dev sentences that calibrate the gate")
    ap.add_argument("--fluency", action="store_true", help="add the fluency gate (loads SmolLM2, see ONION)")
    ap.add_argument("--out", default=None, help="output stem (default docs/results/ca_drop_<attack>)")
    args = ap.parse_args()
    cells = {}
    for d in ("none", "uniform", "frs"):
        p = cell_path(Path(args.run), args.dataset, args.attack, d, args.seed)
        if not p.is_file():
            ap.error(f"no {d} cell at {p}: run `frs eval` for {args.dataset}/{args.attack}/seed {args.seed} first")
        cells[d] = json.loads(p.read_text())
    configure_process()
    started = time.perf_counter()
    frs = cells["frs"]
    s = frs["settings"]
    test = load_dataset(args.dataset, "test", None)
    clean = test.subset(s["n_clean"], seed=args.seed)
    ts = build_triggered_set(test, make_trigger(args.attack), s["target"], seed=args.seed, max_examples=s["n_triggered"])
    if test.sha256 != frs["data"]["test_sha256"] or ts.sha256 != frs["data"]["triggered_sha256"]:
        ap.error("the test subsets differ from the cell's (data changed?)")
    clf = FRSClassifier.from_checkpoint(frs["models"]["smoothed"], build(CertifyConfig, frs["defense_settings"]["certify"]))
    dev = load_dataset(args.dataset, "dev", None).subset(args.n_dev, seed=args.seed)
    fz = clf.fuzz(clean.texts)
    fuzzed = {"dev": clf.fuzz(dev.texts), "clean": fz, "triggered": clf.fuzz(ts.texts)}
    score = {name: np.array([r.spans[0].score if r.spans else 0.0 for r in res]) for name, res in fuzzed.items()}
    pred = {d: {part: np.array([p[0] for p in cells[d]["predictions"][part]]) for part in ("clean", "triggered")} for d in cells}
    yc, yt, target = np.array(clean.labels), np.array(ts.labels), s["target"]
    lost = [i for i in range(len(yc)) if pred["frs"]["clean"][i] != yc[i] and pred["uniform"]["clean"][i] == yc[i]]
    won = [i for i in range(len(yc)) if pred["frs"]["clean"][i] == yc[i] and pred["uniform"]["clean"][i] != yc[i]]
    examples = [
        {
            "text": clean.texts[i],
            "label": int(yc[i]),
            "frs": int(pred["frs"]["clean"][i]),
            "span": fz[i].spans[0].text if fz[i].spans else "",
            "score": round(float(score["clean"][i]), 3),
        }
        for i in sorted(lost, key=lambda i: -score["clean"][i])
    ]
    gate = []
    for rate in (0.0,) + FLAG_RATES + (1.0,):
        tau = -1.0 if rate >= 1 else (np.inf if rate <= 0 else float(np.quantile(score["dev"], 1 - rate)))
        fc, ft = score["clean"] >= tau, score["triggered"] >= tau
        pc = np.where(fc, pred["frs"]["clean"], pred["uniform"]["clean"])
        pt = np.where(ft, pred["frs"]["triggered"], pred["uniform"]["triggered"])
        gate.append(
            {
                "flag_rate_dev": rate,
                "tau": None if not np.isfinite(tau) or tau < 0 else round(tau, 4),
                "flagged_clean": float(fc.mean()),
                "flagged_triggered": float(ft.mean()),
                "ca": float((pc == yc).mean()),
                "pa": float((pt == yt).mean()),
                "asr": float((pt == target).mean()),
            }
        )
    fluency = _fluency_gate(fuzzed, pred, yc, yt, target) if args.fluency else None
    doc = {
        "command": "python benchmarks/ca_drop_analysis.py " + shlex.join(sys.argv[1:]),
        "machine": machine_line(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.perf_counter() - started),
        "dataset": args.dataset,
        "attack": args.attack,
        "seed": args.seed,
        "target": target,
        "n_clean": len(yc),
        "n_triggered": len(yt),
        "n_dev": len(dev),
        "smoothed": frs["models"]["smoothed"],
        "ca": {d: float((pred[d]["clean"] == yc).mean()) for d in cells},
        "frs_lost": len(lost),
        "frs_won": len(won),
        "frs_lost_into_target": int(sum(pred["frs"]["clean"][i] == target for i in lost)),
        "score_quantiles": {k: {str(q): round(float(np.quantile(v, q)), 4) for q in (0.1, 0.5, 0.9)} for k, v in score.items()},
        "gate": gate,
        "fluency_gate": fluency,
        "lost_examples": examples,
    }
    out = Path(args.out or f"docs/results/ca_drop_{args.attack}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    out.with_suffix(".md").write_text(_markdown(doc))
    print(out.with_suffix(".md").read_text())
    return 0


def span_suspicion(check, results) -> np.ndarray:
    """s of ``frs_ray.fuzzing.fluency`` for each fuzzing result's T(x'), with the defense's own check: 0 where there
    is no span, +inf where the span is the whole text (the check keeps it)."""
    check([([t.text for t in r.tokens], r.vulnerable(1)) for r in results])
    done, check.checks = check.checks, []
    return np.array([c.suspicion if c.suspicion is not None else (np.inf if c.kept else 0.0) for c in done])


def _fluency_gate(fuzzed: dict, pred: dict, yc: np.ndarray, yt: np.ndarray, target: int) -> dict:
    from frs_ray.backends.lm import PerplexityLM, resolve_lm
    from frs_ray.fuzzing.fluency import FluencySpanFilter

    check = FluencySpanFilter(PerplexityLM(resolve_lm("smollm2")), threshold=0.0)
    sus = {k: span_suspicion(check, v) for k, v in fuzzed.items()}
    rows = []
    for name, tau in [("s > 0", 0.0)] + [(f"dev rate {r}", float(np.quantile(sus["dev"], 1 - r))) for r in FLAG_RATES]:
        fc, ft = sus["clean"] > tau, sus["triggered"] > tau
        pc = np.where(fc, pred["frs"]["clean"], pred["uniform"]["clean"])
        pt = np.where(ft, pred["frs"]["triggered"], pred["uniform"]["triggered"])
        rows.append(
            {
                "rule": name,
                "tau": round(tau, 4),
                "flagged_dev": float((sus["dev"] > tau).mean()),
                "flagged_clean": float(fc.mean()),
                "flagged_triggered": float(ft.mean()),
                "ca": float((pc == yc).mean()),
                "pa": float((pt == yt).mean()),
                "asr": float((pt == target).mean()),
            }
        )
    return {
        "quantiles": {
            k: {str(q): round(float(np.quantile(v[np.isfinite(v)], q)), 4) for q in (0.1, 0.5, 0.9)} for k, v in sus.items()
        },
        "rows": rows,
    }


def _markdown(doc: dict) -> str:
    pct = lambda v: f"{100 * v:.0f}"  # noqa: E731
    q = doc["score_quantiles"]
    lines = [
        f"# Where FRS loses clean accuracy: {doc['dataset']} / {doc['attack']}, seed {doc['seed']} (K=20)",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}  ",
        f"Date: {doc['date']}  ",
        f"Sample: {doc['n_clean']} clean + {doc['n_triggered']} triggered test sentences (the evaluation cell's), "
        f"{doc['n_dev']} clean dev sentences for the gate; smoothed checkpoint `{doc['smoothed']}`",
        "",
        f"CA: none {pct(doc['ca']['none'])}, uniform {pct(doc['ca']['uniform'])}, FRS {pct(doc['ca']['frs'])}. "
        f"FRS gets **{doc['frs_lost']}** clean sentences wrong that uniform smoothing (the same voters) gets right, "
        f"and {doc['frs_won']} the other way; {doc['frs_lost_into_target']} of the {doc['frs_lost']} go into the "
        f"attacker's target label {doc['target']}.",
        "",
        "Top-span score V(n) (KL, nats) quantiles 10/50/90%: "
        + "; ".join(f"{k} {v['0.1']}/{v['0.5']}/{v['0.9']}" for k, v in q.items()),
        "",
        "## A vulnerability gate, computed offline",
        "",
        "FRS's randomization where the top span's score reaches tau, uniform elsewhere; tau is the (1 - rate) "
        "quantile of the clean dev scores. Rate 0 = uniform smoothing everywhere, 1 = FRS.",
        "",
        "| flag rate on dev | tau | flagged clean | flagged triggered | CA | PA | ASR |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in doc["gate"]:
        lines.append(
            f"| {g['flag_rate_dev']} | {'-' if g['tau'] is None else g['tau']} | {pct(g['flagged_clean'])} | "
            f"{pct(g['flagged_triggered'])} | {pct(g['ca'])} | {pct(g['pa'])} | {pct(g['asr'])} |"
        )
    if doc.get("fluency_gate"):
        fl = doc["fluency_gate"]
        lines += [
            "",
            "## A fluency gate, computed offline (not the paper's method)",
            "",
            "FRS's randomization where deleting the top span lowers SmolLM2's perplexity (suspicion s = log ppl(x') "
            "- log ppl(x' without the span) above tau), uniform elsewhere. Suspicion quantiles 10/50/90%: "
            + "; ".join(f"{k} {v['0.1']}/{v['0.5']}/{v['0.9']}" for k, v in fl["quantiles"].items()),
            "",
            "| rule | tau | flagged dev | flagged clean | flagged triggered | CA | PA | ASR |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g in fl["rows"]:
            lines.append(
                f"| {g['rule']} | {g['tau']} | {pct(g['flagged_dev'])} | {pct(g['flagged_clean'])} | "
                f"{pct(g['flagged_triggered'])} | {pct(g['ca'])} | {pct(g['pa'])} | {pct(g['asr'])} |"
            )
    lines += [
        "",
        "## The clean sentences FRS loses (uniform right), by span score",
        "",
        "| score | label | FRS | span | sentence |",
        "|---|---|---|---|---|",
    ]
    for e in doc["lost_examples"]:
        text = e["text"] if len(e["text"]) <= 110 else e["text"][:107] + "..."
        lines.append(f"| {e['score']} | {e['label']} | {e['frs']} | `{e['span']}` | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
