"""Check that the service (curl-style raw HTTP and FRSClient) returns the certificates `frs certify` writes.

    python benchmarks/service_equivalence.py --url http://127.0.0.1:8000 --checkpoint runs/default-sst2 \
        --input examples/demo.txt --out docs/results/service_equivalence.json

Runs `frs certify` (same checkpoint; K, budget, alpha, seed and omegas taken from the service's /v1/info) and
compares every field but the timings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path


def _strip(c: dict) -> dict:
    return {k: v for k, v in c.items() if k not in ("seconds", "index")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from frs_ray.data import read_text_lines
    from frs_ray.serving.client import FRSClient

    texts = read_text_lines(args.input)
    client = FRSClient(args.url)
    info = client.info()
    req = urllib.request.Request(
        args.url + "/v1/classify",
        data=json.dumps({"texts": texts}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        raw = [_strip(c) for c in json.loads(r.read())["results"]]
    typed = [_strip(c.model_dump()) for c in client.classify(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "certs.jsonl"
        cmd = [
            str(Path(sys.executable).parent / "frs"),
            "certify",
            "--checkpoint",
            args.checkpoint,
            "--input",
            args.input,
            "--out",
            str(out),
            "--k",
            str(info.k),
            "--budget",
            str(info.budget),
            "--alpha",
            str(info.alpha),
            "--seed",
            str(info.seed),
            "--omega-m",
            str(info.omega_m),
            "--omega-h",
            str(info.omega_h),
            "--max-distance",
            str(info.max_distance),
            "--n-select",
            str(info.n_select),
            "--n-estimate",
            str(info.n_estimate),
            "--no-progress",
        ]
        subprocess.run(cmd, check=True)
        cli = [_strip(json.loads(line)) for line in out.read_text().splitlines()]
    from frs_ray.certify.smooth import certificates_match

    same = lambda xs, ys: len(xs) == len(ys) and all(certificates_match(x, y) for x, y in zip(xs, ys))  # noqa: E731
    res = {
        "texts": len(texts),
        "http_equals_cli": same(raw, cli),
        "client_equals_cli": same(typed, cli),
        "bit_identical": raw == cli and typed == cli,
        "cli_command": " ".join(cmd[1:]),
        "labels": [c["label_name"] for c in cli],
        "p_lower": [round(c["p_lower"], 4) for c in cli],
        "top_spans": [c["spans"][0]["text"] if c["spans"] else None for c in cli],
    }
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0 if res["http_equals_cli"] and res["client_equals_cli"] else 1


if __name__ == "__main__":
    sys.exit(main())
