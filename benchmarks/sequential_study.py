"""Sequential CERTIFY against the fixed protocol (issue 17): writes docs/results/sequential.{md,json} and
sequential_radius.png.

One run, one checkpoint, one set of seeded test sentences. Every text is fuzzed once (``FRSClassifier.prepare``); the
fixed protocol (n_select + n_estimate votes) and every sequential configuration are then certified from the same
plans, so the selection votes and the first estimation round are literally the same votes for all of them (the first
sequential round IS the plan's estimation sample, ``frs_ray.certify.rounds``). Voter labels are cached per job
(voter k, randomized text): a voter is a deterministic function of its input, so configurations that share rounds
(same ``round_growth``: rounds are seeded by (seed, text, look)) vote each job once. Each configuration's
certificates equal what ``frs certify --n-max N --futility F ...`` (``FRSClassifier.certify``) gives on the same texts.

Reported per configuration, on the clean sentences: abstain rate, certified accuracy, mean votes per text (selection
+ estimation, the cost the issue bounds by 80; estimation alone beside it), the conditional (omega_H, trigger inside
T(x')) and unconditional (omega_L) radius distributions over certified-correct inputs, and certified accuracy at
perturbation levels 10-50% (Table 5, FRS's radius rule as in ``frs eval``). With ``--victim``: certified CA, PA and
ASR of FRS on a backdoored victim, fixed against the chosen sequential configuration. ``false_certificate_rate``
repeats the Monte-Carlo validity check of ``tests/test_sequential.py`` here (synthetic Binomial votes with true
shares 0.01 / 0.002 above and below every threshold the rule uses), so the report carries its own validity evidence.

    python benchmarks/sequential_study.py --checkpoint runs/default-sst2 --n 200 \
        --n-max 320 --futility 0.05 --growth 2 --candidates 160:0.05:2,320:0.2:2,640:0.05:2,320:0.05:2:2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's frs_ray, whatever is installed

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5)


# ---------------------------------------------------------------------------------------------- validity (MC)


def _simulate(test, p: float, trials: int, rng: np.random.Generator) -> np.ndarray:
    """Final bounds of ``trials`` simulated texts with true share ``p``: stopping from ``test.decide``, the bound
    recomputed with scipy's Beta quantile at the stopping look (the procedure of tests/test_sequential.py)."""
    from scipy.stats import beta as beta_dist

    from frs_ray.certify.sequential import CONTINUE

    s = test.schedule
    cum = np.cumsum(np.stack([rng.binomial(s.round_size(j), p, size=trials) for j in range(s.looks)], axis=1), axis=1)
    stop = np.full(trials, -1)
    bound = np.zeros(trials)
    for j, (n, a) in enumerate(zip(s.sizes, s.alphas)):
        ks = np.arange(n + 1)
        code = test.decide(j, ks)[1][cum[:, j]]
        b = np.concatenate([[0.0], beta_dist.ppf(a, ks[1:], n - ks[1:] + 1)])[cum[:, j]]
        now = (stop < 0) & (code != CONTINUE)
        stop[now] = j
        bound[now] = b[now]
    assert np.all(stop >= 0)
    return bound


def monte_carlo_validity(
    schedules: Sequence[tuple[int, int, float]], futility: float, trials: int, seed: int = 17
) -> dict[str, Any]:
    """Largest false-bound / false-certificate rate over schedules x targets x true shares near each threshold."""
    from frs_ray.certify.sequential import LookSchedule, SequentialTest, decision_thresholds

    targets = [(0, 1.0), (1, 0.72), (2, 0.9), (3, 0.9)]
    out = {}
    for alpha in (0.05, 0.01):
        rng = np.random.default_rng(seed + int(alpha * 1000))
        se = math.sqrt(alpha * (1 - alpha) / trials)
        worst, where, cases = 0.0, None, 0
        for first, n_max, growth in schedules:
            s = LookSchedule.geometric(first, n_max, alpha, growth)
            for radius, omega in targets:
                t = SequentialTest(s, radius, omega, futility)
                for th in decision_thresholds(radius, omega):
                    for d in (-0.01, -0.002, 0.002, 0.01):
                        p = th + d
                        b = _simulate(t, p, trials, rng)
                        false_bound = float(np.mean(b > p))
                        here = (b - (1.0 - omega**radius) > 0.5) if th > 0.5 else (b > 0.5)
                        false_cert = float(np.mean(here)) if p < th else 0.0
                        cases += 1
                        for rate in (false_bound, false_cert):
                            if rate > worst:
                                worst, where = (
                                    rate,
                                    {
                                        "schedule": [first, n_max, growth],
                                        "target_radius": radius,
                                        "omega": omega,
                                        "p": round(p, 6),
                                    },
                                )
        out[str(alpha)] = {
            "max": worst,
            "alpha_plus_3se": alpha + 3 * se,
            "ok": worst <= alpha + 3 * se,
            "at": where,
            "cases": cases,
            "trials_per_case": trials,
        }
    return out


# ---------------------------------------------------------------------------------------------- certification
class CachedVoter:
    """``vote_labels`` with a per-job cache (a voter's label is a function of (k, randomized text))."""

    def __init__(self, clf) -> None:
        self.clf, self.cache, self.voted, self.seconds = clf, {}, 0, 0.0

    def __call__(self, jobs):
        new = [j for j in dict.fromkeys(jobs) if j not in self.cache]
        if new:
            t0 = time.perf_counter()
            self.cache.update(zip(new, self.clf.vote_labels(new)))
            self.seconds += time.perf_counter() - t0
            self.voted += len(new)
        return [self.cache[j] for j in jobs]


def _configs(base, spec: dict[str, Any]):
    from frs_ray.config import CertifyConfig, build

    return build(
        CertifyConfig,
        {
            **base.model_dump(),
            "n_max": spec["n_max"],
            "futility": spec["futility"],
            "round_growth": spec["growth"],
            "target_radius": spec.get("target_radius"),
        },
    )


def certify_all(clf, plans, cfgs: dict[str, Any], voter: CachedVoter, chunk: int = 64) -> dict[str, list]:
    """Certificates of every configuration (None = fixed) from the same plans, ``chunk`` texts per voter call."""
    from frs_ray.certify.rounds import certify_plans_sequential, draw_round
    from frs_ray.certify.smooth import finalize_plans

    out: dict[str, list] = {name: [] for name in cfgs}
    for s in range(0, len(plans), chunk):
        part = plans[s : s + chunk]
        for name, cfg in cfgs.items():
            if cfg.n_max is None:
                labels = voter([j for p in part for j in p.select + p.estimate])
                out[name] += finalize_plans(part, labels, cfg, clf.label_names)
            else:
                rnd = clf.randomizer
                out[name] += certify_plans_sequential(
                    part, voter, lambda p, look, n, c=cfg, r=rnd: draw_round(p, look, n, c, r), cfg, clf.label_names
                )
    return out


def _predictions(certs):
    """DefensePrediction per certificate with FRS's radius rule (frs_ray.defenses.smoothing)."""
    from frs_ray.defenses.base import DefensePrediction

    return [DefensePrediction.from_certificate(c) for c in certs]


def _radius_summary(certs, labels) -> dict[str, Any]:
    out = {}
    ok = [not c.abstained and c.certified_label == y for c, y in zip(certs, labels)]
    for kind in ("conditional", "unconditional"):
        rs = np.array([c.radius[kind].tokens for c, good in zip(certs, ok) if good], dtype=float)
        all_r = np.array([c.radius[kind].tokens if good else 0 for c, good in zip(certs, ok)], dtype=float)
        out[kind] = {
            "mean_certified_correct": float(rs.mean()) if rs.size else None,
            "mean_all": float(all_r.mean()),
            "share_ge1": float(np.mean(rs >= 1)) if rs.size else None,
            "share_ge2": float(np.mean(rs >= 2)) if rs.size else None,
            "max": float(rs.max()) if rs.size else None,
            "histogram": {str(int(r)): int(np.sum(rs == r)) for r in sorted(set(rs.tolist()))},
        }
    out["certified_correct"] = int(sum(ok))
    return out


def summarize_clean(certs, labels) -> dict[str, Any]:
    from frs_ray.evaluation import metrics as M

    preds = _predictions(certs)
    cv = M.certified_view(preds)
    seq = [c.sequential for c in certs if c.sequential]
    rec = {
        "abstain": M.abstain_rate(cv),
        "certified_accuracy": M.clean_accuracy(cv, labels),
        "accuracy_majority": M.clean_accuracy(preds, labels),
        "mean_votes": float(np.mean([c.queries["votes"] for c in certs])),
        "mean_estimation_votes": float(np.mean([sum(c.votes) for c in certs])),
        "max_votes": int(max(c.queries["votes"] for c in certs)),
        "radius": _radius_summary(certs, labels),
        "certified_accuracy_levels": M.certified_accuracy(preds, labels, LEVELS),
    }
    if seq:
        stops: dict[str, int] = {}
        for s in seq:
            stops[s["stop"]] = stops.get(s["stop"], 0) + 1
        rec["stops"] = stops
        rec["mean_looks"] = float(np.mean([s["looks"] for s in seq]))
    return rec


def summarize_triggered(certs, ts) -> dict[str, Any]:
    from frs_ray.evaluation import metrics as M

    preds = _predictions(certs)
    cv = M.certified_view(preds)
    return {
        "certified_asr": M.attack_success_rate(cv, ts.target),
        "certified_pa": M.poisoned_accuracy(cv, ts.labels),
        "asr": M.attack_success_rate(preds, ts.target),
        "pa": M.poisoned_accuracy(preds, ts.labels),
        "abstain": M.abstain_rate(cv),
        "mean_votes": float(np.mean([c.queries["votes"] for c in certs])),
    }


def run_victims(items: Sequence[str], base, seq_cfg, test, n: int, subset_seed: int, target: int) -> dict[str, Any]:
    """FRS on each ``NAME=SMOOTHED_CHECKPOINT:ATTACK`` victim: ``n`` clean and ``n`` triggered test sentences,
    fixed (``base``) against sequential (``seq_cfg``) from the same plans."""
    from frs_ray.attacks import build_triggered_set, make_trigger
    from frs_ray.certify.smooth import FRSClassifier

    victims = {}
    for item in items:
        name, rest = item.split("=", 1)
        ckpt, attack = rest.rsplit(":", 1)
        vclf = FRSClassifier.from_checkpoint(ckpt, base)
        clean = test.subset(n, seed=subset_seed)
        ts = build_triggered_set(test, make_trigger(attack), target, seed=subset_seed, max_examples=n)
        vplans = vclf.prepare(list(clean.texts) + list(ts.texts))
        vc = certify_all(vclf, vplans, {"fixed": base, "sequential": seq_cfg}, CachedVoter(vclf))
        nc = len(clean.texts)
        victims[name] = {
            "checkpoint": ckpt,
            "attack": attack,
            "trigger": ts.trigger,
            "target": ts.target,
            "n_clean": nc,
            "n_triggered": len(ts.texts),
            "triggered_sha256": ts.sha256,
            "clean": {p: summarize_clean(vc[p][:nc], clean.labels) for p in ("fixed", "sequential")},
            "triggered": {p: summarize_triggered(vc[p][nc:], ts) for p in ("fixed", "sequential")},
        }
        print(f"victim {name}: {json.dumps({p: victims[name]['triggered'][p] for p in ('fixed', 'sequential')})}", flush=True)
    return victims


# ---------------------------------------------------------------------------------------------- outputs
def _figure(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    n = res["sample_sizes"]["clean"]
    for ax, kind in zip(axes, ("conditional", "unconditional")):
        hists = {name: res["radius"][name][kind]["histogram"] for name in ("fixed", "sequential")}
        radii = sorted({int(r) for h in hists.values() for r in h} | {0, 1, 2})
        x = np.arange(len(radii) + 1)
        for off, (name, colour) in zip((-0.2, 0.2), (("fixed", "tab:grey"), ("sequential", "tab:blue"))):
            h = hists[name]
            not_cc = n - res["radius"][name]["certified_correct"]
            ys = [100.0 * not_cc / n] + [100.0 * h.get(str(r), 0) / n for r in radii]
            ax.bar(x + off, ys, width=0.4, color=colour, label=f"{name} ({res['mean_votes'][name]:.1f} votes/text)")
        ax.set_xticks(x, ["not cert.\ncorrect"] + [str(r) for r in radii])
        ax.set(
            title=f"{kind} radius (omega_{'H' if kind == 'conditional' else 'L'})",
            xlabel="certified radius (tokens)",
            ylabel=f"% of {n} clean sentences",
        )
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, d=2) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def render_markdown(res: dict[str, Any]) -> str:
    ch = res["chosen"]
    L = [
        "# Sequential CERTIFY against the fixed protocol",
        "",
        f"- Date: {res['date']}; machine: {res['machine']}; git commit: {res['git_commit']}",
        f"- Command: `{res['command']}` (wall {res['wall_seconds']} s)",
        f"- Checkpoint: `{res['checkpoint']}`; data: {res['data']['source']} (sha256 {res['data']['sha256'][:12]}...), "
        f"{res['sample_sizes']['clean']} seeded test sentences (subset seed {res['sample_sizes']['subset_seed']})",
        f"- Shared settings: K={res['base']['k']}, n_select={res['base']['n_select']}, first estimation round "
        f"{res['base']['n_estimate']} votes, alpha={res['base']['alpha']}, budget={res['base']['budget']}, seed "
        f"{res['base']['seed']}; torch threads {res['torch_threads']}",
        f"- Sequential (chosen defaults): n_max={ch['n_max']}, round_growth={ch['growth']}, futility={ch['futility']}, "
        f"target_radius={ch.get('target_radius')}: looks at {ch['looks']} estimation votes, alpha {ch['alpha_per_look']:.4g} each",
        f"- Fixed and sequential use the same fuzzing and the same selection votes and first round; labels were "
        f"computed for {res['votes_computed']} distinct (voter, randomized text) jobs in {res['vote_seconds']} s.",
        "",
        "## Clean sentences: fixed 20 + 20 against sequential",
        "",
        "| | fixed | sequential |",
        "|---|---|---|",
    ]
    f, s = res["clean"]["fixed"], res["clean"]["sequential"]
    rows = [
        ("abstain rate", _pct(f["abstain"]), _pct(s["abstain"])),
        ("certified accuracy (abstain = wrong)", _pct(f["certified_accuracy"]), _pct(s["certified_accuracy"])),
        ("mean votes per text (selection + estimation)", _num(f["mean_votes"], 1), _num(s["mean_votes"], 1)),
        ("mean estimation votes per text", _num(f["mean_estimation_votes"], 1), _num(s["mean_estimation_votes"], 1)),
        ("most votes on one text", str(f["max_votes"]), str(s["max_votes"])),
    ]
    for kind in ("conditional", "unconditional"):
        fr, sr = f["radius"][kind], s["radius"][kind]
        rows += [
            (
                f"{kind} radius: mean over certified-correct",
                _num(fr["mean_certified_correct"], 3),
                _num(sr["mean_certified_correct"], 3),
            ),
            (f"{kind} radius: mean over all (0 if not certified correct)", _num(fr["mean_all"], 3), _num(sr["mean_all"], 3)),
            (f"{kind} radius >= 1 token (share of certified-correct)", _pct(fr["share_ge1"]), _pct(sr["share_ge1"])),
            (f"{kind} radius >= 2 tokens (share of certified-correct)", _pct(fr["share_ge2"]), _pct(sr["share_ge2"])),
        ]
    rows += [("certified-correct inputs", str(f["radius"]["certified_correct"]), str(s["radius"]["certified_correct"]))]
    L += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if "stops" in s:
        L += [
            "",
            f"Sequential stops: {', '.join(f'{k} {v}' for k, v in sorted(s['stops'].items()))}; mean looks "
            f"{s['mean_looks']:.2f}.",
        ]
    L += [
        "",
        "Certified accuracy at perturbation levels (Table 5's shape: certified correct with radius >= level x "
        "length; FRS's radius: conditional where T(x') got a higher probability, else unconditional):",
        "",
        "| protocol | " + " | ".join(f"{int(100 * float(lv))}%" for lv in res["certified_accuracy"]["fixed"]) + " |",
        "|---|" + "---|" * len(res["certified_accuracy"]["fixed"]),
    ]
    for name in ("fixed", "sequential"):
        L.append(f"| {name} | " + " | ".join(_pct(v) for v in res["certified_accuracy"][name].values()) + " |")
    L += [
        "",
        "![radius distributions](sequential_radius.png)",
        "",
        "## Candidate configurations (same run, same plans and votes)",
        "",
        "| n_max | growth | futility | target_radius | abstain | cert. acc. | mean votes | cond. radius >= 2 | meets both (abstain <= half of fixed, votes <= 80) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["candidates"]:
        r = c["result"]
        L.append(
            f"| {c['n_max']} | {c['growth']} | {c['futility']} | {c.get('target_radius')} | {_pct(r['abstain'])} | "
            f"{_pct(r['certified_accuracy'])} | {_num(r['mean_votes'], 1)} | {_pct(r['radius']['conditional']['share_ge2'])} | "
            f"{'yes' if c['meets'] else 'no'} |"
        )
    L += [
        "",
        "## Validity: Monte-Carlo false-certificate rate",
        "",
        "Synthetic Binomial votes, true shares 0.01 and 0.002 above and below every threshold the rule uses (0.5 and "
        "each target radius's), target radii 0-3, schedules "
        + ", ".join(str(tuple(x)) for x in res["validity_schedules"])
        + f", futility {ch['futility']}; bound recomputed with scipy at the stopping look.",
        "",
        "| alpha | max false-bound / false-certificate rate | alpha + 3 SE | cases x trials | ok |",
        "|---|---|---|---|---|",
    ]
    for a, v in res["false_certificate_rate"].items():
        L.append(
            f"| {a} | {v['max']:.5f} | {v['alpha_plus_3se']:.5f} | {v['cases']} x {v['trials_per_case']} | {'yes' if v['ok'] else 'NO'} |"
        )
    if res.get("victims"):
        L += [
            "",
            "## Backdoored victims: FRS fixed against sequential",
            "",
            "| victim | protocol | clean abstain | certified CA | certified PA | certified ASR | triggered abstain | mean votes (clean / triggered) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in res["victims"].items():
            for proto in ("fixed", "sequential"):
                c, t = v["clean"][proto], v["triggered"][proto]
                L.append(
                    f"| {name} | {proto} | {_pct(c['abstain'])} | {_pct(c['certified_accuracy'])} | "
                    f"{_pct(t['certified_pa'])} | {_pct(t['certified_asr'])} | {_pct(t['abstain'])} | "
                    f"{c['mean_votes']:.1f} / {t['mean_votes']:.1f} |"
                )
        for name, v in res["victims"].items():
            L.append(
                f"\n- {name}: checkpoint `{v['checkpoint']}`; {v['n_clean']} clean + {v['n_triggered']} triggered "
                f"sentences (attack {v['attack']}, its test-time trigger {v['trigger']}, target {v['target']})."
            )
    for note in res.get("notes", []):
        L += ["", note]
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------- main
def _spec(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise SystemExit(f"--candidates: write N_MAX:FUTILITY:GROWTH[:TARGET_RADIUS], got {text!r}")
    spec = {"n_max": int(parts[0]), "futility": float(parts[1]), "growth": float(parts[2])}
    if len(parts) == 4:
        spec["target_radius"] = int(parts[3])
    return spec


def main() -> int:
    from frs_ray.config import CertifyConfig

    paper = CertifyConfig()  # the paper's K, budget and alpha, and the sequential defaults
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/default-sst2", help="smoothed checkpoint (frs finetune)")
    ap.add_argument("--n", type=int, default=200, help="seeded SST-2 test sentences")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=paper.k)
    ap.add_argument("--budget", type=int, default=paper.fuzzing.budget)
    ap.add_argument("--alpha", type=float, default=paper.alpha)
    ap.add_argument("--seed", type=int, default=paper.seed, help="certify seed (voter noise, randomization)")
    ap.add_argument("--n-max", type=int, default=320, help="chosen sequential n_max")
    ap.add_argument("--futility", type=float, default=paper.futility, help="chosen sequential futility level")
    ap.add_argument("--growth", type=float, default=paper.round_growth, help="chosen round growth")
    ap.add_argument("--target-radius", type=int, default=None, help="chosen sequential target radius")
    ap.add_argument(
        "--candidates", default="", help="more sequential configurations N_MAX:FUTILITY:GROWTH[:TARGET], comma-separated"
    )
    ap.add_argument(
        "--victim",
        action="append",
        default=[],
        help="NAME=SMOOTHED_CHECKPOINT:ATTACK (a BMPS victim of a backdoor attack; ATTACK names its trigger)",
    )
    ap.add_argument("--victim-n", type=int, default=100, help="clean and triggered sentences per victim")
    ap.add_argument("--target", type=int, default=1, help="attacker's target label")
    ap.add_argument("--mc-trials", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument(
        "--render-only",
        default=None,
        metavar="JSON",
        help="rewrite sequential.md and the figure from an earlier run's sequential.json (adding --note)",
    )
    ap.add_argument(
        "--add-victims",
        default=None,
        metavar="JSON",
        help="keep the clean results of an earlier run's sequential.json and only (re)measure --victim, "
        "with that run's chosen configuration",
    )
    args = ap.parse_args()
    if args.render_only:
        res = json.loads(Path(args.render_only).read_text())
        res["notes"] = res.get("notes", []) + args.note
        res["command"] += " ; then: " + shlex.join(["python"] + sys.argv)
        write_outputs(res, Path(args.out))
        return 0

    started = time.time()
    from frs_ray.runtime import configure_process

    configure_process()
    import torch

    torch.set_num_threads(args.threads)
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig, build
    from frs_ray.data import load_dataset

    base = build(CertifyConfig, {"k": args.k, "alpha": args.alpha, "seed": args.seed, "fuzzing": {"budget": args.budget}})
    chosen = {"n_max": args.n_max, "futility": args.futility, "growth": args.growth, "target_radius": args.target_radius}
    specs = [chosen] + [_spec(c) for c in args.candidates.split(",") if c.strip()]
    cfgs = {"fixed": base, **{f"seq{i}": _configs(base, sp) for i, sp in enumerate(specs)}}

    test = load_dataset("sst2", "test")
    if args.add_victims:
        return add_victims(args, base, test, started)
    sub = test.subset(args.n, seed=args.subset_seed)
    clf = FRSClassifier.from_checkpoint(args.checkpoint, base)
    voter = CachedVoter(clf)
    t0 = time.perf_counter()
    plans = clf.prepare(sub.texts)
    fuzz_s = time.perf_counter() - t0
    print(f"fuzzed {len(plans)} texts in {fuzz_s:.1f} s", flush=True)
    certs = certify_all(clf, plans, cfgs, voter)
    print(f"voted {voter.voted} jobs in {voter.seconds:.1f} s", flush=True)
    summaries = {name: summarize_clean(c, sub.labels) for name, c in certs.items()}
    fixed = summaries["fixed"]
    candidates = []
    for i, sp in enumerate(specs):
        r = summaries[f"seq{i}"]
        candidates.append({**sp, "result": r, "meets": r["abstain"] <= fixed["abstain"] / 2 and r["mean_votes"] <= 80})
    seq = summaries["seq0"]
    from frs_ray.certify.sequential import LookSchedule

    sched = LookSchedule.of(cfgs["seq0"])

    victims = run_victims(args.victim, base, cfgs["seq0"], test, args.victim_n, args.subset_seed, args.target)

    validity_schedules = sorted(
        {(base.votes_estimate, sp["n_max"], sp["growth"]) for sp in specs} | {(20, 320, 2.0), (10, 200, 1.5)}
    )
    validity = monte_carlo_validity(validity_schedules, args.futility, args.mc_trials)
    commit = _git_commit()
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "command": shlex.join(["python"] + sys.argv),
        "git_commit": commit,
        "checkpoint": args.checkpoint,
        "torch_threads": args.threads,
        "data": {"source": test.source, "sha256": test.sha256},
        "sample_sizes": {
            "clean": len(sub.texts),
            "subset_seed": args.subset_seed,
            "victims": {k: {"clean": v["n_clean"], "triggered": v["n_triggered"]} for k, v in victims.items()},
            "monte_carlo_trials_per_case": args.mc_trials,
        },
        "base": {
            "k": base.k,
            "n_select": base.votes_select,
            "n_estimate": base.votes_estimate,
            "alpha": base.alpha,
            "budget": base.fuzzing.budget,
            "seed": base.seed,
        },
        "chosen": {**chosen, "looks": list(sched.sizes), "alpha_per_look": sched.alphas[0]},
        "abstain_clean": {"fixed": fixed["abstain"], "sequential": seq["abstain"]},
        "mean_votes": {"fixed": fixed["mean_votes"], "sequential": seq["mean_votes"]},
        "mean_estimation_votes": {"fixed": fixed["mean_estimation_votes"], "sequential": seq["mean_estimation_votes"]},
        "radius": {"fixed": fixed["radius"], "sequential": seq["radius"]},
        "certified_accuracy": {"fixed": fixed["certified_accuracy_levels"], "sequential": seq["certified_accuracy_levels"]},
        "false_certificate_rate": validity,
        "validity_schedules": [list(x) for x in validity_schedules],
        "clean": {"fixed": fixed, "sequential": seq},
        "candidates": candidates,
        "victims": victims,
        "fuzz_seconds": round(fuzz_s, 1),
        "votes_computed": voter.voted,
        "vote_seconds": round(voter.seconds, 1),
        "notes": args.note,
        "wall_seconds": round(time.time() - started, 1),
    }
    write_outputs(res, Path(args.out))
    return 0


def _git_commit() -> str:
    """HEAD's commit, with ``+uncommitted changes`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout.strip()
        new = subprocess.run(
            ["git", "status", "--porcelain", "--", "benchmarks/sequential_study.py"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"
    return head + (" + uncommitted changes" if dirty or new else "")


def write_outputs(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sequential.json").write_text(json.dumps(res, indent=1))
    _figure(res, out / "sequential_radius.png")
    (out / "sequential.md").write_text(render_markdown(res))
    print(render_markdown(res))


def add_victims(args: argparse.Namespace, base, test, started: float) -> int:
    """``--add-victims``: the earlier run's results plus the victims, measured with its chosen configuration."""
    res = json.loads(Path(args.add_victims).read_text())
    ch = res["chosen"]
    seq_cfg = _configs(base, ch)
    from frs_ray.certify.sequential import LookSchedule

    if LookSchedule.of(seq_cfg).sizes != tuple(ch["looks"]) or res["base"]["k"] != base.k:
        raise SystemExit("--add-victims: pass the same --k / --n-max / --futility / --growth as the earlier run")
    res["victims"] = {
        **res.get("victims", {}),
        **run_victims(args.victim, base, seq_cfg, test, args.victim_n, args.subset_seed, args.target),
    }
    res["sample_sizes"]["victims"] = {
        k: {"clean": v["n_clean"], "triggered": v["n_triggered"]} for k, v in res["victims"].items()
    }
    res["command"] += " ; then: " + shlex.join(["python"] + sys.argv)
    res["wall_seconds"] = round(res["wall_seconds"] + time.time() - started, 1)
    res["notes"] = res.get("notes", []) + args.note
    write_outputs(res, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
