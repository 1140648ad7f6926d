"""Ray Tune study of the FRS hyperparameters K, sigma, H, MCTS budget (and omega_H, omega_M, Lambda).

    python tune/sweep.py --quick                       # tiny sizes: tests the whole pipeline
    python tune/sweep.py --model runs/attacks/badnets-minilm --train-data sst2 \\
        --triggered runs/attacks/badnets-sst2-test.tsv  # full grid of Appendix H (see tune/README.md)
    python tune/sweep.py --mode optuna --num-samples 24 ...   # multi-objective search (CA up, ASR down, radius up)
    python tune/sweep.py --out runs/tune/NAME --resume # continue an interrupted study

Each trial fine-tunes the pre-trained model with parameter smoothing for its (sigma, H) - or reuses the cached
checkpoint of an earlier trial with the same (sigma, H) - then certifies a clean test subset (CA, radius) and a
triggered subset (PA, ASR) with FRS at its K, budget and omegas. Outputs in the study folder: results.csv,
results.md, tradeoff.png, best_config.yaml (a Serve config: `serve run <it>`), study.json.
User mistakes print ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import study as S  # noqa: E402

from frs_ray.errors import ConfigError, FRSError  # noqa: E402

PAPER = {k: str(v) for k, v in S.PAPER_DEFAULTS.items()}  # the paper's values, as the config models define them
# Full mode: the ranges of Appendix H / Table 8 around the defaults of Appendix B.2.4.
FULL = {
    "K": "10,20,40,80",
    "sigma": "0.005,0.01,0.02,0.04",
    "H": PAPER["H"],
    "budget": PAPER["budget"],
    "omega_h": PAPER["omega_h"],
    "omega_m": PAPER["omega_m"],
    "max_distance": PAPER["max_distance"],
    "n_max": PAPER["n_max"],
    "epochs": 3,
    "lr": 1e-4,
    "max_length": 128,
    "train_n": None,
    "clean_n": 200,
    "triggered_n": 200,
    "dev_n": 200,
    "num_samples": 16,
    "model": "minilm",
    "train_data": None,
}
# Quick mode: real model, real poisoned data, tiny sizes (the pipeline, not results).
QUICK = {
    "K": "5,8",
    "sigma": "0.005,0.02",
    "H": "4",
    "budget": "3",
    "omega_h": PAPER["omega_h"],
    "omega_m": PAPER["omega_m"],
    "max_distance": PAPER["max_distance"],
    "n_max": PAPER["n_max"],
    "epochs": 1,
    "lr": 1e-4,
    "max_length": 64,
    "train_n": 64,
    "clean_n": 8,
    "triggered_n": 8,
    "dev_n": 16,
    "num_samples": 4,
    "model": "minilm",
    "train_data": "poisoned/badnets/sst2",
}
VALUE_FLAGS = {
    "K": int,
    "sigma": float,
    "H": int,
    "budget": int,
    "omega_h": float,
    "omega_m": float,
    "max_distance": float,
    "n_max": int,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("study")
    g.add_argument("--quick", action="store_true", help="tiny study for tests and CI (tune/README.md)")
    g.add_argument("--name", default=None, help="study name (default: quick, or <data>-<model folder name>)")
    g.add_argument("--out", default=None, help="study folder (default runs/tune/<name>)")
    g.add_argument("--resume", action="store_true", help="continue the study in --out (its saved settings are used)")
    g.add_argument(
        "--fresh", action="store_true", help="rerun every trial of an existing study folder; the fine-tune cache is kept"
    )
    g.add_argument("--mode", choices=["grid", "optuna"], default="grid", help="grid, or Optuna multi-objective search")
    g.add_argument(
        "--design",
        choices=["product", "oat"],
        default="product",
        help="grid: every combination, or one parameter at a time around the paper's defaults (Table 8's shape)",
    )
    g.add_argument("--num-samples", type=int, default=None, help="Optuna trials (default 16; quick 4)")
    g.add_argument("--cache", default=None, help="fine-tune cache folder (default <out>/finetune); may be shared by studies")
    g.add_argument(
        "--publish",
        default=None,
        metavar="DIR",
        help="also copy results.md/.csv/.png to DIR/tune.{md,csv} and DIR/tune_tradeoff.png",
    )
    d = p.add_argument_group("model and data")
    d.add_argument(
        "--model", default=None, help="pre-trained model: 'minilm' or a model folder (e.g. `frs attack ... --out DIR`)"
    )
    d.add_argument(
        "--train-data", default=None, help="fine-tuning data: dataset spec or file (default --data; quick: poisoned/badnets/sst2)"
    )
    d.add_argument("--data", default="sst2", help="clean evaluation dataset (default sst2)")
    d.add_argument("--split", default="test", help="split of --data for CA and radius (default test)")
    d.add_argument("--dev-split", default="dev", help="split of --data for the per-epoch dev accuracy (ASHA)")
    d.add_argument("--data-dir", default=None, help="data folder (default $FRS_DATA_DIR, then ../shared/data)")
    d.add_argument(
        "--triggered",
        default=None,
        help="triggered test TSV (sentence, label, [target, trigger_spans]); default <data-dir>/poisoned/badnets/<data>/test.tsv",
    )
    d.add_argument(
        "--triggered-labels",
        choices=["auto", "original", "target"],
        default="auto",
        help="meaning of the label column: original label (target column) or the target for every row "
        "(the reference poisoned/*/test.tsv); auto: original if a target column exists",
    )
    d.add_argument("--target", type=int, default=None, help="target class when the triggered file has no target column")
    v = p.add_argument_group(
        "searched values: comma-separated lists; with --mode optuna, K, budget, omega-h, omega-m and "
        "max-distance and n-max may also be ranges LOW:HIGH"
    )
    v.add_argument("--K", default=None, help="voters K (full: 10,20,40,80; quick: 5,8)")
    v.add_argument("--sigma", default=None, help="parameter noise sigma (full: 0.005,0.01,0.02,0.04)")
    v.add_argument("--H", default=None, help=f"smoothed top layers H (full: {PAPER['H']}, clamped to the model's depth)")
    v.add_argument("--budget", default=None, help=f"MCTS budget (full: {PAPER['budget']})")
    v.add_argument("--omega-h", dest="omega_h", default=None, help=f"omega_H (default {PAPER['omega_h']})")
    v.add_argument("--omega-m", dest="omega_m", default=None, help=f"omega_M (default {PAPER['omega_m']})")
    v.add_argument("--max-distance", dest="max_distance", default=None, help=f"Lambda (default {PAPER['max_distance']})")
    v.add_argument(
        "--n-max",
        dest="n_max",
        default=None,
        help="sequential CERTIFY: most estimation votes per text, 0 = the fixed protocol (default 0)",
    )
    t = p.add_argument_group("fine-tuning and evaluation")
    t.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (full 3, quick 1)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-4, the project's MiniLM choice)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--max-length", type=int, default=None, help="max tokens (full 128, quick 64); longer eval texts are skipped")
    t.add_argument("--train-n", type=int, default=None, help="seeded subset of the training data (full: all; quick 64)")
    t.add_argument("--clean-n", type=int, default=None, help="clean test sentences certified per trial (full 200)")
    t.add_argument("--triggered-n", type=int, default=None, help="triggered sentences certified per trial (full 200)")
    t.add_argument("--dev-n", type=int, default=None, help="dev sentences for the per-epoch accuracy (full 200)")
    t.add_argument("--seed", type=int, default=42, help="fine-tuning and subset seed")
    t.add_argument(
        "--cert-seed",
        type=int,
        default=S.StudySettings.model_fields["cert_seed"].default,
        help="certification seed (voter noise, randomization)",
    )
    t.add_argument(
        "--alpha",
        type=float,
        default=S.StudySettings.model_fields["alpha"].default,
        help="1 - confidence of the Clopper-Pearson bound (default: the paper's 0.05)",
    )
    t.add_argument("--n-estimate", type=int, default=None, help="votes for the Clopper-Pearson bound (default K)")
    r = p.add_argument_group("resources and scheduling")
    r.add_argument("--cpus-per-trial", type=float, default=1.0, help="tune.with_resources CPUs per trial (default 1)")
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start a private local instance)")
    r.add_argument("--no-asha", action="store_true", help="no early stopping of fine-tunes")
    r.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    r.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    return p


def _log(msg: str) -> None:
    print(f"[sweep] {msg}", flush=True)


def settings_from_args(args: argparse.Namespace, out: Path) -> S.StudySettings:
    from frs_ray.backends.hf import resolve_model_path
    from frs_ray.data import default_data_dir

    base = QUICK if args.quick else FULL
    pick = lambda key: getattr(args, key) if getattr(args, key) is not None else base[key]  # noqa: E731
    values = {k: S.parse_list(pick(k), kind, k.replace("_", "-")) for k, kind in VALUE_FLAGS.items()}
    for flag, value, low in (
        ("epochs", pick("epochs"), 1),
        ("batch-size", args.batch_size, 1),
        ("clean-n", pick("clean_n"), 1),
        ("triggered-n", pick("triggered_n"), 1),
        ("dev-n", pick("dev_n"), 1),
        ("num-samples", pick("num_samples"), 1),
        ("max-length", pick("max_length"), 8),
        ("grace-period", args.grace_period, 1),
        ("reduction-factor", args.reduction_factor, 2),
    ):
        if value < low:
            raise ConfigError(f"--{flag} must be >= {low}, got {value}")
    if args.train_n is not None and args.train_n < 1:
        raise ConfigError(f"--train-n must be >= 1, got {args.train_n}")
    if args.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if not (0 < args.alpha < 1):
        raise ConfigError(f"--alpha must be in (0, 1), got {args.alpha}")
    S.validate_values(values)
    if args.mode == "grid":
        S.grid_points(values, args.design)  # ranges are for --mode optuna: refuse them before any work
    model = pick("model")
    model_path = resolve_model_path(model)
    depth = S.model_depth(model_path)
    if depth is not None and not S.is_range(values["H"]) and max(values["H"]) > depth:
        clamped = sorted({min(h, depth) for h in values["H"]})
        _log(f"H {values['H']} clamped to the model's depth {depth}: {clamped}")
        values["H"] = clamped
    data_dir = Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir()
    if data_dir is None:
        raise ConfigError("no data folder: pass --data-dir or set FRS_DATA_DIR")
    from frs_ray.data import load_dataset

    load_dataset(args.data, args.split, data_dir)  # unknown dataset / missing split: a DataError now, not in a trial
    triggered = args.triggered
    if triggered is None:
        ref = data_dir / "poisoned" / "badnets" / args.data / "test.tsv"
        if not ref.is_file():
            raise ConfigError(f"--triggered is required for dataset {args.data!r} (no reference file {ref})")
        triggered = str(ref)
    name = args.name or ("quick" if args.quick else f"{args.data}-{Path(str(model)).name}")
    return S.StudySettings(
        name=name,
        out=str(out),
        mode=args.mode,
        design=args.design,
        model=str(model),
        model_path=str(Path(model_path).resolve()),
        model_depth=depth,
        train_data=pick("train_data") or args.data,
        data=args.data,
        split=args.split,
        dev_split=args.dev_split,
        data_dir=str(data_dir),
        triggered=str(Path(triggered).resolve()),
        triggered_labels=args.triggered_labels,
        target=args.target,
        values=values,
        epochs=pick("epochs"),
        lr=pick("lr"),
        batch_size=args.batch_size,
        max_length=pick("max_length"),
        train_n=pick("train_n"),
        clean_n=pick("clean_n"),
        triggered_n=pick("triggered_n"),
        dev_n=pick("dev_n"),
        seed=args.seed,
        cert_seed=args.cert_seed,
        alpha=args.alpha,
        n_estimate=args.n_estimate,
        cpus_per_trial=args.cpus_per_trial,
        num_samples=pick("num_samples"),
        asha=not args.no_asha,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        cache_dir=str(Path(args.cache).resolve()) if args.cache else str(out / "finetune"),
        quick=args.quick,
    )


def run(args: argparse.Namespace) -> int:
    """The study's steps: open the study folder, load the data, record the run, run the trials, write the outputs."""
    S.prepare_environment()
    started_wall, started = S.now_stamp(), time.perf_counter()
    out = S.default_folder(args.out, args.name or ("quick" if args.quick else None))
    if args.resume:
        if args.fresh:
            raise ConfigError("--resume and --fresh exclude each other")
        s, history = S.resume_study(out, _log)
    else:
        s, history = S.new_study(out, args.fresh, args.cache, lambda folder: settings_from_args(args, folder))
    out = Path(s.out) if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    Path(s.cache_dir).mkdir(parents=True, exist_ok=True)

    from frs_ray.runtime import configure_process

    configure_process()
    data = S.prepare_eval_data(s, _log)
    from frs_ray.data import load_dataset

    train = load_dataset(s.train_data, "train", s.data_dir)
    points = S.grid_points(s.values, s.design) if s.mode == "grid" else None
    command = shlex.join(["python", "tune/sweep.py", *sys.argv[1:]])
    run_rec = {"run_id": s.run_id, "command": command, "started": started_wall, "resumed": bool(args.resume)}
    study = S.study_record(s, data, train, points, history, run_rec)
    (out / "study.json").write_text(json.dumps(study, indent=2, default=str))
    n_trials, n_ft = S.trial_count(s, points)
    _log(
        f"study {s.name}: {n_trials} trial(s) ({s.mode}{', ' + s.design if s.mode == 'grid' else ''}), "
        f"at most {n_ft} fine-tune(s) of {s.epochs} epoch(s), {s.cpus_per_trial:g} CPU per trial; folder {out}"
    )

    rows, counts = S.run_trials(
        s,
        data,
        points,
        out,
        resume=args.resume,
        address=args.address,
        num_cpus=args.num_cpus,
        pythonpath=[HERE, HERE.parent],
        log=_log,
    )
    S.finish_run_record(run_rec, rows, counts, s.run_id, started)
    study["runs"][-1] = run_rec
    study["trials"] = counts
    paths = S.write_outputs(rows, s, study)
    if args.publish:
        S.publish(paths, Path(args.publish))
    S.log_summary(run_rec, counts, paths, study.get("best"), _log)
    return S.exit_status(counts, out)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except FRSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue with `python tune/sweep.py --out <study folder> --resume`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
