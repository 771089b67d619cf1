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


def _demo(settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    ports = {
        "MINIO_API_PORT": str(settings.minio_api_port),
        "MLFLOW_PORT": str(settings.mlflow_port),
        "AIRFLOW_PORT": str(settings.airflow_port),
        "PREDICTOR_PORT": str(settings.predictor_port),
        "EVIDENTLY_PORT": str(settings.evidently_port),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), *args],
        capture_output=True,
        text=True,
        env=os.environ | ports | env,
        cwd=ROOT,
        timeout=1500,
    )


def test_demo_that_cannot_promote_says_in_one_line_that_it_needs_a_reset(settings):
    """A used stack can refuse the demo's promotions (its production model, or stricter checks, judge them):
    the demo then stops with one line naming the refusal and `make reset`, not a traceback. Here the checks
    are made impossible to pass (R² >= 1.01), so the demo's v1 is refused whatever the stack holds."""
    done = _demo(settings, "--traffic-seconds", "5", "--batches", "2", PROMOTION_MIN_R2="1.01")
    assert done.returncode == 2, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("demo stopped: refused to move") and "metric:test_r2" in last and "make reset" in last
    steps = [line.split("]", 1)[1].split()[0] for line in done.stdout.splitlines() if line.startswith("[")]
    assert steps == ["1"]  # it stopped at the promotion of v1


def test_demo_runs_the_loop_unattended(settings):
    done = _demo(settings, "--traffic-seconds", "30", "--batches", "8")
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
    assert "Downloading artifacts" not in done.stdout + done.stderr  # no progress bars by the dozen
