"""Forecast GETs beside predicts: what a predict's pass costs the rest of the API's traffic.

Builds bench/api.py's database (the ``sine:bench`` series and its champion), serves the real app in its
own process, and runs wrk twice per round: ``POST /v1/models/{id}/predict`` of 256 windows at one
connection alone, then the same beside GETs of the forecast at 8 connections. Prints p50/p99 and
requests per second of each (needs wrk). Results and their story: bench/results/api.md.

    .venv/bin/python bench/api_mixed.py [--rounds 2] [--duration 6]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api as bench  # noqa: E402


def figures(out: str) -> str:
    """p50, p99 and requests per second from wrk's ``--latency`` report."""
    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        if m is None:
            raise RuntimeError(f"wrk printed no {label}% latency:\n{out}")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return f"p50 {ms('50'):.2f} ms p99 {ms('99'):.2f} ms {float(rps.group(1)) if rps else float('nan'):.0f}/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="forecaster-bench-mixed-"))
    url, mv = bench.build_database(tmp / "bench.db")
    (tmp / "batch.json").write_text(json.dumps({"windows": bench.make_windows(256)}))
    (tmp / "post.lua").write_text(f'wrk.method = "POST"\nwrk.body = io.open("{tmp}/batch.json"):read("*a")\n'
                                  'wrk.headers["Content-Type"] = "application/json"\n')
    server = bench.Server("real", url)
    try:
        server.wait_ready(f"/v1/series/{bench.KEY}/forecast")
        post = ["wrk", "-t1", "-c1", f"-d{args.duration}s", "--latency", "-s", str(tmp / "post.lua"),
                f"{server.url}/v1/models/{mv}/predict"]
        get = ["wrk", "-t1", "-c8", f"-d{args.duration}s", "--latency", f"{server.url}/v1/series/{bench.KEY}/forecast"]
        subprocess.run(post[:3] + ["-d2s"] + post[4:], capture_output=True, check=True)  # loads the model
        for i in range(args.rounds):
            alone = subprocess.run(post, capture_output=True, text=True, check=True).stdout
            g = subprocess.Popen(get, stdout=subprocess.PIPE, text=True)
            p = subprocess.Popen(post, stdout=subprocess.PIPE, text=True)
            got, posted = g.communicate()[0], p.communicate()[0]
            print(f"round {i}: predict alone {figures(alone)} | beside GETs: GET {figures(got)}, "
                  f"predict {figures(posted)}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
