"""The Airflow image's plugin (services/airflow/plugins/host_check.py): the API server, built as `airflow api-server`
builds it, answers only the Host names in AIRFLOW_ALLOWED_HOSTS, on its REST API, UI and the tasks' execution API.
Needs Airflow (the .venv-airflow venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

pytest.importorskip("airflow", reason="runs in the Airflow venv (make test-dags)")

PLUGINS = Path(__file__).resolve().parents[2] / "services" / "airflow" / "plugins"

# Run in a process of its own: Airflow reads its plugins folder once, when it is first imported.
BUILD_AND_ASK = """
import json, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

client = TestClient(create_app(), base_url="http://localhost:8080", raise_server_exceptions=False)
paths = ("/api/v2/version", "/execution/health")
answers = {h: [client.get(p, headers={"Host": h}).status_code for p in paths] for h in json.loads(sys.argv[1])}
print(json.dumps(answers))
"""
HOSTS = ["localhost:8080", "127.0.0.1:8080", "airflow-apiserver:8080", "evil.example", "localhost.evil.example:8080"]


def ask(tmp_path: Path, **env: str) -> dict[str, list[int]]:
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
    }
    environment.pop("AIRFLOW_ALLOWED_HOSTS", None)
    environment.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_AND_ASK, json.dumps(HOSTS)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_api_server_answers_its_names_and_refuses_others(tmp_path):
    answers = ask(tmp_path)  # AIRFLOW_ALLOWED_HOSTS unset: the plugin's default, compose's
    for host in ("localhost:8080", "127.0.0.1:8080", "airflow-apiserver:8080"):
        assert answers[host] == [200, 200], (host, answers)
    for host in ("evil.example", "localhost.evil.example:8080"):
        assert answers[host] == [400, 400], (host, answers)


def test_a_bad_list_fails_every_request_rather_than_turn_the_check_off(tmp_path):
    answers = ask(tmp_path, AIRFLOW_ALLOWED_HOSTS="localhost:8080")
    assert {status for statuses in answers.values() for status in statuses} == {500}, answers
