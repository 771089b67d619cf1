"""This prediction service against `mlflow models serve`, side by side, on the same registered model.

Prints a table; asserts nothing. Needs the stack up with a production model (`docker compose up -d --wait`,
then train and promote one) and Debian's `wrk` on the host (`apt-get install wrk`).

    python scripts/bench_predictor.py [--duration 20] [--connections 16]

Both servers get the same version (`models:/<name>@production`), two worker processes each, and the same
records. `mlflow models serve` runs in a container of the project image on the stack's network, published on
127.0.0.1:--mlflow-port.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from mlops_sandbox.config import get_settings
from mlops_sandbox.contracts import PRODUCTION
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import generate_batch
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.tracking import use_tracking_server

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: str, duration: int, connections: int) -> dict:
    """Run wrk against `url` with `body` as the POST; requests/s, p50 and p99 in ms, and non-2xx count."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "body.json").write_text(body)
        Path(tmp, "post.lua").write_text(LUA.format(body=Path(tmp, "body.json")))
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(Path(tmp, "post.lua")), url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--mlflow-port", type=int, default=5051)
    parser.add_argument("--network", default=os.environ.get("STACK_NETWORK", "mlops-sandbox"))
    parser.add_argument("--image", default="mlops-sandbox/project:0.1.0")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    settings = get_settings()
    client = use_tracking_server(settings)
    version = client.get_model_version_by_alias(settings.model_name, PRODUCTION).version
    schema = get_schema(settings.scenario)
    rows = generate_batch(settings.scenario, 123, parse_time("2030-01-01T00:00Z"), 1000)
    records = json.loads(rows[schema.feature_names].to_json(orient="records"))

    name = "mlops-sandbox-bench-mlflow-serve"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "--network",
            args.network,
            "-p",
            f"127.0.0.1:{args.mlflow_port}:5001",
            "-e",
            "MLFLOW_TRACKING_URI=http://mlflow:5000",
            "-e",
            "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false",
            args.image,
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{settings.model_name}/{version}",
            "--env-manager",
            "local",
            "-h",
            "0.0.0.0",
            "-p",
            "5001",
            "--workers",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    try:
        mlflow_url = f"http://127.0.0.1:{args.mlflow_port}"
        wait_ready(f"{mlflow_url}/ping")
        ours = settings.predictor_url
        # same answers first: a benchmark of two servers that disagree means nothing
        a = requests.post(f"{ours}/predict", json=records[:5], timeout=30).json()
        b = requests.post(f"{mlflow_url}/invocations", json={"dataframe_records": records[:5]}, timeout=30).json()
        assert a["model_version"] == str(version), a
        assert all(abs(x - y) <= 1e-6 * abs(y) for x, y in zip(a["predictions"], b["predictions"], strict=True))

        cases = {
            "single row": (json.dumps(records[0]), json.dumps({"dataframe_records": records[:1]})),
            "1,000-row batch": (json.dumps(records), json.dumps({"dataframe_records": records})),
        }
        results = {}
        for case, (our_body, mlflow_body) in cases.items():
            results[(case, "this predictor")] = wrk(f"{ours}/predict", our_body, args.duration, args.connections)
            results[(case, "mlflow models serve")] = wrk(
                f"{mlflow_url}/invocations", mlflow_body, args.duration, args.connections
            )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)

    print(
        f"\n{settings.model_name} v{version}, wrk -t2 -c{args.connections} -d{args.duration}s, "
        f"{os.cpu_count()} CPUs, both servers with 2 workers\n"
    )
    print("| case | server | req/s | rows/s | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|---|---|")
    for (case, server), r in results.items():
        rows_per = 1000 if case.startswith("1,000") else 1
        print(
            f"| {case} | {server} | {r['rps']:,.0f} | {r['rps'] * rows_per:,.0f} | {r['p50']:.1f} | "
            f"{r['p99']:.1f} | {r['errors']} |"
        )
    for case in cases:
        ours, theirs = results[(case, "this predictor")], results[(case, "mlflow models serve")]
        print(f"{case}: {ours['rps'] / theirs['rps']:.1f}x the throughput, p99 {ours['p99'] / theirs['p99']:.2f}x")


if __name__ == "__main__":
    main()
