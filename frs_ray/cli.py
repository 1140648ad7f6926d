"""The ``frs`` command: fine-tune, certify, fuzz, classify through the service, attack, evaluate.

    frs finetune --model minilm --data sst2 --out runs/sst2 [--no-smoothing] [--epochs E] [--seed S] [--lora]
    frs certify  --checkpoint runs/sst2 --input texts.txt|- --out certs.jsonl|- [--k K] [--budget B] [--alpha A]
                 [--n-select N] [--n-estimate N]
                 [--voter-backend torch|vllm]
    frs fuzz     --checkpoint runs/sst2 --text "..." --budget B
    frs classify --text "..." --url http://127.0.0.1:8000           (a running service, frs_ray.serving.client)
    frs attack badnets --task sst2 --out runs/attacks/badnets      (see frs_ray/evaluation/commands.py)
    frs triggered --data sst2 --attack badnets --out test-badnets.tsv
    frs eval --config eval.yaml --profile quick

The command runs offline (``HF_HUB_OFFLINE=1`` unless the variable is set already) and quiet, and may host a vLLM
engine in its own process: :func:`frs_ray.runtime.configure_process` at the start of :func:`main`.

User mistakes (bad files, bad values, unusable texts) print ``error: ...`` and exit with status 2; a
certify run with some unusable lines writes an ``error`` record for each of them, certifies the rest and
exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import FRSError
from .runtime import configure_process


def _load_overrides(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FRSError(f"config file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FRSError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FRSError(f"config file {path} must hold a JSON object")
    return data


def _merge(base: dict[str, Any], **flags: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in flags.items():
        if value is not None:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------- finetune
def cmd_finetune(args: argparse.Namespace) -> int:
    from .config import FinetuneConfig, build
    from .data import load_dataset

    raw = _merge(
        _load_overrides(args.config),
        model=args.model,
        data=args.data,
        data_dir=args.data_dir,
        epochs=args.epochs,
        seed=args.seed,
        max_train_examples=args.max_train_examples,
        learning_rate=args.lr,
        batch_size=args.batch_size,
    )
    smoothing = dict(raw.get("smoothing", {}))
    if args.no_smoothing:
        smoothing["finetune_mode"] = "none"
    for key, value in (
        ("sigma", args.sigma),
        ("top_h", args.top_h),
        ("finetune_mode", args.mode),
        ("data_noise", args.data_noise),
        ("new_head", args.new_head),
    ):
        if value is not None:
            smoothing[key] = value
    raw["smoothing"] = smoothing
    if args.lora or args.head_lr is not None:
        raw["lora"] = raw.get("lora") or {}
    if args.head_lr is not None:
        raw["lora"]["head_learning_rate"] = args.head_lr
    cfg = build(FinetuneConfig, raw)
    from .smoothing.finetune import finetune

    train = load_dataset(cfg.data, "train", cfg.data_dir).subset(cfg.max_train_examples, seed=cfg.seed)
    meta = finetune(cfg, train, args.out, device=args.device, progress=not args.no_progress)
    print(json.dumps({"checkpoint": str(args.out), "examples": len(train), **meta["training"]}))
    return 0


# ---------------------------------------------------------------------------------------------- certify
def _certify_config(args: argparse.Namespace):
    from .config import CertifyConfig, build

    raw = _merge(
        _load_overrides(args.config),
        k=args.k,
        alpha=args.alpha,
        seed=args.seed,
        n_select=getattr(args, "n_select", None),
        n_estimate=getattr(args, "n_estimate", None),
        n_max=getattr(args, "n_max", None),
        target_radius=getattr(args, "target_radius", None),
        target_kind=getattr(args, "target_kind", None),
    )
    if getattr(args, "no_fuzz", False):
        raw["fuzz"] = False
    fuzzing = dict(raw.get("fuzzing", {}))
    if args.budget is not None:
        fuzzing["budget"] = args.budget
    raw["fuzzing"] = fuzzing
    randomize = dict(raw.get("randomize", {}))
    for key in ("omega_m", "omega_h", "max_distance", "span_rate"):
        if getattr(args, key, None) is not None:
            randomize[key] = getattr(args, key)
    raw["randomize"] = randomize
    if getattr(args, "voter_backend", None) is not None:
        raw["voters"] = {**raw.get("voters", {}), "backend": args.voter_backend}
    return build(CertifyConfig, raw)


def _write_lines(dest: str, records: Sequence[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text(text, encoding="utf-8")


def cmd_certify(args: argparse.Namespace) -> int:
    from .data import read_text_lines

    cfg = _certify_config(args)
    texts = read_text_lines(args.input)
    if not texts:
        raise FRSError(f"input {args.input} holds no texts")
    from .certify.smooth import FRSClassifier

    clf = FRSClassifier.from_checkpoint(args.checkpoint, cfg, device=args.device)
    if getattr(args, "span_check", "none") != "none":
        from .fuzzing.checks import build_span_check, describe_span_check

        clf.span_filter = build_span_check(
            clf,
            args.span_check,
            args.checkpoint,
            threshold=args.span_check_threshold,
            fluency_threshold=args.span_check_fluency_threshold,
            lm=args.span_check_lm,
            data=args.span_check_data,
            m=args.span_check_m,
            grow=args.span_check_grow,
            combine=args.span_check_combine,
            length_strata=tuple(args.span_check_length_strata or ()),
            device=args.device,
        )
        print(describe_span_check(clf.span_filter), file=sys.stderr)
    problems = clf.backend.check_texts(texts)
    good = [i for i, p in enumerate(problems) if p is None]
    started = time.perf_counter()
    certs = clf.certify([texts[i] for i in good], progress=not args.no_progress, validate=False)
    elapsed = time.perf_counter() - started
    by_index = dict(zip(good, certs))
    records = []
    for i, problem in enumerate(problems):
        if problem is None:
            records.append({"index": i, **by_index[i].to_dict()})
        else:
            records.append({"index": i, "error": f"line {i + 1}: {problem}"})
    _write_lines(args.out, records)
    bad = len(texts) - len(good)
    print(
        f"certified {len(good)} texts in {elapsed:.1f} s ({len(good) / max(elapsed, 1e-9):.2f} texts/s); {bad} rejected",
        file=sys.stderr,
    )
    for i, problem in enumerate(problems):
        if problem:
            print(f"error: {args.input}: line {i + 1}: {problem}", file=sys.stderr)
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------- fuzz
def cmd_fuzz(args: argparse.Namespace) -> int:
    cfg = _certify_config(args)
    from .certify.smooth import FRSClassifier

    clf = FRSClassifier.from_checkpoint(args.checkpoint, cfg, device=args.device, voter_ids=None)  # fuzzing only
    clf.backend.require_valid([args.text])
    result = clf.fuzz([args.text])[0]
    out = {
        "text": args.text,
        "budget": cfg.fuzzing.budget,
        "queries": result.queries,
        "prediction": clf.label_names[int(result.reference.argmax())],
        "probabilities": [round(float(p), 6) for p in result.reference],
        "spans": [s.to_dict() for s in result.spans[: args.top]],
    }
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- classify
def cmd_classify(args: argparse.Namespace) -> int:
    from .data import read_text_lines
    from .serving.client import FRSClient

    texts = [args.text] if args.text is not None else read_text_lines(args.input)
    if not texts:
        raise FRSError("no texts given (use --text or --input)")
    options = {
        k: v
        for k, v in (
            ("k", args.k),
            ("budget", args.budget),
            ("alpha", args.alpha),
            ("n_max", args.n_max),
            ("target_radius", args.target_radius),
            ("target_kind", args.target_kind),
        )
        if v is not None
    }
    if args.no_spans:
        options["return_spans"] = False
    client = FRSClient(args.url, timeout=args.timeout)
    results = client.classify(texts, **options)
    _write_lines(args.out, [{"index": i, **r.model_dump()} for i, r in enumerate(results)])
    return 0


# ---------------------------------------------------------------------------------------------- parser
def _int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frs", description="Fuzzed Randomized Smoothing: certified backdoor defense")
    sub = p.add_subparsers(dest="command", required=True)
    from .config import CertifyConfig, SmoothingConfig

    paper, smooth = CertifyConfig(), SmoothingConfig()  # the defaults the help texts name

    ft = sub.add_parser("finetune", help="fine-tune a (possibly backdoored) model with parameter smoothing")
    ft.add_argument("--model", default=None, help="'minilm' (packaged) or a local model folder")
    ft.add_argument(
        "--data",
        default=None,
        help="dataset name (sst2, offenseval, poisoned/badnets/sst2...), a .tsv/.csv/.jsonl file, or hf:owner/name",
    )
    ft.add_argument("--data-dir", default=None, help="data folder (default $FRS_DATA_DIR, then ../shared/data)")
    ft.add_argument("--out", required=True, help="checkpoint folder to write")
    ft.add_argument("--no-smoothing", action="store_true", help="plain fine-tuning (no Eq. 4 noise)")
    ft.add_argument("--mode", choices=["perturb", "accumulate", "none"], default=None, help="fine-tuning smoothing mode")
    ft.add_argument("--sigma", type=float, default=None, help=f"parameter noise std (default {smooth.sigma})")
    ft.add_argument("--top-h", type=int, default=None, help=f"smoothed top layers H (default {smooth.top_h}, clamped to depth)")
    ft.add_argument(
        "--data-noise",
        type=float,
        default=None,
        help="also randomize the training texts (Eq. 3's D_F + eps): per-token mutation probability (default 0)",
    )
    ft.add_argument(
        "--new-head",
        choices=["smoothed", "exact"],
        default=None,
        help="noise on the classification head this fine-tune initializes: 'smoothed' (default, the paper) or "
        "'exact' (no noise in training or in the voters; a pre-trained backdoor cannot be in a new head)",
    )
    ft.add_argument(
        "--lora",
        action="store_true",
        help="LoRA fine-tuning (rank 8, alpha 16 on q/k/v/o and the MLP "
        "projections; head trained fully; the checkpoint holds merged weights). Paper (LLaMA3-8B): --lr 1e-4",
    )
    ft.add_argument(
        "--head-lr",
        type=float,
        default=None,
        help="LoRA only (implies --lora): learning rate of the fully trained head (default: --lr)",
    )
    ft.add_argument("--epochs", type=float, default=None, help="epochs (default 3)")
    ft.add_argument("--lr", type=float, default=None, help="learning rate (default 5e-5)")
    ft.add_argument("--batch-size", type=int, default=None, help="batch size (default 32)")
    ft.add_argument("--max-train-examples", type=int, default=None, help="seeded random subset of the training set")
    ft.add_argument("--seed", type=int, default=None, help="seed (default 42)")
    ft.add_argument("--config", default=None, help="JSON file with FinetuneConfig fields (flags override it)")
    ft.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")
    ft.set_defaults(func=cmd_finetune)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--checkpoint", required=True, help="folder written by `frs finetune`")
        sp.add_argument("--k", type=_int, default=None, help=f"number of voters K (default {paper.k})")
        sp.add_argument(
            "--budget", type=_int, default=None, help=f"MCTS budget in model queries (default {paper.fuzzing.budget})"
        )
        sp.add_argument("--alpha", type=float, default=None, help=f"1 - confidence (default {paper.alpha})")
        sp.add_argument("--seed", type=int, default=None, help="voter and randomization seed (default 0)")
        sp.add_argument("--omega-m", dest="omega_m", type=float, default=None, help="uniform mutation probability omega_M")
        sp.add_argument("--omega-h", dest="omega_h", type=float, default=None, help="mutation probability inside T(x')")
        sp.add_argument("--max-distance", dest="max_distance", type=float, default=None, help="Lambda, DL distance bound")
        sp.add_argument(
            "--span-rate",
            dest="span_rate",
            choices=["equal_mass", "fixed"],
            default=None,
            help="omega_H under a large T(x'): 'equal_mass' lowers it to keep L omega_M mutations (the paper's, default); "
            "'fixed' keeps it (an extension)",
        )
        sp.add_argument("--config", default=None, help="JSON file with CertifyConfig fields (flags override it)")
        sp.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    ce = sub.add_parser("certify", help="certify texts: label, votes, p_lower, radii, spans (JSON lines)")
    common(ce)
    ce.add_argument("--input", required=True, help="text file (one text per line), .jsonl with 'text', or - for stdin")
    ce.add_argument("--out", default="-", help="output JSON-lines file or - (stdout)")
    ce.add_argument("--n-select", dest="n_select", type=_int, default=None, help="selection votes (default K)")
    ce.add_argument("--n-estimate", dest="n_estimate", type=_int, default=None, help="estimation votes (default K)")
    ce.add_argument(
        "--n-max",
        dest="n_max",
        type=_int,
        default=None,
        help="sequential CERTIFY: estimation votes in rounds (n_estimate, 2x, 4x, ...) up to this many per "
        "text, alpha split over the looks; each text stops once its target is met or out of reach "
        "(default: the fixed protocol)",
    )
    ce.add_argument(
        "--target-radius",
        dest="target_radius",
        type=_int,
        default=None,
        help="with --n-max: keep voting until the certified radius reaches this many tokens (default: "
        "stop once the label is certified)",
    )
    ce.add_argument(
        "--target-kind",
        dest="target_kind",
        choices=["conditional", "unconditional"],
        default=None,
        help="which radius --target-radius means (default conditional)",
    )
    ce.add_argument("--no-fuzz", action="store_true", help="uniform randomization (the -FTR ablation)")
    ce.add_argument(
        "--voter-backend",
        dest="voter_backend",
        choices=["torch", "vllm"],
        default=None,
        help="what runs the K voters (voters.backend): torch (default) or vllm (one vLLM engine, decoder "
        "checkpoints; same voters, same certificates)",
    )
    ce.add_argument(
        "--span-check",
        dest="span_check",
        choices=["none", "fluency", "transplant", "fluency+transplant"],  # frs_ray.fuzzing.checks.SPAN_CHECKS
        default="none",
        help="check on T(x') before randomization (extensions, not the paper's method): 'transplant' "
        "(frs_ray/fuzzing/transplant.py) keeps a span only where inserting it into clean reference texts of other "
        "labels moves them to the input's label; 'fluency' (frs_ray/fuzzing/fluency.py) only where deleting it makes "
        "the text more fluent to --span-check-lm; 'fluency+transplant' where either keeps it; default none (FRS)",
    )
    ce.add_argument(
        "--span-check-lm",
        dest="span_check_lm",
        default="smollm2",
        help="fluency: the perplexity model, 'smollm2' or a local causal-LM folder",
    )
    ce.add_argument(
        "--span-check-fluency-threshold",
        dest="span_check_fluency_threshold",
        type=float,
        default=None,
        help="fluency+transplant: the fluency check's threshold (default 0)",
    )
    ce.add_argument(
        "--span-check-data",
        dest="span_check_data",
        default=None,
        help="transplant: clean data (dataset name or file, dev split) for the references and the "
        "calibration (default: the dev.tsv beside the checkpoint's training data)",
    )
    ce.add_argument(
        "--span-check-threshold",
        dest="span_check_threshold",
        type=float,
        default=None,
        help="transplant and fluency+transplant: keep a span when its transplant score exceeds this (default: "
        "calibrated on the clean data to keep at most 5%% of clean texts' spans); fluency: its threshold (default 0)",
    )
    ce.add_argument(
        "--span-check-m",
        dest="span_check_m",
        type=_int,
        default=None,
        help="transplant: references per span (default: calibrated from 4, 8, 16)",
    )
    ce.add_argument(
        "--span-check-grow",
        dest="span_check_grow",
        type=_int,
        default=0,
        help="transplant: grow each span by up to this many adjacent tokens while each raises its transplant score "
        "(frs_ray/fuzzing/growth.py; finds a multi-word trigger's extent); default 0 (no growth)",
    )
    ce.add_argument(
        "--span-check-combine",
        dest="span_check_combine",
        choices=("each", "joint"),
        default="each",
        help="transplant: 'joint' also transplants the words of all spans of T(x') together and keeps them all when "
        "that passes (combination triggers; needs fuzzing.num_spans >= 2 in --config); default 'each'",
    )
    ce.add_argument(
        "--span-check-length-strata",
        dest="span_check_length_strata",
        type=_int,
        nargs="+",
        default=None,
        metavar="TOKENS",
        help="transplant: one calibrated threshold per span-length stratum, given by the longest span of each stratum "
        "but the last (e.g. 1 3: 1 token, 2-3, 4 or more; frs_ray/fuzzing/strata.py); default: one threshold",
    )
    ce.set_defaults(func=cmd_certify)

    fz = sub.add_parser("fuzz", help="MCTS vulnerable spans of one text")
    common(fz)
    fz.add_argument("--text", required=True, help="the text to fuzz")
    fz.add_argument("--top", type=int, default=5, help="spans to print")
    fz.set_defaults(func=cmd_fuzz)
    cl = sub.add_parser("classify", help="certify texts through a running FRS service (FRSClient)")
    cl.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    src = cl.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", default=None, help="one text")
    src.add_argument("--input", default=None, help="text file (one per line), .jsonl, or - for stdin")
    cl.add_argument("--out", default="-", help="output JSON-lines file or - (stdout)")
    cl.add_argument("--k", type=int, default=None)
    cl.add_argument("--budget", type=int, default=None)
    cl.add_argument("--alpha", type=float, default=None)
    cl.add_argument(
        "--n-max",
        dest="n_max",
        type=_int,
        default=None,
        help="sequential CERTIFY: most estimation votes per text (at most the service's max_n_max)",
    )
    cl.add_argument(
        "--target-radius",
        dest="target_radius",
        type=_int,
        default=None,
        help="sequential CERTIFY: keep voting until the radius reaches this many tokens",
    )
    cl.add_argument("--target-kind", dest="target_kind", choices=["conditional", "unconditional"], default=None)
    cl.add_argument("--no-spans", action="store_true", help="omit spans from the results")
    cl.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    cl.set_defaults(func=cmd_classify)

    from .evaluation.commands import add_commands

    add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    configure_process(engine=True)  # `frs certify --voter-backend vllm` hosts the engine in this process
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FRSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
