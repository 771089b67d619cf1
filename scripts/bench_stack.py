"""Measure the stack: `up --wait` time, memory after idling, image sizes. Prints figures; asserts nothing.

Runs as its own compose project (`mlops-sandbox-bench`, own network and volumes), so your stack and its
data are untouched; it needs the ports free and the images built (`docker compose build`).

    python scripts/bench_stack.py [--idle 120] [--keep]

- cold start: `up -d --wait` on empty volumes (first-run init: database creation, Airflow migrations);
- warm start: `down` then `up -d --wait` with the volumes kept (a normal morning);
- memory: the sum of `docker stats` after --idle seconds with nothing to do;
- image sizes: `docker image inspect` of every image compose.yaml uses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "mlops-sandbox-bench"
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def compose(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STACK_NETWORK": PROJECT}
    return subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "-p", PROJECT, *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def timed_up() -> float:
    start = time.monotonic()
    compose("up", "-d", "--wait", "--wait-timeout", "600")
    return time.monotonic() - start


def to_bytes(text: str) -> float:
    number = text.rstrip("BKiMGk")
    unit = text[len(number) :]
    return float(number) * UNITS[unit]


def memory_by_container() -> dict[str, float]:
    ids = compose("ps", "-q").stdout.split()
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    usage = {}
    for line in out.splitlines():
        row = json.loads(line)
        usage[row["Name"].removeprefix(f"{PROJECT}-")] = to_bytes(row["MemUsage"].split("/")[0].strip())
    return usage


def image_sizes() -> dict[str, float]:
    config = json.loads(compose("config", "--format", "json").stdout)
    images = sorted({svc["image"] for svc in config["services"].values()})
    sizes = {}
    for image in images:
        out = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True
        )
        sizes[image] = float(out.stdout.strip()) if out.returncode == 0 else float("nan")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=120, help="seconds to idle before reading memory")
    parser.add_argument("--keep", action="store_true", help="leave the bench stack running")
    args = parser.parse_args()

    compose("down", "-v", "--remove-orphans")
    cold = timed_up()
    compose("down")
    warm = timed_up()
    time.sleep(args.idle)
    memory = memory_by_container()
    sizes = image_sizes()
    if not args.keep:
        compose("down", "-v", "--remove-orphans")

    print(f"\n`docker compose up -d --wait`, images built, no containers running ({os.cpu_count()} CPUs):")
    print(f"  cold (empty volumes)   {cold:6.1f} s")
    print(f"  warm (volumes kept)    {warm:6.1f} s")
    print(f"\nMemory after {args.idle} s idle (docker stats):")
    for name, used in sorted(memory.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28} {used / 2**20:7.0f} MiB")
    print(f"  {'total':<28} {sum(memory.values()) / 2**20:7.0f} MiB")
    print("\nImage sizes:")
    for image, size in sizes.items():
        print(f"  {image:<55} {size / 1e9:6.2f} GB")


if __name__ == "__main__":
    main()
