"""Latency-throughput benchmark of `tfsft serve` with `hey` (and `wrk`).

For each export: starts `tfsft serve EXPORT` on a free port (REST only), warms it
up, then measures with the load generator in its own process:

- closed loop at saturation: ``hey -n N -c C`` (C clients, each sends its next
  request when the last one is answered), one typical sentence in every request;
- the same with a different sentence per request, with ``wrk`` and a Lua script
  over the 100 sentences of ``tfsft/demo_data/sentiment_dev.tsv`` (hey sends one
  fixed body);
- "open loop" at fixed offered rates: ``hey -q 10 -c R/10`` (R/10 clients at 10
  requests/s each). hey's rate limit paces each client, which still waits for its
  answer, so a rate the server cannot keep up with shows as a lower achieved rate.

It prints the table and writes it into ``docs/benchmarks.md`` between
``<!-- benchmark:serving -->`` and ``<!-- /benchmark:serving -->``, with the
machine (lscpu), the date and the load generators' versions.

    python scripts/serve_bench.py saved_models/quickstart saved_models/sst2
    python scripts/serve_bench.py saved_models/quickstart --rates 100,200 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sections import check_out, write_section

REPO = Path(__file__).resolve().parent.parent
SENTENCES = REPO / "tfsft/demo_data/sentiment_dev.tsv"
SECTION = "serving"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentences() -> list[str]:
    lines = SENTENCES.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line.strip()]


def typical(texts: list[str]) -> str:
    """The sentence of median length (in characters)."""
    return sorted(texts, key=len)[len(texts) // 2]


def machine() -> str:
    """CPU model, family/model numbers, the flags that decide the fast precision."""
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown machine"
    fields = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in out.splitlines())
    )
    flags = set(fields.get("Flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    present = [f for f in wanted if f in flags]
    absent = [f for f in wanted if f not in flags]
    return (
        f"{fields.get('Model name', '?')}, family {fields.get('CPU family', '?')} "
        f"model {fields.get('Model', '?')}, {os.cpu_count()} CPUs; flags: "
        f"{' '.join(present) or 'none'} (no {' '.join(absent)})"
        if absent
        else f"{fields.get('Model name', '?')}, {os.cpu_count()} CPUs"
    )


def package_version(name: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", name],
            capture_output=True,
            text=True,
        ).stdout
    except OSError:
        out = ""
    return out.strip() or "?"


def start_server(
    export: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tfsft",
        "serve",
        str(export),
        "--port",
        str(port),
        "--no-grpc",
        *args.serve_args.split(),
    ]
    log = open(tempfile.mktemp(prefix="serve-bench-", suffix=".log"), "w")  # noqa: SIM115
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1/models/{export.name}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"tfsft serve exited with {server.returncode} (log: {log.name})")
        try:
            urllib.request.urlopen(base, timeout=5).read()
            return server, base
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    server.terminate()
    sys.exit(f"the server did not answer within 300 s (log: {log.name})")


def hey(
    url: str, body: Path, n: int, c: int, q: float | None = None, z: float = 0
) -> dict:
    """One hey run: ``n`` requests (or ``z`` seconds) from ``c`` clients, each
    paced at ``q`` requests/s when given."""
    amount = ["-z", f"{z:g}s"] if z else ["-n", str(n)]
    command = ["hey", *amount, "-c", str(c), "-m", "POST"]
    command += ["-T", "application/json", "-D", str(body)]
    if q:
        command += ["-q", f"{q:g}"]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True
    ).stdout
    codes = {
        int(code): int(count)
        for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)
    }
    error_block = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)*)", out)
    transport_errors = (
        sum(int(x) for x in re.findall(r"\[(\d+)\]", error_block.group(1)))
        if error_block
        else 0
    )
    pct = {
        int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", out)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = transport_errors + sum(v for k, v in codes.items() if k != 200)
    return {
        "tool": "hey",
        "command": " ".join([*command, "URL"]),
        "requests": sum(codes.values()) + transport_errors,
        "clients": c,
        "offered": q * c if q else None,
        "achieved": rps,
        "p50": pct.get(50),
        "p90": pct.get(90),
        "p99": pct.get(99),
        "errors": errors,
    }


WRK_SCRIPT = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i %% #bodies) + 1])
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, "
    .. "\\"p50\\": %%f, \\"p90\\": %%f, \\"p99\\": %%f, \\"socket_errors\\": %%d, "
    .. "\\"non2xx\\": %%d}\\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout, summary.errors.status))
end
"""


def wrk(url: str, texts: list[str], c: int, seconds: int) -> dict:
    bodies = ", ".join(
        "'"
        + json.dumps({"instances": [t]}).replace("\\", "\\\\").replace("'", "\\'")
        + "'"
        for t in texts
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % bodies)
    command = ["wrk", "-t", "1", "-c", str(c), "-d", f"{seconds}s", "--timeout", "20s"]
    try:
        out = subprocess.run(
            [*command, "-s", f.name, url], capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(f.name)
    result = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    return {
        "tool": "wrk",
        "command": " ".join([*command, "-s varied.lua URL"]),
        "requests": result["requests"],
        "clients": c,
        "offered": None,
        "achieved": result["requests"] / result["seconds"],
        "p50": result["p50"],
        "p90": result["p90"],
        "p99": result["p99"],
        "errors": result["socket_errors"] + result["non2xx"],
    }


def bench(export: Path, args: argparse.Namespace) -> list[dict]:
    texts = sentences()
    sentence = typical(texts)
    server, base = start_server(export, args)
    url = f"{base}:predict"
    results = []
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"instances": [sentence]}, f)
        body = Path(f.name)
        hey(url, body, 400, 16)  # warm-up: the batch sizes and lengths get traced
        point = hey(url, body, args.closed_requests, args.closed_clients)
        results.append(point | {"kind": "closed loop, one sentence"})
        print(json.dumps(results[-1]), flush=True)
        if shutil.which("wrk") and args.wrk_seconds:
            point = wrk(url, texts, args.closed_clients, args.wrk_seconds)
            results.append(point | {"kind": "closed loop, 100 varied sentences"})
            print(json.dumps(results[-1]), flush=True)
        for rate in args.rates:
            clients = max(1, round(rate / args.client_rate))
            point = hey(url, body, 0, clients, rate / clients, args.seconds)
            results.append(point | {"kind": "open loop (paced clients)"})
            print(json.dumps(results[-1]), flush=True)
        body.unlink()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return [r | {"export": export.name, "sentence": sentence} for r in results]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: list[dict]) -> str:
    rows = [
        "| export | load | clients | offered req/s | achieved req/s | p50 ms "
        "| p90 ms | p99 ms | errors / requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        offered = f"{r['offered']:g}" if r["offered"] else "as fast as answered"
        rows.append(
            f"| {r['export']} | {r['kind']} ({r['tool']}) | {r['clients']} | "
            f"{offered} | {r['achieved']:.1f} | {_ms(r['p50'])} | {_ms(r['p90'])} | "
            f"{_ms(r['p99'])} | {r['errors']} / {r['requests']} |"
        )
    return "\n".join(rows)


def section(results: list[dict], args: argparse.Namespace, label: str) -> str:
    sentences_used = sorted({(r["export"], r["sentence"]) for r in results})
    typical_lines = "\n".join(f"- {e}: {s!r}" for e, s in sentences_used)
    return f"""## Serving (`tfsft serve`)

Written by `scripts/serve_bench.py` ({label}). Machine: {machine()}; the load
generator runs on the same cores as the server. {dt.date.today().isoformat()}, hey
{package_version("hey")}, wrk {package_version("wrk")}; `tfsft serve` options:
`{args.serve_args or "(defaults)"}`.

Each request is one sentence in TF Serving's row format
(`{{"instances": ["..."]}}`). hey sends one fixed body, the typical (median-length)
sentence of `tfsft/demo_data/sentiment_dev.tsv`:

{typical_lines}

The wrk row cycles through all 100 sentences of that file. Closed loop: each client
sends its next request when the last one is answered (saturation). Open loop:
`hey -q 10 -c R/10` paces R/10 clients at 10 requests/s each (a client still waits
for its answer, so an overloaded server shows as a lower achieved rate).

{table(results)}
{before_part(args)}"""


def before_part(args: argparse.Namespace) -> str:
    if not args.before:
        return ""
    before = json.loads(args.before.read_text())
    return f"""
Before ({args.before_label}), measured the same way in the same session:

{table(before)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("exports", type=Path, nargs="+", help="saved_models/NAME")
    parser.add_argument("--closed-requests", type=int, default=8000)
    parser.add_argument("--closed-clients", type=int, default=64)
    parser.add_argument(
        "--wrk-seconds", type=int, default=15, help="0: no wrk run (varied sentences)"
    )
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[50, 100, 200, 300, 400, 500],
        help="offered rates in requests/s, comma-separated",
    )
    parser.add_argument("--client-rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate")
    parser.add_argument("--serve-args", default="", help="extra `tfsft serve` options")
    parser.add_argument("--label", default="", help="what was measured (for the doc)")
    parser.add_argument("--out", type=Path, default=REPO / "docs/benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--results", type=Path, help="render these saved results (--json) instead"
    )
    parser.add_argument(
        "--before", type=Path, help="saved results (--json) of an earlier version"
    )
    parser.add_argument("--before-label", default="an earlier version")
    args = parser.parse_args()
    if not shutil.which("hey"):
        sys.exit("hey is not installed (apt-get install hey)")
    if not args.no_write:
        check_out(args.out)
    if args.results:
        results = json.loads(args.results.read_text())
    else:
        results = [r for export in args.exports for r in bench(export, args)]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results))
    if not args.no_write:
        label = (
            args.label
            or "`python scripts/serve_bench.py "
            + " ".join(str(e) for e in args.exports)
            + "`"
        )
        write_section(args.out, SECTION, section(results, args, label))
        print(f"wrote the {SECTION} section of {args.out}")


if __name__ == "__main__":
    main()
