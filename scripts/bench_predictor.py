"""This prediction service against `mlflow models serve` and a bare FastAPI echo, side by side, in one run.

Prints a table and the predictor's memory; asserts nothing but that the servers agree. Needs the stack up
with a production model (`docker compose up -d --wait`, then train and promote one) and Debian's `wrk` on
the host (`apt-get install wrk`).

    python scripts/bench_predictor.py [--duration 15] [--connections 16] [--settle 60]

Each case (one record; a 1,000-record batch) goes to three servers, two worker processes each, with the
same records:
- this predictor, as the stack runs it;
- `mlflow models serve` on the same version (`models:/<name>/<production version>`);
- a bare FastAPI endpoint that parses the JSON and returns it (scripts/bench_echo_app.py): the floor that
  any FastAPI service pays, before it does anything.
The last two run in containers of the project image on the stack's network, published on 127.0.0.1
(--mlflow-port, --echo-port), and are removed at the end. The predictor container's memory (`docker stats`)
is printed before the loads, right after them, and --settle seconds later.

With --shadow (needs a `staging` version other than production), this predictor is measured again, each case
with the experiment off and with a shadow experiment on (`registry.set_experiment`): the same cases, plus one
record on one connection, where the latency is the request's own and not time in a queue. A case is measured
--rounds times each way, alternating (off, on; on, off; off, on; ...), so that what else the machine does, and
its drift, weigh on both alike. The table has the median of each figure; below it, each round's ratio, the
median of those ratios with a 95 % bootstrap interval over the rounds (on a busy 2-CPU machine one round moves
by more than 10 % either way: take --rounds 8 or more for an interval worth reading), p50 and p99 of every
request with the rounds pooled each way (wrk's latency histograms, where they are quick to read: p99 of all
the rounds' requests rests on more of them than one round's), with a 95 % bootstrap interval over the rounds,
the range of the shadow-off runs alone, and the predictor container's CPU time per request, off and on (its
cgroup's).

With --pause SERVICE ..., those services of the stack are frozen (`docker pause`) during the shadow cases and
thawed after, however the run ends: on a 2-CPU machine, Airflow's scheduler and DAG processor wake every
few seconds, and each wake-up that lands on a request is in its p99, off and on alike. The services the
predictor needs (MinIO, MLflow, Postgres) cannot be paused. With --only-one-connection, the shadow cases are
just the one-record, one-connection case, the one where p99 is the request's own latency.

The stack's `monitoring` DAG is paused while this runs (and unpaused after, if it was), once a run of it that
is under way has ended: every five minutes it checks the requests captured since, and after a benchmark that is
millions of rows, a CPU's work for minutes, which would be measured as the predictor's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import requests

from mlops_sandbox.airflow_api import AirflowAPI
from mlops_sandbox.config import get_settings
from mlops_sandbox.contracts import PRODUCTION
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import generate_batch
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.tracking import use_tracking_server

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
done = function(summary, latency, requests)
  -- every request's latency, as wrk's histogram (microseconds, count), when it is cheap to read: each
  -- latency(i) scans the histogram from its start
  if #latency * (latency.max - latency.min) > {histogram_cost} then return end
  local out = io.open("{histogram}", "w")
  for i = 1, #latency do
    local value, count = latency(i)
    out:write(string.format("%d %d\\n", value, count))
  end
  out:close()
end
"""
HISTOGRAM_COST = 10_000_000_000  # distinct latencies x their range: at most a few seconds of wrk's time to read
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
SCRIPTS = Path(__file__).resolve().parent
OURS, MLFLOW, ECHO = "this predictor", "mlflow models serve", "bare FastAPI echo"
SHADOW, ONE_CONNECTION = "this predictor, shadow on", "single row, 1 connection"
NEEDED_SERVICES = frozenset({"predictor", "minio", "mlflow", "postgres"})  # --pause refuses them
SHADOW_OFF = "this predictor, shadow off"
SHADOW_COUNTERS = ("predictor_shadow_rows_total", "predictor_shadow_dropped_rows_total")
MONITORING_DAG = "monitoring"
MONITORING_WAIT_SECONDS = 1200  # for a monitoring run under way to end, before the measurements start
CGROUP_V2_CPU, CGROUP_V1_CPU = "/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpuacct/cpuacct.usage"
MLFLOW_CONTAINER, ECHO_CONTAINER = "mlops-sandbox-bench-mlflow-serve", "mlops-sandbox-bench-echo"


def wrk(url: str, body: str, duration: int, connections: int) -> dict:
    """Run wrk against `url` with `body` as the POST; requests/s, p50 and p99 in ms, the requests made, the
    non-2xx count, and every request's latency (`histogram`: microseconds -> count, or None where it was too
    long to read)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "body.json").write_text(body)
        histogram = Path(tmp, "latency.txt")
        lua = LUA.format(body=Path(tmp, "body.json"), histogram=histogram, histogram_cost=HISTOGRAM_COST)
        Path(tmp, "post.lua").write_text(lua)
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "-s",
                str(Path(tmp, "post.lua")),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        counts = None
        if histogram.exists():
            counts = {int(v): int(n) for v, n in (line.split() for line in histogram.read_text().splitlines())}

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": int(re.search(r"^\s+(\d+) requests in ", out, re.M).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
        "histogram": counts,
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


def start_container(name: str, args: argparse.Namespace, port: str, options: list[str], command: list[str]) -> None:
    """`docker run -d --rm` of the project image on the stack's network, `port` published on 127.0.0.1."""
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", args.network, "-p", f"127.0.0.1:{port}"]
        + options
        + [args.image, *command],
        check=True,
        capture_output=True,
    )


def memory(container: str) -> str:
    """The container's memory as `docker stats` shows it ("123.4MiB / 15.6GiB"), or why there is none."""
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else f"n/a ({out.stderr.strip()})"


def container_cpu_seconds(container: str) -> float | None:
    """The CPU time the container's processes have used so far (its cgroup's, v2 or v1), or None."""
    out = subprocess.run(
        ["docker", "exec", container, "sh", "-c", f"cat {CGROUP_V2_CPU} 2>/dev/null || cat {CGROUP_V1_CPU}"],
        capture_output=True,
        text=True,
    ).stdout
    v2 = re.search(r"^usage_usec (\d+)$", out, re.M)
    if v2:
        return int(v2.group(1)) / 1e6
    return int(out) / 1e9 if out.strip().isdigit() else None


def paired_ratio(off: list[dict], on: list[dict], figure: str, resamples: int = 10_000) -> tuple[float, ...]:
    """The median of the rounds' ratios (on / off, each round's two runs side by side in time), and its 95 %
    bootstrap interval over the rounds: what one would see again, with the machine's drift between rounds
    taken out."""
    ratios = np.array([b[figure] / a[figure] for a, b in zip(off, on, strict=True)])
    picks = np.random.default_rng(0).integers(0, len(ratios), size=(resamples, len(ratios)))
    low, high = np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)


class Pooled(NamedTuple):
    """A percentile of every request's latency, each way's rounds pooled (see `pooled_ratio`)."""

    ratio: float  # on / off
    low: float  # the ratio's 95 % bootstrap interval
    high: float
    off_ms: float
    on_ms: float
    off_requests: float  # the pooled histograms' totals
    on_requests: float


def pooled_ratio(off: list[dict], on: list[dict], percentile: float, resamples: int = 4_000) -> Pooled | None:
    """The on/off ratio of a percentile of every request's latency, each way's rounds pooled, in ms off and on,
    and its 95 % bootstrap interval (rounds drawn with replacement, each with its two runs); None where a run has
    no histogram. More requests behind each figure than in one run's percentile, so less noise."""
    runs = off + on
    if any(r["histogram"] is None for r in runs):
        return None
    grid = np.array(sorted(set().union(*(r["histogram"] for r in runs))))
    counts = np.zeros((len(runs), len(grid)))
    for i, run in enumerate(runs):
        counts[i, np.searchsorted(grid, list(run["histogram"]))] = list(run["histogram"].values())
    rounds = len(off)

    def latency_ms(weights: np.ndarray, half: np.ndarray) -> np.ndarray:
        cumulative = np.cumsum(weights @ half, axis=1)  # one pooled histogram per row of weights
        first = (cumulative < cumulative[:, -1:] * percentile / 100).sum(axis=1)
        return grid[first] / 1000

    def ratios(weights: np.ndarray) -> np.ndarray:
        return latency_ms(weights, counts[rounds:]) / latency_ms(weights, counts[:rounds])

    every = np.ones((1, rounds))
    draws = np.random.default_rng(0).multinomial(rounds, [1 / rounds] * rounds, size=resamples)
    drawn = np.concatenate([ratios(chunk) for chunk in np.array_split(draws, max(1, resamples // 250))])
    low, high = np.percentile(drawn, [2.5, 97.5])
    off_ms, on_ms = latency_ms(every, counts[:rounds])[0], latency_ms(every, counts[rounds:])[0]
    off_n, on_n = counts[:rounds].sum(), counts[rounds:].sum()
    return Pooled(on_ms / off_ms, float(low), float(high), off_ms, on_ms, off_n, on_n)


def times(ratio: float) -> str:
    """1.5x, 12.3x; a ratio under 1 with two decimals (0.04x), which one would round to nothing."""
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--mlflow-port", type=int, default=5051)
    parser.add_argument("--echo-port", type=int, default=5052)
    parser.add_argument("--network", default=os.environ.get("STACK_NETWORK", "mlops-sandbox"))
    parser.add_argument("--image", default="mlops-sandbox/project:0.1.0")
    parser.add_argument(
        "--predictor-container", help="whose memory to print (docker stats); by default, --project's predictor"
    )
    parser.add_argument("--settle", type=int, default=60, help="seconds after the loads to read memory again; 0 skips")
    parser.add_argument("--shadow", action="store_true", help="measure this predictor again in shadow mode")
    parser.add_argument("--rounds", type=int, default=3, help="with --shadow: measurements each way per case")
    parser.add_argument(
        "--pause", nargs="+", default=[], metavar="SERVICE", help="with --shadow: stack services frozen meanwhile"
    )
    parser.add_argument(
        "--only-one-connection", action="store_true", help="with --shadow: only one record on one connection"
    )
    parser.add_argument(
        "--project", default=os.environ.get("COMPOSE_PROJECT_NAME", "mlops-sandbox"), help="the compose project"
    )
    args = parser.parse_args()
    args.predictor_container = args.predictor_container or compose_container(args.project, "predictor")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if (args.pause or args.only_one_connection) and not args.shadow:
        parser.error("--pause and --only-one-connection go with --shadow")
    if needed := sorted(set(args.pause) & NEEDED_SERVICES):
        parser.error(f"the predictor needs {', '.join(needed)} while it is measured: not paused")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    exit_on_sigterm()

    settings = get_settings()
    client = use_tracking_server(settings)
    version = client.get_model_version_by_alias(settings.model_name, PRODUCTION).version
    schema = get_schema(settings.scenario)
    rows = generate_batch(settings.scenario, 123, parse_time("2030-01-01T00:00Z"), 1000)
    records = json.loads(rows[schema.feature_names].to_json(orient="records"))
    ours = settings.predictor_url
    mlflow_url = f"http://127.0.0.1:{args.mlflow_port}"
    echo_url = f"http://127.0.0.1:{args.echo_port}"

    # the body this predictor and the echo get, and the same records as MLflow's dataframe_records
    cases = {"single row": (records[0], records[:1]), "1,000-row batch": (records, records)}
    memories = []
    results = {}
    with monitoring_paused(settings):
        measure(settings, version, cases, memories, results, args, (ours, mlflow_url, echo_url))
    report(settings, version, cases, memories, results, args)


@contextlib.contextmanager
def monitoring_paused(settings):
    """The `monitoring` DAG paused, once its run under way (if any) has ended; as it was again afterwards."""
    airflow = AirflowAPI(settings)
    dag = f"/dags/{MONITORING_DAG}"
    paused = airflow.call("GET", dag)["is_paused"]

    def under_way() -> int:
        return airflow.call("GET", f"{dag}/dagRuns", params={"state": ["queued", "running"]})["total_entries"]

    deadline = time.monotonic() + MONITORING_WAIT_SECONDS
    try:
        while True:
            airflow.call("PATCH", dag, json={"is_paused": True})
            if paused or not under_way():  # a DAG the user paused is not started here, even to end a run
                break
            # a paused DAG's run does not go on: let it finish, then pause again
            airflow.call("PATCH", dag, json={"is_paused": False})
            say(f"waiting for the {MONITORING_DAG} run under way to end ...")
            while under_way():
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"a {MONITORING_DAG} run is still under way after {MONITORING_WAIT_SECONDS} s: let it end, "
                        "or mark it failed in Airflow's UI, and run this again"
                    )
                time.sleep(10)
        yield
    finally:
        try:
            airflow.call("PATCH", dag, json={"is_paused": paused})  # as it was, however this ends
        except Exception as err:  # noqa: BLE001 - say so, without hiding why the run ended
            say(f"could not set the {MONITORING_DAG} DAG back to is_paused={paused}: {err}")


def measure(settings, version: str, cases: dict, memories: list, results: dict, args, urls: tuple) -> None:
    """Each case on each server, and the predictor's memory around them (then the shadow cases)."""
    ours, mlflow_url, echo_url = urls
    records = cases["1,000-row batch"][0]
    try:
        start_container(
            MLFLOW_CONTAINER,
            args,
            f"{args.mlflow_port}:5001",
            ["-e", "MLFLOW_TRACKING_URI=http://mlflow:5000", "-e", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false"],
            ["mlflow", "models", "serve", "-m", f"models:/{settings.model_name}/{version}", "--env-manager", "local"]
            + ["-h", "0.0.0.0", "-p", "5001", "--workers", "2"],
        )
        start_container(
            ECHO_CONTAINER,
            args,
            f"{args.echo_port}:8000",
            ["-v", f"{SCRIPTS}:/bench:ro"],
            ["uvicorn", "bench_echo_app:app", "--app-dir", "/bench", "--host", "0.0.0.0", "--port", "8000"]
            + ["--workers", "2", "--no-access-log"],
        )
        wait_ready(f"{mlflow_url}/ping")
        wait_ready(f"{echo_url}/openapi.json")
        # same answers first: a benchmark of servers that disagree means nothing
        a = requests.post(f"{ours}/predict", json=records[:5], timeout=30).json()
        b = requests.post(f"{mlflow_url}/invocations", json={"dataframe_records": records[:5]}, timeout=30).json()
        c = requests.post(f"{echo_url}/echo", json=records[:5], timeout=30).json()
        assert a["model_version"] == str(version), a
        assert all(abs(x - y) <= 1e-6 * abs(y) for x, y in zip(a["predictions"], b["predictions"], strict=True))
        assert c == records[:5], c

        memories.append(("before the loads", memory(args.predictor_container)))
        for case, (body, dataframe_records) in cases.items():
            targets = {
                OURS: (f"{ours}/predict", json.dumps(body)),
                MLFLOW: (f"{mlflow_url}/invocations", json.dumps({"dataframe_records": dataframe_records})),
                ECHO: (f"{echo_url}/echo", json.dumps(body)),
            }
            for server, (url, payload) in targets.items():
                say(f"{case}: {server} ({args.duration} s) ...")
                results[(case, server)] = wrk(url, payload, args.duration, args.connections)
        memories.append(("right after the loads", memory(args.predictor_container)))
    finally:
        for name in (MLFLOW_CONTAINER, ECHO_CONTAINER):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    if args.settle:
        say(f"waiting {args.settle} s for the predictor to settle ...")
        time.sleep(args.settle)
        memories.append((f"{args.settle} s after the loads", memory(args.predictor_container)))
    if args.shadow:  # after the memory readings: the candidate is a second model in every worker
        shadow_cases(settings, cases, memories, results, args)


def report(settings, version: str, cases: dict, memories: list, results: dict, args) -> None:
    print(
        f"\n{settings.model_name} v{version}, wrk -t2 -c{args.connections} -d{args.duration}s, "
        f"{os.cpu_count()} CPUs, each server with 2 workers\n"
    )
    print("| case | server | req/s | rows/s | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|---|---|")
    for (case, server), r in results.items():
        print(
            f"| {case} | {server} | {r['rps']:,.0f} | {r['rps'] * len(cases[case][1]):,.0f} | {r['p50']:.1f} | "
            f"{r['p99']:.1f} | {r['errors']} |"
        )
    print()
    for case in (c for c in cases if (c, MLFLOW) in results):
        mine = results[(case, OURS)]
        print(f"{case}:")
        for label, server in (("mlflow", MLFLOW), ("echo", ECHO)):
            theirs = results[(case, server)]
            print(
                f"  this predictor vs {label}: {times(mine['rps'] / theirs['rps'])} the rows/s, "
                f"p99 {mine['p99'] / theirs['p99']:.2f}x"
            )
    if args.shadow:
        paused = f"; {', '.join(args.pause)} paused meanwhile" if args.pause else ""
        print(
            f"\nshadow on against off (this predictor; medians of {args.rounds} alternating rounds each way{paused}):"
        )
        for case in (c for c in cases if (c, SHADOW) in results):  # shadow_cases added ONE_CONNECTION
            off, on = results[(case, SHADOW_OFF)], results[(case, SHADOW)]
            print(
                f"  {case}: {times(on['rps'] / off['rps'])} the req/s, p50 {on['p50'] / off['p50']:.2f}x, "
                f"p99 {on['p99'] / off['p99']:.2f}x; {on['shadow'][0]:,.0f} rows shadowed, "
                f"{on['shadow'][1]:,.0f} not"
            )
            pairs = zip(off["rounds"], on["rounds"], strict=True)
            print(
                "    each round, on/off: "
                + "; ".join(f"p50 {b['p50'] / a['p50']:.2f}x p99 {b['p99'] / a['p99']:.2f}x" for a, b in pairs)
            )
            paired = {figure: paired_ratio(off["rounds"], on["rounds"], figure) for figure in ("rps", "p50", "p99")}
            print(
                "    the rounds' ratios, median [95 % bootstrap interval]: "
                + ", ".join(f"{name} {m:.2f}x [{lo:.2f}, {hi:.2f}]" for name, (m, lo, hi) in paired.items())
            )
            for figure, percentile in (("p50", 50), ("p99", 99)):
                if (p := pooled_ratio(off["rounds"], on["rounds"], percentile)) is not None:
                    print(
                        f"    every request, the rounds pooled ({p.off_requests:,.0f} off, {p.on_requests:,.0f} on), "
                        f"{figure}: {p.off_ms:.2f} ms off, {p.on_ms:.2f} ms on, "
                        f"{p.ratio:.2f}x [{p.low:.2f}, {p.high:.2f}]"
                    )
            for figure in ("p50", "p99"):
                alone = [r[figure] for r in off["rounds"]]
                print(f"    shadow off alone, {figure}: {min(alone):.2f} to {max(alone):.2f} ms")
            if all(r["cpu_us"] is not None for r in off["rounds"] + on["rounds"]):
                off_cpu, on_cpu = (statistics.median(r["cpu_us"] for r in runs["rounds"]) for runs in (off, on))
                on_settled = statistics.median(r["cpu_us_settled"] for r in on["rounds"])
                print(
                    f"    the predictor container's CPU per request (medians): {off_cpu:.0f} us off, {on_cpu:.0f} us "
                    f"on during the load, {on_settled:.0f} us on with the scorers' backlog done"
                )
    print(f"\nmemory of {args.predictor_container} (docker stats):")
    for when, usage in memories:
        print(f"  {when}: {usage}")


def shadow_counts(settings) -> tuple[float, float]:
    """The rows the predictor's workers have shadowed, and those they have not, so far (from /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{settings.predictor_url}/metrics", timeout=30).text
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    return tuple(sum(s.value for s in samples if s.name == name) for name in SHADOW_COUNTERS)


def settled_shadow_counts(settings, timeout: float = 120) -> tuple[float, float]:
    """`shadow_counts` once they stop moving: the scorer processes have scored (or dropped) what they had."""
    last, deadline = shadow_counts(settings), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(2)
        now = shadow_counts(settings)
        if now == last:
            break
        last = now
    return last


def shadow_cases(settings, cases: dict, memories: list, results: dict, args: argparse.Namespace) -> None:
    """This predictor with shadow off and on, --rounds times each, alternating, case by case: the cases at
    --connections, and one record on one connection (with --only-one-connection, only that one). Each result
    is the medians, with the rounds kept in `rounds` and the rows shadowed and not summed in `shadow`. The
    experiment is set off at the end."""
    from mlops_sandbox import registry

    one = cases[ONE_CONNECTION] = cases["single row"]
    shadowed = {ONE_CONNECTION: one} if args.only_one_connection else dict(cases)
    try:
        with stack_paused(args.project, args.pause):
            shadow_rounds(settings, shadowed, memories, results, args)
    finally:
        registry.set_experiment("off", "bench", "bench_predictor.py --shadow is done", settings=settings)


def exit_on_sigterm() -> None:
    """Make a SIGTERM (`kill`, `timeout`) end the run as ^C does, through its `finally` blocks: the paused
    services are thawed, the monitoring DAG set back as it was and the experiment set off again. (Python's default for
    SIGTERM ends the process on the spot.)"""
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))


def compose_container(project: str, service: str) -> str:
    """The container Compose names for the first (here, the only) replica of a service."""
    return f"{project}-{service}-1"


@contextlib.contextmanager
def stack_paused(project: str, services: list[str]):
    """Those services' containers frozen (`docker pause`), and thawed after, however the run ends."""
    paused = []
    try:
        for service in services:
            name = compose_container(project, service)
            done = subprocess.run(["docker", "pause", name], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"could not pause {service} ({name}): {done.stderr.strip()}")
            paused.append(name)
        if paused:
            say(f"paused: {', '.join(paused)}")
        yield
    finally:
        for name in paused:
            done = subprocess.run(["docker", "unpause", name], capture_output=True, text=True)
            if done.returncode != 0:
                say(f"could not unpause {name}: {done.stderr.strip()}; run `docker unpause {name}`")


def shadow_rounds(settings, cases: dict, memories: list, results: dict, args: argparse.Namespace) -> None:
    """`shadow_cases`' rounds of `cases`, off and on in turn."""
    from mlops_sandbox import loop, registry

    modes = (("off", SHADOW_OFF), ("shadow", SHADOW))
    for case, (body, _) in cases.items():
        connections = 1 if case == ONE_CONNECTION else args.connections
        runs: dict[str, list[dict]] = {server: [] for _, server in modes}
        for turn in range(args.rounds):
            for mode, server in modes if turn % 2 == 0 else modes[::-1]:
                registry.set_experiment(mode, "bench", f"bench_predictor.py --shadow: {case}", settings=settings)
                experiment = loop.wait_until_experiment(settings, mode, running=mode != "off")
                candidate = f"candidate version {experiment['candidate_version']}, " if mode != "off" else ""
                say(f"{case}: {server}, round {turn + 1} of {args.rounds} ({candidate}{args.duration} s) ...")
                before = shadow_counts(settings)
                cpu_before = container_cpu_seconds(args.predictor_container)
                run = wrk(f"{settings.predictor_url}/predict", json.dumps(body), args.duration, connections)
                cpu_after = container_cpu_seconds(args.predictor_container)
                if mode != "off":  # the scorer processes are running now; they end when it is set off
                    on_memory = memory(args.predictor_container)
                # counted once they settle: the scorers' backlog is done before the next run, off or on
                after = settled_shadow_counts(settings)
                run["shadow"] = tuple(a - b for a, b in zip(after, before, strict=True))
                # the container's CPU per request, its scorers' backlog included (done by now)
                cpu_end = container_cpu_seconds(args.predictor_container)
                known = None not in (cpu_before, cpu_after, cpu_end) and run["requests"] > 0
                run["cpu_us"] = (cpu_after - cpu_before) / run["requests"] * 1e6 if known else None
                run["cpu_us_settled"] = (cpu_end - cpu_before) / run["requests"] * 1e6 if known else None
                runs[server].append(run)
        memories.append((f"shadow on, after {case} (its last round)", on_memory))
        for server, measured in runs.items():
            results[(case, server)] = {
                **{k: statistics.median(r[k] for r in measured) for k in ("rps", "p50", "p99")},
                "errors": sum(r["errors"] for r in measured),
                "shadow": tuple(sum(r["shadow"][i] for r in measured) for i in (0, 1)),
                "rounds": measured,
            }


if __name__ == "__main__":
    main()
