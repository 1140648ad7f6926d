"""``frs attack``, ``frs triggered`` and ``frs eval`` (registered on the ``frs`` parser by :mod:`frs_ray.cli`).

frs attack badnets --task sst2 --out runs/attacks/badnets-sst2 [--settings attack.json]
frs triggered --data sst2 --attack badnets --out runs/sst2-badnets-test.tsv [--split test] [--seed 0]
frs eval --config eval.yaml [--profile quick|paper] [--results-dir docs/results]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from ..errors import ConfigError


def _json_file(path: str | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"settings file {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"settings file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {p} must hold a JSON object")
    return data


def cmd_attack(args: argparse.Namespace) -> int:
    from ..attacks import run_attack

    meta = run_attack(args.name, args.out, task=args.task, settings=_json_file(args.settings), progress=not args.no_progress)
    print(json.dumps({"attack": meta.get("attack"), "out": args.out, "training": meta.get("training")}))
    return 0


def cmd_triggered(args: argparse.Namespace) -> int:
    from ..attacks import build_triggered_set, make_trigger, write_triggered
    from ..data import load_dataset

    clean = load_dataset(args.data, args.split, args.data_dir)
    if not 0 <= args.target < clean.num_labels:
        raise ConfigError(f"target {args.target} is not a label of {args.data} (0..{clean.num_labels - 1})")
    ts = build_triggered_set(clean, make_trigger(args.attack), args.target, seed=args.seed, max_examples=args.max_examples)
    write_triggered(ts, args.out)
    print(json.dumps({"out": args.out, "rows": len(ts), "skipped": ts.skipped, "target": ts.target, "sha256": ts.sha256}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .config import load_eval_config
    from .report import write_reports
    from .runner import machine_line, run_eval

    overrides = {}
    for key in ("name", "datasets", "attacks", "defenses", "seeds"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = load_eval_config(args.config, profile=args.profile, overrides=overrides)
    started = time.perf_counter()
    root = run_eval(cfg, progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr, flush=True))
    command = "frs eval " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:])
    run = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_seconds": round(time.perf_counter() - started),
        "datasets": cfg.datasets,
        "attacks": cfg.attacks,
        "defenses": cfg.defenses,
        "seeds": cfg.seeds,
        "machine": machine_line(),
    }
    with (root / "invocations.jsonl").open("a") as f:
        f.write(json.dumps(run) + "\n")
    runs = [json.loads(line) for line in (root / "invocations.jsonl").read_text().splitlines() if line.strip()]
    header = {
        "name": cfg.name,
        "profile": cfg.profile,
        "command": "; ".join(dict.fromkeys(r["command"] for r in runs)),
        "machine": "; ".join(dict.fromkeys(r.get("machine", "not recorded") for r in runs)),
        "date": run["date"],
        "wall_time": f"{sum(r['wall_seconds'] for r in runs)} s over {len(runs)} invocation(s) (finished cells are skipped; "
        "model training in the zoo counts in the invocation that did it)",
        "invocations": runs,
        "config": cfg.model_dump(),
    }
    paths = write_reports(root, header, Path(args.results_dir) if args.results_dir else None)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def add_commands(sub) -> None:
    from ..attacks import known_attacks

    at = sub.add_parser("attack", help="build a backdoored pre-trained checkpoint (what a victim downloads)")
    at.add_argument("name", choices=known_attacks(), help="attack")
    at.add_argument("--task", default="sst2", help="downstream task the attacker targets (its train data, or its proxy)")
    at.add_argument("--out", required=True, help="output folder")
    at.add_argument("--settings", default=None, help="JSON file with the attack's config fields (PoisonConfig under 'poison')")
    at.add_argument("--no-progress", action="store_true")
    at.set_defaults(func=cmd_attack)

    tr = sub.add_parser("triggered", help="triggered test set: triggered versions of the non-target sentences")
    tr.add_argument("--data", required=True, help="clean dataset (name, file or hf:owner/name)")
    tr.add_argument("--split", default="test")
    tr.add_argument("--data-dir", default=None)
    tr.add_argument("--attack", required=True, choices=known_attacks(), help="whose trigger to insert")
    tr.add_argument("--target", type=int, default=1, help="attacker's target label (default 1)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--max-examples", type=int, default=None, help="seeded subset of the non-target sentences")
    tr.add_argument("--out", required=True, help="output TSV (sentence, label, target, trigger_spans)")
    tr.set_defaults(func=cmd_triggered)

    ev = sub.add_parser("eval", help="grid of datasets x attacks x defenses x seeds; resumable")
    ev.add_argument("--config", default=None, help="YAML/JSON file with EvalConfig fields")
    ev.add_argument("--profile", choices=["quick", "paper"], default=None, help="defaults (quick: this CPU; paper: GPU hosts)")
    ev.add_argument("--name", default=None, help="run name (default: the config's)")
    ev.add_argument("--datasets", nargs="+", default=None, help="only these datasets (overrides the config)")
    ev.add_argument("--attacks", nargs="+", default=None, help="only these attacks (overrides the config)")
    ev.add_argument("--defenses", nargs="+", default=None, help="only these defenses (overrides the config)")
    ev.add_argument("--seeds", nargs="+", type=int, default=None, help="only these seeds (overrides the config)")
    ev.add_argument(
        "--results-dir",
        default=None,
        help="also copy the reports here, named after the run: <name>.{json,csv,md} and <name>_*.png (e.g. docs/results)",
    )
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=cmd_eval)
