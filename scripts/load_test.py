"""Load test of `tfsft serve` on 127.0.0.1 (a benchmark, not a test).

Starts `tfsft serve MODEL_DIR` in a subprocess on free ports, waits until it answers,
sends N requests from C concurrent clients (one sentence each, raw text, REST row
format), and prints errors, throughput and latency percentiles as JSON.

    python scripts/load_test.py saved_models/quickstart --requests 200 --concurrency 200
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SENTENCES = Path(__file__).resolve().parent.parent / "tfsft/demo_data/sentiment_dev.tsv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes) -> tuple[bool, float]:
    start = time.perf_counter()
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            ok = resp.status == 200 and "predictions" in json.loads(resp.read())
    except (urllib.error.URLError, OSError):
        ok = False
    return ok, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfsft",
            "serve",
            str(args.model_dir),
            "--port",
            str(port),
            "--no-grpc",
            "--max-batch-size",
            str(args.max_batch_size),
            "--batch-timeout-ms",
            str(args.batch_timeout_ms),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    name = args.model_dir.name
    base = f"http://127.0.0.1:{port}/v1/models/{name}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(base, timeout=5).read()
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        else:
            sys.exit("server did not start within 300 s")
        lines = SENTENCES.read_text().splitlines()[1:]
        texts = [line.split("\t")[0] for line in lines]
        bodies = [
            json.dumps({"instances": [texts[i % len(texts)]]}).encode()
            for i in range(args.requests)
        ]
        post(f"{base}:predict", bodies[0])  # warm-up: traces the batch path
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            results = list(pool.map(lambda b: post(f"{base}:predict", b), bodies))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=60)
    latencies = np.array([t for _, t in results]) * 1000
    print(
        json.dumps(
            {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "errors": sum(not ok for ok, _ in results),
                "seconds": round(wall, 2),
                "requests_per_second": round(args.requests / wall, 1),
                "p50_ms": round(float(np.percentile(latencies, 50)), 1),
                "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
