"""Measure the FRS core on real data and write docs/results/core.{md,json} (and core_localization.png).

Needs checkpoints made with `frs finetune` (see docs/results/core.md for the exact commands):
  --plain     SST-2, --no-smoothing
  --smoothed  SST-2, default smoothing (perturb mode)
  --literal   SST-2, --mode accumulate (literal Eq. 4)      [optional]
  --poisoned  poisoned/badnets/sst2 train set, --no-smoothing (a backdoored model)

    python benchmarks/core_results.py --plain runs/sst2-plain --smoothed runs/sst2-frs \
        --literal runs/sst2-literal --poisoned runs/badnets-plain --frs-examples 200
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from frs_ray.runtime import configure_process

TRIGGERS = {"cf", "mn", "bb", "tq", "mb"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed_rss(log: Path) -> float | None:
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        if "Maximum resident set size" in line:
            return round(int(line.split(":")[-1]) / 1024.0, 1)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", required=True)
    ap.add_argument("--smoothed", required=True)
    ap.add_argument("--poisoned", required=True)
    ap.add_argument("--literal", default=None)
    ap.add_argument("--frs-examples", type=int, default=200, help="test sentences certified with full FRS")
    ap.add_argument("--localization-examples", type=int, default=None, help="poisoned sentences fuzzed (default all)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument(
        "--sections",
        default="ca,frs,literal,localization",
        help="comma-separated subset to (re)measure; the others are kept from an existing core.json",
    )
    ap.add_argument("--render-only", action="store_true", help="only rewrite core.md from core.json")
    ap.add_argument("--note", action="append", default=[], help="a line of context to keep in core.json/core.md")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if args.render_only:
        out = Path(args.out)
        (out / "core.md").write_text(_markdown(json.loads((out / "core.json").read_text())))
        return 0
    configure_process()

    from frs_ray.config import CertifyConfig
    from frs_ray.data import load_dataset

    started = time.time()
    test = load_dataset("sst2", "test")
    y = np.array(test.labels)
    prev_path = Path(args.out) / "core.json"
    prev = (
        json.loads(prev_path.read_text()) if prev_path.exists() and sections != {"ca", "frs", "literal", "localization"} else {}
    )
    res: dict = {
        **prev,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, no GPU, Python {platform.python_version()}",
        "command": shlex.join(["python"] + sys.argv),
        "test_set": {"source": test.source, "sha256": test.sha256, "n": len(test)},
    }

    res["notes"] = list(prev.get("notes", [])) + args.note
    if prev:
        res["command"] = prev.get("command", "") + " ; then: " + res["command"]
    if "ca" in sections:
        _clean_accuracy(res, args, test, y)
    cfg = CertifyConfig()
    if "frs" in sections:
        _frs(res, args, test, cfg)
    if args.literal and "literal" in sections:
        _literal(res, args, test, y, cfg)
    if "localization" in sections:
        _localization(res, args, test, y, cfg)
    _finish(res, args, started)
    return 0


def _clean_accuracy(res, args, test, y):
    from frs_ray.backends import HFClassifier
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig
    from frs_ray.smoothing.finetune import read_meta

    # 1. plain model
    plain = HFClassifier(args.plain, max_length=read_meta(args.plain)["max_length"])
    t = time.perf_counter()
    res["ca_plain"] = float((plain.predict_proba(test.texts).argmax(1) == y).mean())
    res["plain_seconds_per_1821"] = round(time.perf_counter() - t, 1)
    del plain

    # 2. smoothed model: centre and the K=20 voter majority (BMPS, no text randomization)
    cfg = CertifyConfig()
    clf = FRSClassifier.from_checkpoint(args.smoothed, cfg)
    res["ca_smoothed_centre"] = float((clf.predict_centre(test.texts) == y).mean())
    t = time.perf_counter()
    res["ca_smoothed"] = float((clf.predict_voters(test.texts) == y).mean())
    res["voters_seconds"] = round(time.perf_counter() - t, 1)
    res["ca_drop_points"] = round(100 * (res["ca_plain"] - res["ca_smoothed"]), 2)
    del clf


def _frs(res, args, test, cfg):
    from frs_ray.certify.smooth import FRSClassifier

    clf = FRSClassifier.from_checkpoint(args.smoothed, cfg)
    # 3. full FRS certification (fuzzing + fuzzed randomization + voters + CERTIFY) on a seeded subset
    sub = test.subset(args.frs_examples, seed=0)
    t = time.perf_counter()
    certs = clf.certify(sub.texts, progress=True)
    dt = time.perf_counter() - t
    lab = np.array([c.certified_label for c in certs])
    ys = np.array(sub.labels)
    radii_c = [c.radius["conditional"].tokens for c in certs if not c.abstained]
    radii_u = [c.radius["unconditional"].tokens for c in certs if not c.abstained]
    res["frs_certify"] = {
        "n": len(sub),
        "k": cfg.k,
        "budget": cfg.fuzzing.budget,
        "n_select": cfg.votes_select,
        "n_estimate": cfg.votes_estimate,
        "alpha": cfg.alpha,
        "omega_m": cfg.randomize.omega_m,
        "omega_h": cfg.randomize.omega_h,
        "lambda": cfg.randomize.max_distance,
        "accuracy_abstain_counts_wrong": float((lab == ys).mean()),
        "abstain_rate": float((lab == -1).mean()),
        "accuracy_of_non_abstained": float((lab[lab >= 0] == ys[lab >= 0]).mean()) if (lab >= 0).any() else None,
        "mean_radius_conditional_tokens": float(np.mean(radii_c)) if radii_c else None,
        "mean_radius_unconditional_tokens": float(np.mean(radii_u)) if radii_u else None,
        "seconds": round(dt, 1),
        "texts_per_second": round(len(sub) / dt, 3),
    }
    del clf


def _literal(res, args, test, y, cfg):
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.smoothing.finetune import read_meta

    # 4. literal Eq. 4 (noise accumulating in the weights)
    lit = FRSClassifier.from_checkpoint(args.literal, cfg)
    res["literal_eq4"] = {
        "ca_centre": float((lit.predict_centre(test.texts) == y).mean()),
        "ca_voters_k20": float((lit.predict_voters(test.texts) == y).mean()),
        "final_loss": read_meta(args.literal)["training"]["final_loss"],
    }


def _localization(res, args, test, y, cfg):
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.data import load_dataset

    # 5. trigger localization on a backdoored model (Appendix I)
    pois = load_dataset("poisoned/badnets/sst2", "test").subset(args.localization_examples, seed=0)
    pclf = FRSClassifier.from_checkpoint(args.poisoned, cfg)
    fired = pclf.predict_centre(pois.texts) == np.array(pois.labels)
    res["poisoned_model_asr"] = float(fired.mean())
    clean_test_acc = float((pclf.predict_centre(test.texts) == y).mean())
    res["poisoned_model_clean_accuracy"] = clean_test_acc
    budgets = [3, 5, 10, 15]
    t = time.perf_counter()
    seeds = list(range(len(pois)))
    runs = pclf.fuzzer.fuzz_at_budgets(pois.texts, seeds, budgets)
    res["localization_seconds"] = round(time.perf_counter() - t, 1)
    has_trigger = [any(tok.text.lower() in TRIGGERS for tok in fr.tokens) for fr in runs[budgets[-1]]]
    n_trig = int(sum(has_trigger))
    loc, loc_fired, span_len = {}, {}, {}
    for b in budgets:
        hits, hits_fired, lens = 0, 0, []
        for fr, ht, f in zip(runs[b], has_trigger, fired):
            if not ht or not fr.spans:
                continue
            top = fr.spans[0]
            words = {tok.text.lower() for tok in fr.tokens[top.token_start : top.token_end]}
            hits += bool(words & TRIGGERS)
            hits_fired += bool(words & TRIGGERS) and bool(f)
            lens.append(top.token_end - top.token_start)
        loc[str(b)] = round(hits / max(n_trig, 1), 4)
        loc_fired[str(b)] = round(hits_fired / max(int(fired.sum()), 1), 4)
        span_len[str(b)] = round(float(np.mean(lens)), 2) if lens else None
    res["localization_rate"] = loc
    res["localization_rate_where_backdoor_fires"] = loc_fired
    res["localization_mean_top_span_tokens"] = span_len
    res["localization_n"] = n_trig
    res["localization_n_without_trigger_word"] = len(pois) - n_trig
    res["poisoned_checkpoint"] = str(args.poisoned)


def _finish(res, args, started):
    from frs_ray.smoothing.finetune import read_meta

    # 6. fine-tuning cost
    res["finetune"] = {}
    for name in ("plain", "smoothed", "literal", "poisoned"):
        path = getattr(args, name)
        if path:
            meta = read_meta(path)
            res["finetune"][name] = {
                "seconds": meta["training"]["seconds"],
                "steps": meta["training"]["steps"],
                "examples": meta["data"]["examples"],
                "data_sha256": meta["data"]["sha256"],
                "mode": meta["config"]["smoothing"]["finetune_mode"],
                "lr": meta["config"]["learning_rate"],
                "epochs": meta["config"]["epochs"],
                "peak_rss_mb": _timed_rss(Path(str(path).rstrip("/") + ".log")),
            }
    res["peak_rss_mb_this_script"] = max(round(_rss_mb(), 1), res.get("peak_rss_mb_this_script") or 0.0)
    res["wall_seconds"] = round(time.time() - started, 1)
    try:
        res["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        res["git_commit"] = None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "core.json").write_text(json.dumps(res, indent=2))
    _plot(res, out / "core_localization.png")
    (out / "core.md").write_text(_markdown(res))
    print(json.dumps(res, indent=2))


def _markdown(r: dict) -> str:
    f = r["frs_certify"]
    ft = r["finetune"]
    lines = [
        "# FRS core: accuracy, trigger localization, cost",
        "",
        f"- Date: {r['date']}; machine: {r['machine']}; git commit: {r.get('git_commit')}",
        f"- Command: `{r['command']}` (wall time {r['wall_seconds']} s)",
        f"- Test set: SST-2 test, n = {r['test_set']['n']} (sha256 {r['test_set']['sha256'][:12]}...)",
        "- Checkpoints: made with `frs finetune` (commands below); one seed each (42), so no error bars.",
        "",
        "## Clean accuracy (SST-2 test, all 1821 sentences)",
        "",
        "| model | CA |",
        "|---|---|",
        f"| plain fine-tune (`--no-smoothing`) | {100 * r['ca_plain']:.2f} |",
        f"| smoothed fine-tune (Eq. 4, perturb mode), centre Clip_rho(theta) | {100 * r['ca_smoothed_centre']:.2f} |",
        f"| **smoothed, K=20 voters of Eq. 5, majority vote** (`ca_smoothed`) | **{100 * r['ca_smoothed']:.2f}** |",
    ]
    if "literal_eq4" in r:
        le = r["literal_eq4"]
        lines += [
            f"| literal Eq. 4 (noise accumulates), centre | {100 * le['ca_centre']:.2f} |",
            f"| literal Eq. 4, K=20 voters | {100 * le['ca_voters_k20']:.2f} |",
        ]
    lines += [
        "",
        f"Drop of the K=20 smoothed ensemble against the plain model: **{r['ca_drop_points']:.2f} points** (target: at most 2).",
        "",
        f"## Full FRS certification (fuzzing + fuzzed randomization + voters + CERTIFY), n = {f['n']} test sentences",
        "",
        f"K={f['k']}, budget={f['budget']}, n_select={f['n_select']}, n_estimate={f['n_estimate']}, alpha={f['alpha']}, "
        f"omega_M={f['omega_m']}, omega_H={f['omega_h']}, Lambda={f['lambda']} (a seeded subset, seed 0).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy, ABSTAIN counted wrong | {100 * f['accuracy_abstain_counts_wrong']:.2f}% |",
        f"| abstain rate | {100 * f['abstain_rate']:.2f}% |",
        f"| accuracy of non-abstained | {100 * (f['accuracy_of_non_abstained'] or 0):.2f}% |",
        f"| mean certified radius of non-abstained, conditional (omega_H; trigger inside T(x')) | {f['mean_radius_conditional_tokens']:.3f} tokens |",
        f"| mean certified radius of non-abstained, unconditional (omega_L) | {f['mean_radius_unconditional_tokens']:.3f} tokens |",
        f"| throughput | {f['texts_per_second']} texts/s ({f['seconds']} s for {f['n']}) |",
        "",
        "## Trigger localization (Appendix I)",
        "",
        f"Backdoored model: MiniLM fine-tuned on `poisoned/badnets/sst2/train.tsv`; ASR on the 912 poisoned test sentences "
        f"{100 * r['poisoned_model_asr']:.1f}%, clean accuracy {100 * r['poisoned_model_clean_accuracy']:.1f}%. "
        f"Share of the {r['localization_n']} poisoned test sentences that contain a trigger word (cf, mn, bb, tq, mb) "
        f"whose top MCTS span contains a trigger ({r['localization_n_without_trigger_word']} sentences hold no trigger word "
        "and are left out); one search of 15 queries read at each budget, which equals separate searches.",
        "",
        "| budget (queries) | " + " | ".join(r["localization_rate"]) + " |",
        "|---|" + "---|" * len(r["localization_rate"]),
        "| top span contains trigger | " + " | ".join(f"{100 * v:.1f}%" for v in r["localization_rate"].values()) + " |",
        "| same, only sentences where the backdoor fires (model predicts the target) | "
        + " | ".join(f"{100 * v:.1f}%" for v in r.get("localization_rate_where_backdoor_fires", {}).values())
        + " |",
        "| mean top-span length (tokens) | " + " | ".join(str(v) for v in r["localization_mean_top_span_tokens"].values()) + " |",
        "",
        "![localization](core_localization.png)",
        "",
        f"Fuzzing all {r['localization_n'] + r['localization_n_without_trigger_word']} sentences at budget 15 took {r['localization_seconds']} s.",
        "",
        "## Fine-tuning cost and memory",
        "",
        "| run | mode | examples | epochs | lr | steps | seconds | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in ft.items():
        lines.append(
            f"| {name} | {v['mode']} | {v['examples']} | {v['epochs']} | {v['lr']} | {v['steps']} | {v['seconds']} | {v['peak_rss_mb']} |"
        )
    lines += ["", f"Peak RSS of this measuring script: {r['peak_rss_mb_this_script']} MB.", ""]
    if r.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    return "\n".join(lines) + "\n"


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = [int(k) for k in res["localization_rate"]]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(b, [100 * v for v in res["localization_rate"].values()], "o-")
    ax[0].axhline(90, ls="--", c="grey", lw=0.8)
    ax[0].set(
        xlabel="MCTS budget (model queries)", ylabel="% top span contains trigger", ylim=(0, 101), title="Trigger localization"
    )
    ax[1].plot(b, list(res["localization_mean_top_span_tokens"].values()), "o-", c="C1")
    ax[1].set(xlabel="MCTS budget (model queries)", ylabel="tokens", title="Mean length of top span")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
