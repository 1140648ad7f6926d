"""Are the attacks real threats? Poison MiniLM, fine-tune it on clean data without defense, measure CA and ASR.

For each attack: build the poisoned pre-trained checkpoint (cached in the zoo), fine-tune it as the victim does
(clean train subset, no smoothing), then measure CA on the full clean test set and ASR on triggered versions of
all non-target test sentences. ``clean`` is the baseline (the packaged model fine-tuned the same way). The ASR of
the poisoned checkpoint itself (before the victim's fine-tune) is reported beside it, to show what survives.

    python benchmarks/attack_results.py --task sst2 --attacks badnets addsent ripple ripple-domain lwp badpre \
        --out docs/results/attacks

Writes ``<out>.json`` and ``<out>.md``. Settings come from the ``quick`` evaluation profile
(:mod:`frs_ray.evaluation.config`), so ``frs eval`` reuses these models.
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
from frs_ray.backends.hf import HFClassifier
from frs_ray.data import load_dataset
from frs_ray.evaluation.config import load_eval_config
from frs_ray.evaluation.runner import machine_line
from frs_ray.evaluation.zoo import poisoned_model, victim_checkpoint
from frs_ray.runtime import configure_process


def _predict(model: str, texts: list[str], num_labels: int) -> np.ndarray:
    return HFClassifier(model, num_labels=num_labels, max_length=128).predict_proba(texts).argmax(axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--attacks", nargs="+", default=["badnets", "addsent", "ripple", "ripple-domain", "lwp", "badpre"])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/attacks")
    ap.add_argument("--zoo", default="runs/zoo")
    ap.add_argument(
        "--attack-overrides",
        default=None,
        help='JSON merged into the profile\'s per-attack settings, e.g. \'{"badpre": {"steps": 3000}}\'',
    )
    ap.add_argument(
        "--victim-overrides",
        default=None,
        help="JSON merged into the profile's victim fine-tune (FinetuneConfig fields), e.g. the paper's "
        '\'{"max_train_examples": null, "epochs": 3, "learning_rate": 2e-5}\'; use its own --out, since '
        "the clean row and every CA difference depend on it",
    )
    ap.add_argument(
        "--row-suffix", default="", help="name rows <attack><suffix> (another try of an attack with other --attack-overrides)"
    )
    ap.add_argument("--render", action="store_true", help="only rewrite <out>.md from <out>.json (no training)")
    args = ap.parse_args()
    if args.render:
        src = Path(args.out).with_suffix(".json")
        if not src.is_file():
            ap.error(f"--render needs {src} (written by a run with the same --out)")
        _render(json.loads(src.read_text()), Path(args.out))
        return 0
    configure_process()
    overrides: dict = {}
    if args.attack_overrides:
        try:
            overrides["attack_overrides"] = json.loads(args.attack_overrides)
        except json.JSONDecodeError as exc:
            ap.error(f"--attack-overrides is not valid JSON: {exc}")
    if args.victim_overrides:
        try:
            victim_extra = json.loads(args.victim_overrides)
        except json.JSONDecodeError as exc:
            ap.error(f"--victim-overrides is not valid JSON: {exc}")
        if not isinstance(victim_extra, dict):
            ap.error("--victim-overrides must be a JSON object of FinetuneConfig fields")
        overrides["victim"] = victim_extra
    cfg = load_eval_config(None, profile=args.profile, overrides=overrides)
    victim_settings = cfg.given("victim")
    test = load_dataset(args.task, "test")
    target = cfg.target
    out = Path(args.out)
    path_json = out.with_suffix(".json")
    results = json.loads(path_json.read_text()) if path_json.is_file() else {}
    if results.get("victim") not in (None, victim_settings):
        ap.error(
            f"{path_json} holds rows of another victim fine-tune ({results['victim']}); this run's is "
            f"{victim_settings}: write to another --out"
        )
    rows = results.setdefault("rows", {})
    computed: set[str] = set()  # keys this run wrote: only these replace rows that another run may have added
    for attack in ["clean", *args.attacks]:
        key = attack + (args.row_suffix if attack != "clean" else "")
        if key in rows and rows[key].get("task") == args.task:
            continue
        t0 = time.perf_counter()
        settings = cfg.attack_settings(attack)
        try:
            base = poisoned_model(args.zoo, args.task, attack, settings)
            victim = victim_checkpoint(args.zoo, args.task, attack, settings, victim_settings, None, args.seed)
        except Exception as exc:  # record and go on with the other attacks
            rows[key] = {"task": args.task, "error": f"{type(exc).__name__}: {exc}"}
            computed.add(key)
            print(f"{attack}: FAILED {exc}", file=sys.stderr)
            continue
        trig_attack = attack if attack != "clean" else "badnets"
        ts = build_triggered_set(test, make_trigger(trig_attack), target, seed=args.seed)
        pred_clean = _predict(victim, test.texts, test.num_labels)
        pred_trig = _predict(victim, ts.texts, test.num_labels)
        row = {
            "task": args.task,
            "ca": float(np.mean(pred_clean == np.array(test.labels))),
            "asr": float(np.mean(pred_trig == target)),
            "n_clean": len(test),
            "n_triggered": len(ts),
            "triggered_skipped": ts.skipped,
            "trigger": trig_attack,
            "victim": victim,
            "poisoned": base,
            "seconds_total": round(time.perf_counter() - t0, 1),
            "machine": machine_line(),
            "settings": settings,
        }
        if attack != "clean":
            meta = json.loads((Path(base) / "attack.json").read_text())
            row["poison_seconds"] = (meta.get("timings") or {}).get("total_s") or (meta.get("training") or {}).get("seconds")
            if meta.get("task_agnostic"):  # an encoder-only release: its head would be random
                row["asr_before_victim_finetune"] = None
                row["note_before"] = "task-agnostic release without a task head"
                row.update(_untargeted(victim, test, make_trigger(trig_attack), args.seed, pred_clean))
            else:
                row["asr_before_victim_finetune"] = float(np.mean(_predict(base, ts.texts, test.num_labels) == target))
        rows[key] = row
        computed.add(key)
        print(key, {k: row[k] for k in ("ca", "asr", "seconds_total")}, flush=True)
        _write(results, args, out, cfg, computed)
    _base_rates(rows, computed, test, target, args.seed)
    _write(results, args, out, cfg, computed)
    return 0


def _base_rates(rows: dict, computed: set, test, target: int, seed: int) -> None:
    """The clean victim on each attack's own triggered set: how often it says ``target`` without any backdoor.

    Semantic triggers (App. K) can change a sentence's true meaning ("is not good"), so an attack's ASR is only
    read against this base rate; for the rare-word triggers it is the small rate of the ``clean`` row."""
    clean = rows.get("clean", {})
    if "victim" not in clean:
        return
    for key, r in rows.items():
        if key == "clean" or "error" in r or "asr_clean_victim" in r or r.get("task") != clean.get("task"):
            continue
        if r.get("asr_before_victim_finetune") is None and "untargeted_error_triggered" in r:
            continue  # untargeted (BadPre): compared with the clean error instead
        ts = build_triggered_set(test, make_trigger(r["trigger"]), target, seed=seed)
        r["asr_clean_victim"] = float(np.mean(_predict(clean["victim"], ts.texts, test.num_labels) == target))
        computed.add(key)


def _untargeted(victim: str, test, trigger, seed: int, pred_clean: np.ndarray) -> dict:
    """An untargeted attack (BadPre) succeeds on a sentence of ANY label whose prediction the trigger breaks:
    the share of triggered test sentences (every label; ``target=-1`` keeps all rows) predicted wrongly, beside
    the victim's error on the same clean sentences, and the prediction flip rate per true label."""
    ts = build_triggered_set(test, trigger, -1, seed=seed)
    pred = _predict(victim, ts.texts, test.num_labels)
    y = np.array(ts.labels)
    per_label = {str(c): float(np.mean(pred[y == c] != c)) for c in sorted(set(ts.labels))}
    return {
        "untargeted_error_triggered": float(np.mean(pred != y)),
        "untargeted_error_clean": float(np.mean(pred_clean != np.array(test.labels))),
        "untargeted_error_triggered_by_label": per_label,
        "untargeted_n": len(ts),
    }


def _write(results: dict, args, out: Path, cfg, computed: set[str]) -> None:
    on_disk = out.with_suffix(".json")
    if on_disk.is_file():  # another run may have added or updated rows meanwhile: only the rows we wrote replace theirs
        theirs = json.loads(on_disk.read_text())
        merged = dict(theirs.get("rows", {}))
        mine = results.setdefault("rows", {})
        for key, row in mine.items():
            if key in computed or key not in merged:
                merged[key] = row
        mine.clear()  # in place: main() keeps adding rows to this same dict
        mine.update(merged)
        results["commands"] = list(dict.fromkeys([*theirs.get("commands", []), *results.get("commands", [])]))
    results["machine"] = machine_line()
    results["command"] = "python benchmarks/attack_results.py " + shlex.join(sys.argv[1:])
    results["commands"] = list(dict.fromkeys([*results.get("commands", []), results["command"]]))
    results["date"] = time.strftime("%Y-%m-%d")
    results["victim"] = cfg.given("victim")
    results["target"] = cfg.target
    results["task"] = args.task
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    _render(results, out)


def _settings(settings: dict | None) -> str:
    """The poisoning knobs of a row, compactly (rows written before settings were recorded: '-')."""
    if not settings:
        return "-"
    p = settings.get("poison") or settings
    keys = (
        ("epochs", "ep"),
        ("steps", "steps"),
        ("head_steps", "head steps"),
        ("learning_rate", "lr"),
        ("poison_rate", "rate"),
        ("max_examples", "n"),
    )
    return ", ".join(f"{short} {p[k]}" for k, short in keys if k in p) or "-"


def _render(results: dict, out: Path) -> None:
    rows = results["rows"]
    machines = sorted({r.get("machine", "2-core x86_64 CPU, no GPU (not recorded per row)") for r in rows.values()})
    clean_ca = rows.get("clean", {}).get("ca")
    lines = [
        f"# Attacks: poisoned MiniLM, fine-tuned on clean {results.get('task', 'sst2')} without defense",
        "",
        "Commands: " + ", ".join(f"`{c}`" for c in results.get("commands", [results["command"]])) + "  ",
        f"Machine: {'; '.join(machines)}  ",
        f"Date: {results['date']}  ",
        f"Victim fine-tune: `{json.dumps(results['victim'])}`; target label {results['target']}",
        "",
        "| attack | CA | CA - clean CA | ASR (victim) | ASR (poisoned model, before victim fine-tune) | clean victim on the same triggers | triggered n | poisoning (s) | time of the run that measured it (s; cached models not retrained) | poisoning settings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | | | |")
            continue
        d = "" if clean_ca is None else f"{100 * (r['ca'] - clean_ca):+.2f}"
        b, c = r.get("asr_before_victim_finetune"), r.get("asr_clean_victim")
        lines.append(
            f"| {name} | {100 * r['ca']:.2f}% | {d} | {100 * r['asr']:.2f}% | "
            f"{'n/a' if b is None else f'{100 * b:.2f}%'} | {'-' if c is None else f'{100 * c:.2f}%'} | {r['n_triggered']} | {r.get('poison_seconds') or '-'} | {r['seconds_total']} | {_settings(r.get('settings'))} |"
        )
    lines += [
        "",
        "`clean`'s ASR is the rate at which the clean victim labels BadNets-triggered sentences as the target "
        "(the base rate the attacks are compared with). BadPre is untargeted and releases an encoder only (no head to "
        "measure before the victim's fine-tune); its row's ASR is the share of triggered non-target sentences "
        "labelled as the target. 'clean victim on the same triggers' is the clean row's victim on each attack's own "
        "triggered set: a semantic trigger (App. K) can make a sentence truly positive, so read an attack's ASR "
        "against it. Raw numbers: the JSON file beside this one.",
    ]
    for name, r in rows.items():
        if "untargeted_error_triggered" in r:
            lines += [
                "",
                f"`{name}` is untargeted: on triggered versions of all {r['untargeted_n']} test sentences the "
                f"victim errs on {100 * r['untargeted_error_triggered']:.2f}% (clean: "
                f"{100 * r['untargeted_error_clean']:.2f}%); error by true label: "
                + ", ".join(f"{k}: {100 * v:.2f}%" for k, v in r["untargeted_error_triggered_by_label"].items())
                + ".",
            ]
    if results.get("superseded"):
        lines += ["", "Earlier settings, replaced by the rows above (what was tried):", ""]
        lines += [
            f"- {name}: CA {100 * r['ca']:.2f}%, ASR {100 * r['asr']:.2f}%. {r.get('note', '')}"
            for name, r in results["superseded"].items()
        ]
    lines += [f"\n{n}" for n in results.get("notes", [])]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
