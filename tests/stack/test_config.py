"""The compose file as a user runs it: checked from `docker compose config`, no containers needed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = {
    "postgres",
    "minio",
    "mlflow",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "predictor",
    "evidently",
    "jupyter",
}
STATEFUL = {"postgres": "/var/lib/postgresql/data", "minio": "/data", "evidently": "/data/evidently"}


@pytest.fixture(scope="module")
def config() -> dict:
    out = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out)


def test_every_published_port_is_bound_to_loopback(config):
    published = [(name, port) for name, svc in config["services"].items() for port in svc.get("ports") or []]
    assert published, "the stack publishes no port at all"
    exposed = [
        f"{name}:{p.get('published')} on {p.get('host_ip') or '0.0.0.0'}"
        for name, p in published
        if p.get("host_ip") != "127.0.0.1"
    ]
    assert exposed == []


def test_nothing_uses_host_port_5000(config):
    ports = {str(p.get("published")) for svc in config["services"].values() for p in svc.get("ports") or []}
    assert "5000" not in ports


def test_every_long_running_service_has_a_healthcheck(config):
    missing = [n for n in LONG_RUNNING if not (config["services"][n].get("healthcheck") or {}).get("test")]
    assert missing == []


def test_stateful_services_keep_data_in_named_volumes(config):
    for name, target in STATEFUL.items():
        mounts = {v["target"]: v for v in config["services"][name].get("volumes") or []}
        assert mounts[target]["type"] == "volume", f"{name} keeps {target} outside a named volume"


def test_every_image_is_pinned(config):
    for name, svc in config["services"].items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name} uses an unpinned image {image!r}"


def test_only_the_scheduler_gets_the_docker_socket(config):
    with_socket = [
        name
        for name, svc in config["services"].items()
        if any(v.get("source") == "/var/run/docker.sock" for v in svc.get("volumes") or [])
    ]
    assert with_socket == ["airflow-scheduler"]


def test_airflow_containers_share_one_jwt_secret(config):
    secrets = {
        svc["environment"].get("AIRFLOW__API_AUTH__JWT_SECRET")
        for name, svc in config["services"].items()
        if name.startswith("airflow-")
    }
    assert len(secrets) == 1 and None not in secrets


def _waits_for(config: dict, name: str, seen: frozenset = frozenset()) -> set[str]:
    """Every service `name` waits for, directly or through another."""
    direct = set(config["services"][name].get("depends_on") or {})
    return direct | {w for d in direct - seen for w in _waits_for(config, d, seen | {name})}


def test_every_service_waits_for_the_preflight_check_of_secrets(config):
    for name in config["services"]:
        if name != "preflight":
            assert "preflight" in _waits_for(config, name), f"{name} can start before preflight"
    for name, svc in config["services"].items():
        for dependency, rule in (svc.get("depends_on") or {}).items():
            if dependency == "preflight":
                assert rule["condition"] == "service_completed_successfully", name


def test_bind_address_publishes_every_port_on_it():
    out = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
        capture_output=True, text=True, check=True, cwd=ROOT, env=os.environ | {"BIND_ADDRESS": "0.0.0.0"},
    ).stdout  # fmt: skip
    services = json.loads(out)["services"]
    addresses = {p.get("host_ip") for svc in services.values() for p in svc.get("ports") or []}
    assert addresses == {"0.0.0.0"}
    assert services["preflight"]["environment"]["BIND_ADDRESS"] == "0.0.0.0"
