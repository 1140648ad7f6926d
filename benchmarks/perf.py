"""Every stage of FRS against its hardware limit, as ratios measured side by side in one run.

    python benchmarks/perf.py --quick                  # this 2-core CPU, under 10 minutes -> docs/results/perf.{md,json}
    python benchmarks/perf.py --checkpoint runs/default-sst2 --texts 64 --service-seconds 60   # the full mode

Figures (each a ratio of two timings taken in the same run, interleaved, median of ``--repeats``):
- ``voter_pass_ratio``: {implementation: {B: r}}: K voters on B texts (every voter on every text) over the one-model
  limit, one forward of the centre model on the same K x B texts at its best batch size (length-sorted batches of
  16 .. 256 texts, the fastest taken);
- ``memory``: peak RSS of a process holding the model and the stacked voters, against one model plus K x |top-H|
  float32 weights (each measured in a fresh process);
- ``certify_over_limit``: a full ``certify`` of N texts over (budget + n_select + n_estimate) centre-model forwards
  per text, ideally batched, with the time per stage (fuzzing, randomization, voting, finalizing);
- ``service_over_cli``: the service's requests/s under 8 clients (one text per request, loopback HTTP) over
  ``frs certify``'s texts/s on the same texts (in-process FRSClassifier.certify, as the CLI runs it).
Torch runs one thread in this process (``--threads``), as do the service's actors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = {  # name -> (voters.implementation, voters.noise)
    "loop, noise regenerated": ("loop", "regenerate"),
    "loop, noise cached": ("loop", "resident"),
    "stacked, noise resident": ("stacked", "resident"),
    "stacked, noise per batch": ("stacked", "per_batch"),
}


def _quiet() -> None:
    from frs_ray.runtime import configure_process

    configure_process(ray=True)


def _log(msg: str) -> None:
    print(f"[perf {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_checkpoint(path: Path, quick: bool) -> Path:
    """The checkpoint to measure; ``--quick`` builds a small one (512 SST-2 sentences, 1 epoch) if it is missing.
    Speed does not depend on how well the model was trained."""
    from frs_ray.smoothing.finetune import read_meta

    try:
        read_meta(path)
        return path
    except Exception:  # noqa: BLE001 - missing or incomplete: build it below
        pass
    if not quick:
        raise SystemExit(f"no checkpoint at {path}: run `make checkpoint` or pass --checkpoint")
    _log(f"building {path} (512 SST-2 sentences, 1 epoch)")
    from frs_ray.cli import main as frs

    rc = frs(
        [
            "finetune",
            "--model",
            "minilm",
            "--data",
            "sst2",
            "--out",
            str(path),
            "--epochs",
            "1",
            "--max-train-examples",
            "512",
            "--lr",
            "1e-4",
            "--no-progress",
        ]
    )
    if rc != 0:
        raise SystemExit(f"building {path} failed")
    return path


def _best_limit(backend, texts: list[str], repeats: int, sizes: tuple[int, ...] = (16, 32, 64, 128, 256)) -> tuple[float, int]:
    """Fastest centre-model pass over ``texts`` over batch sizes (length-sorted batches, as predict_proba does)."""
    best = (float("inf"), 0)
    saved = backend.batch_size
    for bs in sizes:
        backend.batch_size = bs
        t = _median(lambda: backend.predict_proba(texts), repeats)
        best = min(best, (t, bs))
    backend.batch_size = saved
    return best


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def checkpoint_pool_parts(checkpoint: Path, k: int):
    """(backend holding the centre, VoterSpec) of a checkpoint, without building any pool."""
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig
    from frs_ray.smoothing.finetune import read_meta
    from frs_ray.smoothing.layers import SmoothedParameters
    from frs_ray.smoothing.pool import VoterSpec

    clf = FRSClassifier.from_checkpoint(checkpoint, CertifyConfig(k=k), voter_ids=None)
    meta = read_meta(checkpoint)
    sm = meta["smoothing"]
    spec = VoterSpec(
        SmoothedParameters(tuple(sm["names"]), sm["top_h"], sm["depth"], sm["stack"]), k, meta["config"]["smoothing"]["sigma"], 0
    )
    return clf.backend, spec


SHAPES = {  # name -> (family, config fields, top-H smoothed): random weights of a model's shape
    "bert-base": (
        "bert",
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "vocab_size": 30522,
            "max_position_embeddings": 512,
        },
        10,
    ),
    "llama3-8b": (
        "llama",
        {
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "intermediate_size": 14336,
            "vocab_size": 128256,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
        },
        10,
    ),
    "tiny-bert": (
        "bert",
        {
            "hidden_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "vocab_size": 2000,
            "max_position_embeddings": 128,
        },
        2,
    ),
    "tiny-llama": (
        "llama",
        {
            "hidden_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 64,
            "vocab_size": 2000,
            "max_position_embeddings": 128,
        },
        2,
    ),
}


def shape_pool_parts(shape: str, k: int, device: str, texts: list[str]):
    """(backend, VoterSpec) for random weights of ``shape`` (bf16 on CUDA, fp32 on the CPU) and a BPE tokenizer
    trained here on ``texts`` (nothing is downloaded); sigma 0.01, the top-H blocks of SHAPES smoothed."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    from frs_ray.backends.hf import HFClassifier
    from frs_ray.smoothing import select_top_h
    from frs_ray.smoothing.pool import VoterSpec

    family, fields, top_h = SHAPES[shape]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=min(2000, fields["vocab_size"]), special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    before = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            if family == "bert":
                model = BertForSequenceClassification(BertConfig(num_labels=2, **fields))
            else:
                model = LlamaForSequenceClassification(LlamaConfig(num_labels=2, pad_token_id=hf_tok.pad_token_id, **fields))
    finally:
        torch.set_default_dtype(before)
    backend = HFClassifier.from_parts(model, hf_tok, max_length=128)
    return backend, VoterSpec(select_top_h(model, top_h), k, 0.01, 0)


def measure_voter_pass(backend, spec, sizes: list[int], texts: list[str], repeats: int, memory_fraction: float = 0.5) -> dict:
    from frs_ray.smoothing.pool import make_voter_pool

    k = spec.k
    pools, build_s = {}, {}
    for name, (impl, noise) in IMPLEMENTATIONS.items():
        t = time.perf_counter()
        pools[name] = make_voter_pool(backend, spec, None, impl, noise, memory_fraction)
        build_s[name] = round(time.perf_counter() - t, 3)
    ratios: dict[str, dict[str, float]] = {n: {} for n in pools}
    limits: dict[str, dict] = {}
    for b in sizes:
        jobs = [(v, t) for t in texts[:b] for v in range(k)]
        job_texts = [x for _, x in jobs]
        reps = repeats if b < 64 else max(1, repeats // 2 + 1)
        for pool in pools.values():
            pool.vote_proba(jobs[:k])  # warm: first use of cached noise, allocator
        limit, bs = _best_limit(backend, job_texts, reps)
        times = {n: [] for n in pools}
        for _ in range(reps):  # interleaved, so a slow moment of the machine hits every implementation
            for n, pool in pools.items():
                t = time.perf_counter()
                pool.vote_proba(jobs)
                times[n].append(time.perf_counter() - t)
        limit2, _ = _best_limit(backend, job_texts, reps, (bs,))  # again after them, at its best size: the smaller counts
        limit = min(limit, limit2)
        limits[str(b)] = {"seconds": round(limit, 4), "batch_size": bs, "jobs": len(jobs)}
        for n in pools:
            ratios[n][str(b)] = round(statistics.median(times[n]) / limit, 3)
        _log(f"voter pass B={b}: limit {limit:.3f} s; " + ", ".join(f"{n} {ratios[n][str(b)]}x" for n in pools))
    sel = spec.selection
    return {
        "voter_pass_ratio": ratios,
        "limit": limits,
        "pool_build_seconds": build_s,
        "smoothed_parameters": int(pools["stacked, noise resident"].describe()["smoothed_parameters"]),
        "top_h": sel.top_h,
        "depth": sel.depth,
    }


def measure_shapes(shapes: list[str], k: int, device: str, sizes: list[int], texts: list[str], repeats: int) -> dict:
    """Voter pass ratios and peak device memory on random weights of each shape (the GPU study of issue 14)."""
    import torch

    out = {}
    for shape in shapes:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        backend, spec = shape_pool_parts(shape, k, device, texts)
        model_bytes = sum(p.numel() * p.element_size() for p in backend.model.parameters())
        r = measure_voter_pass(backend, spec, sizes, texts, repeats, memory_fraction=0.95)
        el = next(backend.model.parameters()).element_size()
        r["memory"] = {"model_bytes": model_bytes, "stacked_weights_bytes": k * r["smoothed_parameters"] * el}
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated()
            r["memory"]["peak_allocated"] = peak
            r["memory"]["ratio"] = round(peak / (model_bytes + r["memory"]["stacked_weights_bytes"]), 3)
        out[shape] = r
        del backend
    return out


def _memory_child(checkpoint: str, k: int, mode: str, texts: list[str]) -> None:
    """Child process: load the model (and, for ``stacked``, the resident stacked voters), score K x 8 jobs, print
    peak RSS in bytes."""
    _quiet()
    import torch

    torch.set_num_threads(1)
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig

    if mode == "model":
        clf = FRSClassifier.from_checkpoint(checkpoint, CertifyConfig(k=k), voter_ids=None)
        clf.backend.predict_proba([t for t in texts for _ in range(k)])
    else:
        cfg = CertifyConfig(k=k, voters={"implementation": "stacked", "noise": "resident"})
        clf = FRSClassifier.from_checkpoint(checkpoint, cfg)
        clf.vote_labels([(v, t) for t in texts for v in range(k)])
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from the forked parent (the benchmark
    # process, several GB), while VmHWM belongs to this process's own address space
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss": int(hwm.split()[1]) * 1024}))


def measure_memory(checkpoint: Path, k: int, texts: list[str], smoothed_parameters: int) -> dict:
    peaks = {}
    for mode in ("model", "stacked"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_memory-child",
                mode,
                "--checkpoint",
                str(checkpoint),
                "--k",
                str(k),
                "--_texts",
                json.dumps(texts[:8]),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        peaks[mode] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss"]
    stacked_bytes = k * smoothed_parameters * 4
    expected = peaks["model"] + stacked_bytes
    return {
        "peak_rss_model_only": peaks["model"],
        "peak_rss_with_stacked_voters": peaks["stacked"],
        "stacked_weights_bytes": stacked_bytes,
        "one_model_plus_stacked": expected,
        "ratio": round(peaks["stacked"] / expected, 3),
    }


def measure_certify(checkpoint: Path, k: int, budget: int, texts: list[str], repeats: int) -> dict:
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig

    cfg = CertifyConfig(k=k, fuzzing={"budget": budget})
    clf = FRSClassifier.from_checkpoint(checkpoint, cfg)
    clf.certify(texts[:4])  # warm
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plans = clf.prepare(texts)
        t1 = time.perf_counter()
        labels = clf.vote_labels([j for p in plans for j in p.select + p.estimate])
        t2 = time.perf_counter()
        from frs_ray.certify.smooth import finalize_plans

        finalize_plans(plans, labels, cfg, clf.label_names)
        t3 = time.perf_counter()
        fuzz = sum(p.seconds["fuzz"] for p in plans)
        runs.append(
            {"total": t3 - t0, "fuzzing": fuzz, "randomization": (t1 - t0) - fuzz, "voting": t2 - t1, "finalizing": t3 - t2}
        )
    run = min(runs, key=lambda r: r["total"])
    # the ideal: (budget + n_select + n_estimate) centre-model forwards per text in the best batching
    votes = [x for p in plans for _, x in p.select + p.estimate]
    ideal = votes + [t for t in texts for _ in range(budget)]
    limit, bs = _best_limit(clf.backend, ideal, repeats)
    _log(f"certify {len(texts)} texts: {run['total']:.2f} s, limit {limit:.2f} s")
    return {
        "certify_over_limit": round(run["total"] / limit, 3),
        "stages_seconds": {k2: round(v, 3) for k2, v in run.items()},
        "stages_share": {k2: round(v / run["total"], 3) for k2, v in run.items() if k2 != "total"},
        "limit_seconds": round(limit, 3),
        "limit_batch_size": bs,
        "forwards_per_text": budget + cfg.votes_select + cfg.votes_estimate,
    }


def measure_service(checkpoint: Path, k: int, budget: int, texts: list[str], clients: int, seconds: float) -> dict:
    """Requests/s of the real service (Ray Serve, loopback HTTP) against in-process certify's texts/s."""
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig

    cfg = CertifyConfig(k=k, fuzzing={"budget": budget})
    clf = FRSClassifier.from_checkpoint(checkpoint, cfg)
    clf.certify(texts[:4])
    t = time.perf_counter()
    reference = {c.text: c.to_dict() for c in clf.certify(texts)}
    cli_tps = len(texts) / (time.perf_counter() - t)
    del clf
    import ray
    from ray import serve

    from frs_ray.serving.router import make_app

    port = 8765
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        settings = {
            "checkpoint": str(checkpoint),
            "k": k,
            "voter_actors": 2,
            "fuzz_actors": 1,
            "torch_threads": 1,
            "num_cpus_per_actor": 0.25,
            "max_inflight_requests": 64,
            "request_timeout_s": 300,
            "certify": {"fuzzing": {"budget": budget}},
        }
        serve.run(make_app(settings), name="perf", route_prefix="/")
        url = f"http://127.0.0.1:{port}/v1/classify"

        def post(text: str) -> dict:
            req = urllib.request.Request(
                url, data=json.dumps({"texts": [text]}).encode(), method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=300) as r:
                return json.loads(r.read())["results"][0]

        for x in texts[:2]:
            post(x)  # warm
        done, failed, mismatched, lock = [], [0], [0], threading.Lock()
        deadline = time.time() + seconds
        counter = [0]

        def worker() -> None:
            while time.time() < deadline:
                with lock:
                    i = counter[0]
                    counter[0] += 1
                if i >= 100_000:
                    return
                x = texts[i % len(texts)]
                t0 = time.perf_counter()
                try:
                    cert = post(x)
                except Exception:  # noqa: BLE001 - a failed request counts as failed
                    with lock:
                        failed[0] += 1
                    continue
                same = {a: b for a, b in cert.items() if a not in ("seconds", "spans")} == {
                    a: b for a, b in reference[x].items() if a not in ("seconds", "spans")
                }
                with lock:
                    done.append(time.perf_counter() - t0)
                    mismatched[0] += 0 if same else 1

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=seconds + 400)
        elapsed = time.perf_counter() - start
    finally:
        serve.shutdown()
        ray.shutdown()
    rps = len(done) / elapsed
    _log(f"service {rps:.2f} req/s ({len(done)} in {elapsed:.0f} s), cli {cli_tps:.2f} texts/s")
    return {
        "service_over_cli": round(rps / cli_tps, 3),
        "service_requests_per_second": round(rps, 3),
        "cli_texts_per_second": round(cli_tps, 3),
        "requests": len(done),
        "failed": failed[0],
        "certificates_differing_from_cli": mismatched[0],
        "clients": clients,
        "seconds": round(elapsed, 1),
        "latency_p50": round(float(np.percentile(done, 50)), 3) if done else None,
        "latency_p95": round(float(np.percentile(done, 95)), 3) if done else None,
    }


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def render(r: dict) -> str:
    vp = r["voter_pass"]["voter_pass_ratio"]
    sizes = list(next(iter(vp.values())).keys())
    lines = [
        "# Performance: every stage against its hardware limit",
        "",
        f"- Command: `{r['command']}`",
        f"- Date: {r['date']}; machine: {r['machine']['processor']}, {r['machine']['cpus']} cores, torch "
        f"{r['machine']['torch']} with {r['machine']['torch_threads']} thread(s), GPU: {r['machine']['gpu'] or 'none'}",
        f"- Checkpoint: `{r['checkpoint']}` (MiniLM-L6; top-H = {r['voter_pass']['top_h']} of "
        f"{r['voter_pass']['depth']} blocks smoothed, {r['voter_pass']['smoothed_parameters']:,} parameters per voter); "
        f"K = {r['k']}; SST-2 dev sentences; every ratio is two timings of this run, interleaved, median of "
        f"{r['repeats']} (B = 64: fewer)",
        "- Other processes shared the 2 cores during this run: " + r.get("load_note", "see the machine's load average"),
        "",
        "## Voter pass over the one-model limit (`voter_pass_ratio`)",
        "",
        "K voters on B texts (every voter on every text) over one forward of the centre model on the same K x B "
        "texts at its best batch size.",
        "",
        "| implementation | " + " | ".join(f"B = {b}" for b in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, row in vp.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[b]}x" for b in sizes) + " |")
    lim = r["voter_pass"]["limit"]
    lines += [
        "| (the limit, seconds) | "
        + " | ".join(f"{lim[b]['seconds']} s ({lim[b]['jobs']} texts, batch {lim[b]['batch_size']})" for b in sizes)
        + " |",
        "",
    ]
    m = r["memory"]
    mb = 1024 * 1024
    lines += [
        "## Memory (`memory`)",
        "",
        f"Peak RSS with the model and K stacked voters: {m['peak_rss_with_stacked_voters'] / mb:.0f} MiB, against one "
        f"model ({m['peak_rss_model_only'] / mb:.0f} MiB peak, same jobs) plus K x |top-H| float32 weights "
        f"({m['stacked_weights_bytes'] / mb:.0f} MiB): ratio **{m['ratio']}**.",
        "",
    ]
    c = r["certify"]
    lines += [
        "## Full certification (`certify_over_limit`)",
        "",
        f"`certify` of {r['n_texts']} texts (K = {r['k']}, budget {r['budget']}, n_select = n_estimate = K) over "
        f"{c['forwards_per_text']} centre-model forwards per text in one length-sorted pass ({c['limit_seconds']} s): "
        f"**{c['certify_over_limit']}x**.",
        "",
        "| stage | seconds | share |",
        "|---|---|---|",
    ]
    for st in ("fuzzing", "randomization", "voting", "finalizing"):
        lines.append(f"| {st} | {c['stages_seconds'][st]} | {100 * c['stages_share'][st]:.1f}% |")
    s = r.get("service")
    lines += ["", "## Service against the CLI (`service_over_cli`)", ""]
    if s:
        lines += [
            f"{s['clients']} clients, one text per request, {s['seconds']} s over loopback HTTP: "
            f"{s['service_requests_per_second']} requests/s (p50 {s['latency_p50']} s, p95 {s['latency_p95']} s, "
            f"{s['failed']} failed, {s['certificates_differing_from_cli']} certificates different from the CLI's) "
            f"against {s['cli_texts_per_second']} texts/s of in-process `certify` on the same {r['n_texts']} "
            f"texts: **{s['service_over_cli']}**."
        ]
    else:
        lines += ["Not measured in this run (`--no-service`)."]
    lines += ["", "## Targets", ""] + [f"- {t}" for t in r["targets"]] + [""]
    if r.get("notes"):
        lines += ["## Where the time goes (analysis)", ""] + [f"- {n}" for n in r["notes"]] + [""]
    return "\n".join(lines)


def targets(r: dict) -> list[str]:
    out = []
    vp = r["voter_pass"]["voter_pass_ratio"]
    best = {b: min(row[b] for row in vp.values()) for b in next(iter(vp.values()))}
    for b, v in best.items():
        goal = 1.6 if b == "1" else 1.3
        out.append(f"voter pass B={b}: best {v}x, target <= {goal}x: {'met' if v <= goal else 'MISSED'}")
    c = r["certify"]["certify_over_limit"]
    out.append(f"certify_over_limit {c}, target <= 1.2: {'met' if c <= 1.2 else 'MISSED'}")
    if r.get("service"):
        s = r["service"]["service_over_cli"]
        out.append(f"service_over_cli {s}, target >= 0.9: {'met' if s >= 0.9 else 'MISSED'}")
    return out


def run_shapes(args: argparse.Namespace) -> int:
    """``--shapes``: the voter-pass ratios and memory on random weights of model shapes (GPU hosts)."""
    from frs_ray.data import load_dataset

    texts = load_dataset("sst2", "dev").subset(64, seed=0).texts
    sizes = [int(x) for x in args.sizes.split(",")]
    repeats = args.repeats or 5
    r = {
        "command": shlex.join(["python", "benchmarks/perf.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "k": args.k,
        "device": args.device,
        "repeats": repeats,
        "shapes": measure_shapes(args.shapes.split(","), args.k, args.device, sizes, texts, repeats),
    }
    lines = [
        "# Performance on model shapes with random weights",
        "",
        f"- Command: `{r['command']}`",
        f"- Date: {r['date']}; device {args.device} "
        f"({r['machine']['gpu'] or r['machine']['processor']}); K = {args.k}; median of {repeats}",
        "",
    ]
    for shape, x in r["shapes"].items():
        sz = list(next(iter(x["voter_pass_ratio"].values())).keys())
        lines += [
            f"## {shape} (top {x['top_h']} of {x['depth']} blocks smoothed)",
            "",
            "| implementation | " + " | ".join(f"B = {b}" for b in sz) + " |",
            "|---|" + "---|" * len(sz),
        ]
        lines += [f"| {n} | " + " | ".join(f"{row[b]}x" for b in sz) + " |" for n, row in x["voter_pass_ratio"].items()]
        lines += ["", f"Memory: {json.dumps(x['memory'])}", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main() -> int:
    from frs_ray.config import CertifyConfig

    paper = CertifyConfig()  # the paper's K and MCTS budget
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes for this 2-core CPU (under 10 minutes)")
    ap.add_argument("--checkpoint", default=None, help="default: runs/default-sst2, or with --quick runs/perf-sst2")
    ap.add_argument("--k", type=int, default=paper.k)
    ap.add_argument("--budget", type=int, default=paper.fuzzing.budget)
    ap.add_argument("--texts", type=int, default=None, help="texts certified (quick 32, full 64)")
    ap.add_argument("--sizes", default="1,8,64")
    ap.add_argument("--repeats", type=int, default=None, help="quick 3, full 5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--service-seconds", type=float, default=None, help="quick 40, full 60")
    ap.add_argument("--no-service", action="store_true")
    ap.add_argument("--note", action="append", default=[], help="a line of analysis kept in perf.json and perf.md")
    ap.add_argument("--render-only", action="store_true", help="rewrite perf.md from perf.json (adding --note lines)")
    ap.add_argument("--out", default="docs/results/perf")
    ap.add_argument(
        "--shapes",
        default=None,
        help="comma-separated random-weight shapes instead of a checkpoint "
        "(bert-base, llama3-8b; tiny-bert, tiny-llama for a CPU check): voter pass and memory only",
    )
    ap.add_argument("--device", default="cpu", help="device for --shapes (cuda on a GPU host)")
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_texts", dest="child_texts", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    _quiet()
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.checkpoint, args.k, args.memory_child, json.loads(args.child_texts))
        return 0
    if args.shapes:
        return run_shapes(args)
    if args.render_only:
        out = Path(args.out)
        r = json.loads(out.with_suffix(".json").read_text())
        r["notes"] = r.get("notes", []) + args.note
        out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
        out.with_suffix(".md").write_text(render(r))
        return 0
    n_texts = args.texts or (32 if args.quick else 64)
    repeats = args.repeats or (3 if args.quick else 5)
    seconds = args.service_seconds or (40 if args.quick else 60)
    ckpt = Path(
        args.checkpoint or ("runs/perf-sst2" if args.quick and not Path("runs/default-sst2").is_dir() else "runs/default-sst2")
    )
    ckpt = ensure_checkpoint(ckpt, args.quick)
    from frs_ray.data import load_dataset

    texts = load_dataset("sst2", "dev").subset(max(n_texts, 64), seed=0).texts
    started = time.time()
    load_before = os.getloadavg()
    r: dict = {
        "command": shlex.join(["python", "benchmarks/perf.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "checkpoint": str(ckpt),
        "k": args.k,
        "budget": args.budget,
        "n_texts": n_texts,
        "repeats": repeats,
    }
    sizes = [int(x) for x in args.sizes.split(",")]
    r["voter_pass"] = measure_voter_pass(*checkpoint_pool_parts(ckpt, args.k), sizes, texts, repeats)
    r["memory"] = measure_memory(ckpt, args.k, texts, r["voter_pass"]["smoothed_parameters"])
    r["certify"] = measure_certify(ckpt, args.k, args.budget, texts[:n_texts], repeats)
    if not args.no_service:
        r["service"] = measure_service(ckpt, args.k, args.budget, texts[:n_texts], args.clients, seconds)
    r["voter_pass_ratio"] = r["voter_pass"]["voter_pass_ratio"]
    r["certify_over_limit"] = r["certify"]["certify_over_limit"]
    r["service_over_cli"] = r["service"]["service_over_cli"] if r.get("service") else None
    r["sample_sizes"] = {
        "texts": n_texts,
        "voter_pass_B": sizes,
        "repeats": repeats,
        "service_requests": r["service"]["requests"] if r.get("service") else 0,
    }
    r["wall_seconds"] = round(time.time() - started, 1)
    load_after = os.getloadavg()
    r["load_note"] = (
        f"1-minute load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end (2 = both cores busy)"
    )
    r["targets"] = targets(r)
    r["notes"] = args.note
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(r))
    print(render(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
