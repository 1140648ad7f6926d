"""The decoder (SmolLM2, Llama family) results: docs/results/llm.{md,json}.

Needs two LoRA checkpoints made with `frs finetune --model smollm2 --data sst2 --lora` (the exact commands are
recorded in the report): ``--plain`` with ``--no-smoothing`` and ``--smoothed`` with the default smoothing.

    python benchmarks/llm_study.py --plain runs/smollm2-sst2-plain --smoothed runs/smollm2-sst2-bmps \
        --finetune-log runs/llm_ft.log --out docs/results

Sections (``--sections``; the others are kept from an existing llm.json):
- ``ca``: clean accuracy on the SST-2 test split of the plain fine-tune (its model), of the smoothed fine-tune's
  centre model Clip_rho(theta) and of its K-voter ensemble (Eq. 5: the majority vote of the K smoothed voters on
  the unrandomized text; a tie counts as wrong), through the torch voter pool.
- ``vllm``: the same voters in a vLLM engine (``voters.backend: vllm``) against the torch pool on the first
  ``--vllm-texts`` test sentences: label agreement and the largest class-probability difference.
- ``service``: copied from service_load.py JSON files (``--service-load``, ``--service-faults``) of a run
  against `serve run deployments/frs-smollm2.yaml`.
- ``ca-variants``: the ``ca`` blocks of other reports of this script (``--ca-reports PATH[::LABEL] ...``, e.g. a
  fine-tune variant measured with ``--name``) as one table; the last one given becomes this report's ``ca``.
- ``eval``: the records of an ``frs eval`` report on SmolLM2 (``--eval-report``, from
  ``configs/eval/sst2_smollm2.yaml``) beside MiniLM's records of the same attacks and defenses
  (``--minilm-report``, e.g. ``docs/results/transplant.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SECTIONS = ("ca", "ca-variants", "sigma", "vllm", "service", "eval")


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def _ensemble_votes(frs, texts: list[str], chunk: int, progress: bool) -> np.ndarray:
    """(n, K) labels: voter k's label on text i (the unrandomized text)."""
    from tqdm.auto import tqdm

    k = frs.config.k
    out = np.empty((len(texts), k), dtype=np.int64)
    for s in tqdm(range(0, len(texts), chunk), desc="voters", unit="chunk", disable=not progress):
        part = texts[s : s + chunk]
        jobs = [(v, t) for t in part for v in range(k)]
        out[s : s + len(part)] = np.asarray(frs.vote_labels(jobs)).reshape(len(part), k)
    return out


def measure_ca(args, test) -> dict:
    from frs_ray.backends.hf import HFClassifier
    from frs_ray.certify.bounds import majority_vote
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig
    from frs_ray.smoothing.finetune import read_meta

    texts, labels = list(test.texts), np.asarray(test.labels)
    t0 = time.time()
    plain = HFClassifier(args.plain, max_length=read_meta(args.plain)["max_length"])
    plain_pred = plain.predict_proba(texts).argmax(1)
    t_plain = time.time() - t0
    del plain
    t0 = time.time()
    frs = FRSClassifier.from_checkpoint(args.smoothed, CertifyConfig(k=args.k, seed=args.seed))
    centre_pred = frs.backend.predict_proba(texts).argmax(1)
    votes = _ensemble_votes(frs, texts, args.chunk, not args.no_progress)
    t_smoothed = time.time() - t0
    n_labels = frs.backend.num_labels
    ensemble = np.array([majority_vote(np.bincount(row, minlength=n_labels).tolist()) for row in votes])
    voter_acc = (votes == labels[:, None]).mean(0)
    share = (votes == ensemble[:, None]).mean(1)
    if args.save_votes:  # per sentence, to read other subsets of the same run (e.g. the 600 of llm_head_lr.md)
        Path(args.save_votes).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.save_votes, labels=labels, plain=plain_pred, centre=centre_pred, votes=votes, ensemble=ensemble)
    return {
        "checkpoints": {"plain": str(args.plain), "smoothed": str(args.smoothed)},
        "smoothed_finetune": _finetune_settings(read_meta(args.smoothed)),
        "n": len(texts),
        "k": args.k,
        "seed": args.seed,
        "subset_seed": args.subset_seed if args.n is not None else None,
        "ca_plain": round(float((plain_pred == labels).mean()) * 100, 2),
        "ca_smoothed_centre": round(float((centre_pred == labels).mean()) * 100, 2),
        "ca_smoothed": round(float((ensemble == labels).mean()) * 100, 2),
        "ensemble_ties": int((ensemble < 0).sum()),
        "voter_ca": {
            "mean": round(float(voter_acc.mean()) * 100, 2),
            "min": round(float(voter_acc.min()) * 100, 2),
            "max": round(float(voter_acc.max()) * 100, 2),
        },
        "unanimous_share": round(float((share == 1).mean()) * 100, 2),
        "seconds": {"plain": round(t_plain, 1), "smoothed": round(t_smoothed, 1)},
        "voter_pool": frs.pool.describe(),
    }


def _finetune_settings(meta: dict) -> dict:
    """What distinguishes one smoothed fine-tune from another in the variants table."""
    cfg = meta["config"]
    lora = cfg.get("lora") or {}
    return {
        "sigma": cfg["smoothing"]["sigma"],
        "top_h": cfg["smoothing"]["top_h"],
        "new_head": cfg["smoothing"].get("new_head", "smoothed"),
        "head_learning_rate": lora.get("head_learning_rate") or cfg["learning_rate"],
        "examples": meta["data"]["examples"],
    }


def read_ca_variants(args, res: dict) -> list[dict]:
    """The ``ca`` blocks of ``--ca-reports`` (keyed by report), after those already in this report."""
    variants = {v["report"]: v for v in res.get("ca_variants", [])}
    if not variants and res.get("ca"):  # this report's own earlier measurement, labelled by its fine-tune command
        smoothed = [c for c in res.get("finetune_commands", []) if "--no-smoothing" not in c]
        label = smoothed[0].split(" finetune ", 1)[-1].strip('"') if smoothed else "earlier ca section"
        where = f"{args.name}.json of {res.get('date')}"
        variants[where] = {**res["ca"], "report": where, "label": label}
    for spec in args.ca_reports:
        path, _, label = spec.partition("::")
        ca = json.loads(Path(path).read_text())["ca"]
        variants[path] = {**ca, "report": path, "label": label or ca.get("label") or path}
    return list(variants.values())


def _ca_variant_lines(variants: list[dict]) -> list[str]:
    lines = [
        "## Clean accuracy of every smoothed fine-tune measured",
        "",
        "Each row: a plain and a smoothed LoRA fine-tune of the same data, seed and schedule (the smoothed one's "
        "settings in the first column), K = 20 voters on the unrandomized text. n = test sentences (all 1821, or a "
        "seeded subset); rows of different n are different samples.",
        "",
        "| smoothed fine-tune | n | plain LoRA | centre | K-voter ensemble | ensemble - plain | report |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        lines.append(
            f"| {v['label']} | {v['n']} | {v['ca_plain']:.2f} | {v['ca_smoothed_centre']:.2f} | {v['ca_smoothed']:.2f} "
            f"| {v['ca_smoothed'] - v['ca_plain']:+.2f} | `{v['report']}` |"
        )
    return lines + [""]


def measure_sigma(args, test) -> dict:
    """Ensemble CA of the smoothed checkpoint at other inference-phase sigmas (Eq. 5's noise; the fine-tuning
    sigma is the checkpoint's), on a seeded subset of ``--sigma-n`` test sentences."""
    from frs_ray.certify.bounds import majority_vote
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig

    sub = test.subset(args.sigma_n, seed=args.subset_seed)
    texts, labels = list(sub.texts), np.asarray(sub.labels)
    rows = []
    for sigma in [float(x) for x in args.sigmas.split(",")]:
        t0 = time.time()
        frs = FRSClassifier.from_checkpoint(args.smoothed, CertifyConfig(k=args.k, seed=args.seed), sigma=sigma)
        votes = _ensemble_votes(frs, texts, args.chunk, not args.no_progress)
        n_labels = frs.backend.num_labels
        ens = np.array([majority_vote(np.bincount(r, minlength=n_labels).tolist()) for r in votes])
        rows.append(
            {
                "sigma": sigma,
                "ca_smoothed": round(float((ens == labels).mean()) * 100, 2),
                "voter_ca_mean": round(float((votes == labels[:, None]).mean()) * 100, 2),
                "ties": int((ens < 0).sum()),
                "seconds": round(time.time() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        del frs
    return {"n": len(texts), "k": args.k, "seed": args.seed, "subset_seed": args.subset_seed, "rows": rows}


def measure_vllm(args, test) -> dict:
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig

    texts = list(test.texts)[: args.vllm_texts]
    voters = [int(v) for v in args.vllm_voters.split(",")]
    jobs = [(v, t) for v in voters for t in texts]
    probs = {}
    for backend in ("torch", "vllm"):
        cfg = CertifyConfig(k=args.k, seed=args.seed, voters={"backend": backend})
        frs = FRSClassifier.from_checkpoint(args.smoothed, cfg, voter_ids=voters)
        probs[backend] = frs.pool.vote_proba(jobs)
        del frs
    same = probs["torch"].argmax(1) == probs["vllm"].argmax(1)
    return {
        "checkpoint": str(args.smoothed),
        "texts": len(texts),
        "voters": voters,
        "jobs": len(jobs),
        "same_labels": int(same.sum()),
        "max_abs_prob_diff": float(np.abs(probs["torch"] - probs["vllm"]).max()),
        "equal": bool(same.all()),
    }


def read_service(args) -> dict:
    out = {}
    for key, path in (("load", args.service_load), ("faults", args.service_faults)):
        if path:
            out[key] = json.loads(Path(path).read_text())
            out[key]["file"] = str(path)
    return out


EVAL_KEYS = ("ca", "pa", "asr", "avg_radius", "abstain_clean")


def read_eval(args) -> dict:
    """``frs eval`` records on the decoder and, for the same (attack, defense) pairs, MiniLM's."""
    dec = json.loads(Path(args.eval_report).read_text())
    pairs = {(r["attack"], r["defense"]) for r in dec["records"]}
    mini = json.loads(Path(args.minilm_report).read_text()) if args.minilm_report else {"records": []}
    return {
        "records": dec["records"],
        "report": str(args.eval_report),
        "command": dec.get("command"),
        "date": dec.get("date"),
        "minilm": [r for r in mini["records"] if (r["attack"], r["defense"]) in pairs],
        "minilm_report": str(args.minilm_report) if args.minilm_report else None,
    }


def _eval_lines(ev: dict) -> list[str]:
    def cell(r: dict | None) -> str:
        if r is None:
            return "- | - | - | - "
        rad = "-" if r.get("avg_radius") is None else f"{r['avg_radius']:.2f}"
        return f"{100 * r['ca']:.1f} | {100 * r['pa']:.1f} | {100 * r['asr']:.1f} | {rad} "

    mini = {(r["attack"], r["defense"]): r for r in ev.get("minilm", [])}
    first = ev["records"][0]
    lines = [
        f"From `{ev['report']}` (`{ev.get('command')}`, {ev.get('date')}); MiniLM's from `{ev.get('minilm_report')}`. "
        "CA, PA, ASR in %, radius = the mean certified radius of the certified clean inputs (tokens). SmolLM2: "
        f"{first['n_clean']} clean + {first['n_triggered']} triggered test sentences per seed; MiniLM: "
        + ", ".join(sorted({f"{r['n_clean']} + {r['n_triggered']}" for r in mini.values()}) or ["-"])
        + ". Means over the seeds listed; the two models' victims are fine-tuned differently (LoRA on 1000 "
        "sentences vs. all weights on 2000), so the rows compare defenses within a model.",
        "",
        "| attack | defense | SmolLM2 seeds | CA | PA | ASR | radius | MiniLM seeds | CA | PA | ASR | radius |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ev["records"]:
        m = mini.get((r["attack"], r["defense"]))
        seeds = ",".join(map(str, r["seeds"]))
        mseeds = ",".join(map(str, m["seeds"])) if m else "-"
        lines.append(f"| {r['attack']} | {r['defense']} | {seeds} | {cell(r)}| {mseeds} | {cell(m)}|")
    return lines + [""]


def _finetune_commands(log: str | None) -> list[str]:
    if not log or not Path(log).is_file():
        return []
    return [
        ln.split("\t", 1)[1] if "\t" in ln else ln
        for ln in Path(log).read_text(errors="replace").splitlines()
        if ln.startswith("Command being timed:") or "Command being timed:" in ln
    ]


def render(res: dict) -> str:
    lines = ["# Decoder voters: SmolLM2-135M (Llama family) on SST-2", ""]
    lines += [f"- command: `{res['command']}`", f"- machine: {res['machine']}", f"- date: {res['date']}"]
    for c in res.get("finetune_commands", []):
        c = c.split('"')[1] if c.count('"') >= 2 else c.strip()  # /usr/bin/time -v: Command being timed: "..."
        lines.append(f"- fine-tune: `frs finetune {c.split('finetune ', 1)[-1]}`")
    lines.append("")
    ca = res.get("ca")
    if ca:
        lines += [
            "## Clean accuracy: plain LoRA against the parameter-smoothed ensemble",
            "",
            f"SST-2 test split, n = {ca['n']} sentences; K = {ca['k']} voters (seed {ca['seed']}), each voter's "
            "label on the unrandomized text, majority vote (a tie counts as wrong). No text randomization or "
            "fuzzing here: this isolates what BMPS (Eq. 4 in fine-tuning, Eq. 5 at inference) costs."
            + (f" Smoothed fine-tune: {ca['label']} (`{ca['report']}`)." if ca.get("label") else ""),
            "",
            "| model | CA (%) |",
            "|---|---|",
            f"| plain LoRA fine-tune (`--no-smoothing`) | {ca['ca_plain']:.2f} |",
            f"| smoothed fine-tune, centre model Clip_rho(theta) | {ca['ca_smoothed_centre']:.2f} |",
            f"| smoothed fine-tune, K = {ca['k']} voter majority vote | **{ca['ca_smoothed']:.2f}** |",
            f"| single voters (mean / min / max) | {ca['voter_ca']['mean']:.2f} / {ca['voter_ca']['min']:.2f} / "
            f"{ca['voter_ca']['max']:.2f} |",
            "",
            f"Difference ensemble - plain: {ca['ca_smoothed'] - ca['ca_plain']:+.2f} points (target: within 2). "
            f"Unanimous ensembles: {ca['unanimous_share']:.1f}% of sentences; ties: {ca['ensemble_ties']}. "
            f"Time: plain {ca['seconds']['plain']} s, smoothed (centre + {ca['k']} voters) "
            f"{ca['seconds']['smoothed']} s; voter pool: `{json.dumps(ca['voter_pool'])}`.",
            "",
        ]
    if res.get("ca_variants"):
        lines += _ca_variant_lines(res["ca_variants"])
    sg = res.get("sigma")
    if sg:
        lines += [
            "## Inference-phase sigma",
            "",
            f"The smoothed checkpoint's K = {sg['k']} voters with other inference sigmas (Eq. 5; the fine-tuning "
            f"sigma stays the checkpoint's), on {sg['n']} seeded test sentences (subset seed {sg['subset_seed']}).",
            "",
            "| inference sigma | ensemble CA (%) | mean voter CA (%) | ties | seconds |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['sigma']} | {r['ca_smoothed']:.2f} | {r['voter_ca_mean']:.2f} | {r['ties']} | {r['seconds']} |"
            for r in sg["rows"]
        ]
        lines.append("")
    v = res.get("vllm")
    if v:
        lines += [
            "## vLLM voters against torch voters",
            "",
            f"Voters {v['voters']} of the smoothed checkpoint{' `' + v['checkpoint'] + '`' if v.get('checkpoint') else ''} "
            f"on the first {v['texts']} test sentences "
            f"({v['jobs']} jobs): same label on {v['same_labels']} / {v['jobs']}, largest class-probability "
            f"difference {v['max_abs_prob_diff']:.2e} (bound 1e-3).",
            "",
        ]
    s = res.get("service")
    if s:
        lines += ["## Service (deployments/frs-smollm2.yaml, vLLM voters)", ""]
        for key, d in s.items():
            keep = {k: d[k] for k in d if k not in ("certificates", "file") and not isinstance(d[k], (list, dict))}
            lines.append(f"- {key} (`{d['file']}`): " + ", ".join(f"{k} {val}" for k, val in keep.items()))
            for e in d.get("events", []):
                lines.append(f"  - at {e['t']} s: killed {e['killed']} (pid {e['pid']}) with SIGKILL")
        lines.append("")
    ev = res.get("eval") or {}
    if ev:
        lines += ["## Attacks on the decoder (`frs eval`)", ""]
    if ev.get("records"):
        lines += _eval_lines(ev)
    if ev.get("note"):
        lines += [ev["note"], ""]
    for n in res.get("notes", []):
        lines += [f"Note: {n}", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", default="runs/smollm2-sst2-plain", help="LoRA checkpoint, --no-smoothing")
    ap.add_argument("--smoothed", default="runs/smollm2-sst2-bmps", help="LoRA checkpoint with smoothing")
    ap.add_argument("--data", default="sst2")
    ap.add_argument("--n", type=int, default=None, help="seeded random test sentences (default: all)")
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=32, help="texts per voter-pool call")
    ap.add_argument("--sigmas", default="0.01,0.005,0.002", help="inference sigmas of the sigma section")
    ap.add_argument("--sigma-n", type=int, default=300, help="seeded test sentences of the sigma section")
    ap.add_argument("--vllm-texts", type=int, default=64)
    ap.add_argument("--vllm-voters", default="0,1,3")
    ap.add_argument("--service-load", default=None, help="service_load.py JSON of a load run")
    ap.add_argument("--service-faults", default=None, help="service_load.py --faults JSON")
    ap.add_argument("--eval-report", default="docs/results/sst2_smollm2.json", help="frs eval report on SmolLM2")
    ap.add_argument("--minilm-report", default="docs/results/transplant.json", help="frs eval report on MiniLM")
    ap.add_argument("--eval-note", default=None, help="what the eval section leaves out")
    ap.add_argument("--finetune-log", default=None, help="log of the fine-tune runs (/usr/bin/time -v output)")
    ap.add_argument("--sections", default="ca,vllm,service")
    ap.add_argument("--ca-reports", nargs="*", default=[], help="ca-variants: llm.json-style reports, PATH[::LABEL]")
    ap.add_argument("--name", default="llm", help="report file names: NAME.md and NAME.json under --out")
    ap.add_argument("--save-votes", default=None, help="ca section: write per-sentence predictions to this .npz")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument(
        "--supersede-note", action="append", default=[], help="mark the earlier notes containing this text superseded"
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    from frs_ray.runtime import configure_process

    configure_process(engine="vllm" in sections, threads=args.threads)
    from frs_ray.data import load_dataset

    out = Path(args.out)
    path = out / f"{args.name}.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    test = load_dataset(args.data, "test")
    test = test.subset(args.n, seed=args.subset_seed)
    started = time.time()
    if "ca" in sections:
        res["ca"] = measure_ca(args, test)
        res["ca_plain"], res["ca_smoothed"] = res["ca"]["ca_plain"], res["ca"]["ca_smoothed"]
    if "ca-variants" in sections:
        res["ca_variants"] = read_ca_variants(args, res)
        res["ca"] = dict(res["ca_variants"][-1])
        res.pop("ca_head_lr", None)  # an older hand-kept summary of one variant, now a row of ca_variants
        res["ca_plain"], res["ca_smoothed"] = res["ca"]["ca_plain"], res["ca"]["ca_smoothed"]
    if "sigma" in sections:
        res["sigma"] = measure_sigma(args, test)
    if "vllm" in sections:
        res["vllm"] = measure_vllm(args, test)
        res["vllm_equals_torch"] = res["vllm"]["equal"]
    if "service" in sections:
        res["service"] = read_service(args)
    if "eval" in sections:
        res["eval"] = read_eval(args) | ({"note": args.eval_note} if args.eval_note else {})
    res["finetune_commands"] = _finetune_commands(args.finetune_log) or res.get("finetune_commands", [])
    command = shlex.join(["python", *sys.argv])
    res["command"] = f"{res['command']} ; then: {command}" if res.get("command") else command
    res["machine"] = _machine()
    res["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["wall_s"] = round(time.time() - started, 1)
    res["notes"] = [
        f"Superseded: {n}" if any(m in n for m in args.supersede_note) and not n.startswith("Superseded") else n
        for n in res.get("notes", [])
    ] + args.note
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(render(res))
    print(json.dumps({k: res[k] for k in ("ca_plain", "ca_smoothed", "vllm_equals_torch") if k in res}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
