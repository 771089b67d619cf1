"""The stack's secrets: public defaults are refused off loopback, and `make secrets` writes random ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_sandbox import preflight

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_the_defaults_are_the_ones_compose_and_env_example_use():
    compose = (ROOT / "compose.yaml").read_text()
    example = (ROOT / ".env.example").read_text()
    defaults = dict(re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", compose))
    for name, value in preflight.DEFAULT_SECRETS.items():
        assert defaults[name] == value, name
        assert re.search(rf"^{name}={re.escape(value)}$", example, flags=re.M), name


@pytest.mark.parametrize("address", ["", "127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_on_loopback_the_defaults_are_fine(address):
    assert preflight.problems({"BIND_ADDRESS": address}) == []


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", "::", "my-laptop.local"])
def test_off_loopback_every_default_secret_is_named(address):
    env = {"BIND_ADDRESS": address, "JUPYTER_TOKEN": "a-token-of-mine", "POSTGRES_PASSWORD": "postgres"}
    (problem,) = preflight.problems(env)
    left = set(preflight.DEFAULT_SECRETS) - {"JUPYTER_TOKEN"}
    assert all(name in problem for name in left) and "JUPYTER_TOKEN" not in problem
    assert "make secrets" in problem and f"BIND_ADDRESS={address}" in problem


def test_off_loopback_with_every_secret_set_the_stack_may_start():
    env = {"BIND_ADDRESS": "0.0.0.0", **preflight.random_secrets()}
    assert preflight.problems(env) == []


def test_write_env_replaces_every_secret_and_keeps_the_rest(tmp_path):
    target = tmp_path / ".env"
    written = preflight.write_env(ROOT / ".env.example", target)
    text = target.read_text()
    assert set(written) == set(preflight.DEFAULT_SECRETS)
    for name, value in written.items():
        assert f"\n{name}={value}\n" in text and value != preflight.DEFAULT_SECRETS[name]
    assert preflight.default_secrets_in_use(dict(re.findall(r"^([A-Z_]+)=(.*)$", text, flags=re.M))) == []
    assert "\nMLFLOW_PORT=5050\n" in text  # every other line as in the example
    assert target.stat().st_mode & 0o777 == 0o600
    assert preflight.random_secrets() != written  # fresh each time


def test_write_env_never_overwrites_an_existing_env(tmp_path):
    target = tmp_path / ".env"
    target.write_text("POSTGRES_PASSWORD=the-one-in-my-volume\n")
    with pytest.raises(FileExistsError, match="volumes"):
        preflight.write_env(ROOT / ".env.example", target)
    assert target.read_text() == "POSTGRES_PASSWORD=the-one-in-my-volume\n"


def test_make_secrets_runs_without_the_library_installed(tmp_path):
    """`make secrets` runs the module as a plain script with the system Python, before any venv exists."""
    script = ROOT / "src" / "mlops_sandbox" / "preflight.py"
    done = subprocess.run(
        [sys.executable, "-I", str(script), "write-env", str(ROOT / ".env.example"), str(tmp_path / ".env")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = subprocess.run(
        [sys.executable, "-I", str(script), "write-env", str(ROOT / ".env.example"), str(tmp_path / ".env")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 1 and "exists" in again.stderr
