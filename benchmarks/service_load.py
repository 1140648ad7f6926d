"""Load, fault and bad-input checks against a running FRS service (loopback only); prints and writes JSON.

    serve run deployments/frs.yaml &             # or: make serve
    python benchmarks/service_load.py --seconds 60 --clients 8 --out docs/results/service_load.json
    python benchmarks/service_load.py --seconds 60 --clients 8 --faults --reference docs/results/service_load.json \
        --out docs/results/service_faults.json
    python benchmarks/service_load.py --malformed --out docs/results/service_malformed.json

--faults kills one voter actor (process titled ray::VoterShard) and one fuzzing actor (ray::FuzzWorker) with
SIGKILL during the load, by process id, and compares every certificate with the reference run's certificate
of the same text. Every request loop is bounded in count and time and targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np


def _post(url: str, body: bytes, timeout: float = 300) -> tuple[int, dict, float]:
    t = time.perf_counter()
    req = urllib.request.Request(url + "/v1/classify", data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.perf_counter() - t
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError:
            payload = {"raw": raw.decode("utf-8", "replace")[:200]}
        return e.code, payload, time.perf_counter() - t
    except Exception as e:  # connection reset, timeout: a failed request
        return -1, {"exception": repr(e)}, time.perf_counter() - t


def _pids(title: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", title], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if int(p) != os.getpid()]


def _strip(cert: dict) -> dict:
    return {k: v for k, v in cert.items() if k not in ("seconds",)}


def run_load(url: str, texts: list[str], clients: int, seconds: float, faults: bool) -> dict:
    lock = threading.Lock()
    records: list[dict] = []
    events: list[dict] = []
    deadline = time.time() + seconds
    counter = {"i": 0}

    def worker() -> None:
        while time.time() < deadline:
            with lock:
                i = counter["i"]
                counter["i"] += 1
            if i >= 100_000:
                return
            text = texts[i % len(texts)]
            status, payload, dt = _post(url, json.dumps({"texts": [text]}).encode())
            with lock:
                records.append(
                    {
                        "status": status,
                        "latency": dt,
                        "text": text,
                        "cert": payload["results"][0] if status == 200 else None,
                        "error": None if status == 200 else payload,
                    }
                )

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    started = time.time()
    for t in threads:
        t.start()
    if faults:
        for at, title in ((seconds * 0.3, "ray::VoterShard"), (seconds * 0.55, "ray::FuzzWorker")):
            time.sleep(max(0.0, started + at - time.time()))
            pids = _pids(title)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
            events.append(
                {"t": round(time.time() - started, 1), "killed": title, "pid": pids[0] if pids else None, "candidates": pids}
            )
    for t in threads:
        t.join(timeout=seconds + 600)
    wall = time.time() - started
    ok = [r for r in records if r["status"] == 200]
    lat = np.array([r["latency"] for r in ok]) if ok else np.array([0.0])
    return {
        "clients": clients,
        "seconds": seconds,
        "wall_seconds": round(wall, 1),
        "requests": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "failures": [r["error"] for r in records if r["status"] != 200][:10],
        "throughput_rps": round(len(ok) / wall, 3),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
        "latency_max_s": round(float(lat.max()), 3),
        "events": events,
        "certificates": {r["text"]: _strip(r["cert"]) for r in ok},
    }


MALFORMED: list[tuple[str, bytes]] = [
    ("empty list", b'{"texts": []}'),
    ("empty text", b'{"texts": [""]}'),
    ("whitespace text", b'{"texts": ["   \\t  "]}'),
    ("huge text (100k chars)", json.dumps({"texts": ["word " * 20_000]}).encode()),
    ("over model max length", json.dumps({"texts": ["a " * 600]}).encode()),
    ("texts not a list", b'{"texts": "not a list"}'),
    ("texts of ints", b'{"texts": [1, 2]}'),
    ("null text", b'{"texts": [null]}'),
    ("nested list", b'{"texts": [["nested"]]}'),
    ("misspelled field", b'{"text": ["typo"]}'),
    ("empty object", b"{}"),
    ("JSON array", b"[]"),
    ("JSON string", b'"just a string"'),
    ("not JSON", b"not json at all"),
    ("truncated JSON", b'{"texts": ["a"]'),
    ("invalid UTF-8", b'{"texts": ["\xff\xfe bad"]}'),
    ("k = 0", b'{"texts": ["ok"], "options": {"k": 0}}'),
    ("k negative", b'{"texts": ["ok"], "options": {"k": -5}}'),
    ("k above maximum", b'{"texts": ["ok"], "options": {"k": 999}}'),
    ("k not a number", b'{"texts": ["ok"], "options": {"k": "many"}}'),
    ("negative budget", b'{"texts": ["ok"], "options": {"budget": -1}}'),
    ("budget above maximum", b'{"texts": ["ok"], "options": {"budget": 100000}}'),
    ("alpha 0", b'{"texts": ["ok"], "options": {"alpha": 0}}'),
    ("alpha above 1", b'{"texts": ["ok"], "options": {"alpha": 1.5}}'),
    ("unknown option", b'{"texts": ["ok"], "options": {"temperature": 1}}'),
    ("options not an object", b'{"texts": ["ok"], "options": "fast"}'),
    ("extra top-level field", b'{"texts": ["ok"], "debug": true}'),
    ("10,000 texts", json.dumps({"texts": ["t"] * 10_000}).encode()),
    ("one text over the per-request limit", json.dumps({"texts": ["t"] * 33}).encode()),
    ("empty body", b""),
    ("return_spans not bool", b'{"texts": ["ok"], "options": {"return_spans": "maybe"}}'),
    ("float k", b'{"texts": ["ok"], "options": {"k": 2.5}}'),
]


def run_malformed(url: str) -> dict:
    rows = []
    for name, body in MALFORMED:
        status, payload, _ = _post(url, body, timeout=60)
        rows.append({"case": name, "status": status, "message": payload.get("error") or payload})
    with urllib.request.urlopen(url + "/healthz", timeout=30) as r:
        healthy = json.loads(r.read()).get("status") == "ok"
    status, _, _ = _post(url, b'{"texts": ["a fine film ."]}')
    return {
        "cases": rows,
        "n": len(rows),
        "all_4xx_with_message": all(400 <= r["status"] < 500 and isinstance(r["message"], str) for r in rows),
        "any_5xx": any(r["status"] >= 500 or r["status"] < 0 for r in rows),
        "healthy_after": healthy,
        "classify_after_status": status,
    }


def run_burst(url: str, n: int) -> dict:
    """n requests at the same instant: beyond the in-flight limit they must get 503 with Retry-After, not queue."""
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def one() -> None:
        req = urllib.request.Request(
            url + "/v1/classify",
            data=b'{"texts": ["a fine , funny film ."]}',
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                out = (r.status, None)
        except urllib.error.HTTPError as e:
            out = (e.code, e.headers.get("Retry-After"))
        except Exception:  # noqa: BLE001 - a dropped connection is a failure to report
            out = (-1, None)
        with lock:
            results.append(out)

    threads = [threading.Thread(target=one) for _ in range(n)]
    t = time.time()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=900)
    codes = [c for c, _ in results]
    return {
        "burst": n,
        "ok": codes.count(200),
        "rejected_503": codes.count(503),
        "503_with_retry_after": sum(1 for c, h in results if c == 503 and h),
        "other": [c for c in codes if c not in (200, 503)],
        "wall_seconds": round(time.time() - t, 1),
    }


def _compare(res: dict, ref: dict) -> None:
    from frs_ray.certify.smooth import certificates_match

    common = [t for t in res["certificates"] if t in ref]
    res["compared_with_reference"] = len(common)
    res["identical_to_reference"] = sum(certificates_match(res["certificates"][t], ref[t]) for t in common)
    res["bit_identical_to_reference"] = sum(res["certificates"][t] == ref[t] for t in common)
    res["comparison"] = (
        "certificates_match: all fields equal, span scores within 1e-5; bit-identical counts exact equality of every digit"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--texts", type=int, default=40, help="distinct SST-2 test sentences cycled by the clients")
    ap.add_argument("--faults", action="store_true")
    ap.add_argument("--reference", default=None, help="JSON of a run without faults to compare certificates with")
    ap.add_argument("--malformed", action="store_true")
    ap.add_argument("--burst", type=int, default=0, help="send this many requests at once (backpressure check)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare-only", action="store_true", help="recompute the comparison of --out with --reference")
    args = ap.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.exit("error: this benchmark only targets loopback addresses")
    if args.compare_only:
        res = json.loads(Path(args.out).read_text())
    elif args.malformed:
        res = run_malformed(args.url)
    elif args.burst:
        res = run_burst(args.url, args.burst)
    else:
        from frs_ray.data import load_dataset

        texts = load_dataset("sst2", "test").subset(args.texts, seed=0).texts
        res = run_load(args.url, texts, args.clients, args.seconds, args.faults)
    if args.reference and "certificates" in res:
        _compare(res, json.loads(Path(args.reference).read_text())["certificates"])
    if not args.compare_only:
        res["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        res["command"] = " ".join(["python"] + sys.argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    summary = {k: v for k, v in res.items() if k not in ("certificates", "cases")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
