"""`make demo` on the running stack, with a shortened clock: the unattended loop reaches every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_loop_unattended(settings):
    env = {
        **os.environ,
        "MINIO_API_PORT": str(settings.minio_api_port),
        "MLFLOW_PORT": str(settings.mlflow_port),
        "AIRFLOW_PORT": str(settings.airflow_port),
        "PREDICTOR_PORT": str(settings.predictor_port),
        "EVIDENTLY_PORT": str(settings.evidently_port),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--traffic-seconds", "30", "--batches", "8"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1500,
    )
    print(done.stdout[-4000:], done.stderr[-4000:])
    steps = [line.split("]", 1)[1].split()[0] for line in done.stdout.splitlines() if line.startswith("[")]
    assert steps == [str(n) for n in range(1, 9)], done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["healthy"]["decay"] is False
    assert result["decayed"]["decay"] is True and result["decayed"]["state"] == "failed"
    assert any(r.startswith("performance:") for r in result["decayed"]["reasons"])
    assert result["decision"]["promoted"] is True
    assert result["decision"]["challenger_mae"] < result["decision"]["champion_mae"]
    assert result["recovered"]["decay"] is False and result["recovered"]["state"] == "success"
    assert done.returncode == 0 and result["ok"] is True
