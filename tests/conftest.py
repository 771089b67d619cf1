"""Fixtures for the tests that need the stack (tests/stack, tests/e2e).

pytest-docker brings the stack up from compose.yaml, once per session, and takes it down after.

- The test stack is its own compose project (`mlops-sandbox-test`) with its own network and volumes, so
  `down -v` at the start and at the end never touches the stack you work with. It publishes the same host
  ports: stop your stack first (`make down`). The `down -v` at the start removes what a killed earlier test
  run left (its volumes would otherwise hold that run's models and data, and every test would see them).
- SANDBOX_TEST_REUSE_STACK=1 runs the tests against the stack that is already up (project
  `mlops-sandbox`), and leaves it running. Nothing deletes its data: the tests that reset the stack they run
  on (the workshop's `make skip-to`) are skipped, with the reason printed.
- SANDBOX_TEST_KEEP_STACK=1 leaves the test stack up after the run, to look at it.

The library is imported inside the fixtures: the DAG tests run in the Airflow venv, which lacks it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REUSE = os.environ.get("SANDBOX_TEST_REUSE_STACK") == "1"
KEEP = os.environ.get("SANDBOX_TEST_KEEP_STACK") == "1"
PROJECT = os.environ.get("SANDBOX_TEST_PROJECT", "mlops-sandbox" if REUSE else "mlops-sandbox-test")
# make targets that delete a stack's data volumes
RESETS = frozenset({"skip-to", "reset", "nuke"})
NOT_ON_A_REUSED_STACK = (
    f"resets the stack it runs on, and SANDBOX_TEST_REUSE_STACK=1 runs on a stack the tests did not create "
    f"(project {PROJECT}): its runs, registry, DVC remote and Airflow history would be deleted. Run it without "
    "SANDBOX_TEST_REUSE_STACK, on the test stack (make test-stack)"
)

if not REUSE:
    # its own network too, so the DAGs of the test stack start their containers on it
    os.environ.setdefault("STACK_NETWORK", PROJECT)


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(ROOT / "compose.yaml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return PROJECT


@pytest.fixture(scope="session")
def docker_setup():
    return False if REUSE else ["down -v --remove-orphans", "up --build --wait --wait-timeout 900"]


@pytest.fixture(scope="session")
def docker_cleanup():
    return False if (REUSE or KEEP) else ["down -v --remove-orphans"]


@pytest.fixture(scope="session")
def compose(docker_services):
    """Run `docker compose ARGS` on the stack under test (killed after `timeout` seconds, if given); returns the
    completed process."""

    def run(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "-p", PROJECT, *args],
            capture_output=True,
            text=True,
            check=check,
            cwd=ROOT,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def settings(docker_services):
    """Host-side settings pointing at the ports the test stack actually published."""
    from mlops_sandbox.config import Settings

    port = docker_services.port_for
    return Settings(
        minio_api_port=port("minio", 9000),
        mlflow_port=port("mlflow", 5000),
        airflow_port=port("airflow-apiserver", 8080),
        predictor_port=port("predictor", 8000),
        evidently_port=port("evidently", 8000),
        jupyter_port=port("jupyter", 8888),
    )


@pytest.fixture(scope="session")
def airflow(settings):
    from mlops_sandbox.airflow_api import AirflowAPI

    return AirflowAPI(settings)


@pytest.fixture(scope="session")
def airflow_token(airflow) -> str:
    return airflow.token()


@pytest.fixture(scope="session")
def make(docker_services):
    """Run `make ARGS` on the stack under test (its compose project); returns the completed process.
    A target that deletes the stack's data skips the test on a reused stack (one the tests did not create)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        if REUSE and RESETS & set(args):
            pytest.skip(f"make {' '.join(args)} {NOT_ON_A_REUSED_STACK}")
        return subprocess.run(
            ["make", "--no-print-directory", *args],
            env=os.environ | {"COMPOSE_PROJECT_NAME": PROJECT},
            capture_output=True,
            text=True,
            cwd=ROOT,
        )

    return run


@pytest.fixture(scope="session")
def scenario_predictor(compose, settings):
    """Start a second predictor for another scenario, as a user would to serve another sector: the same compose
    service and image, with SCENARIO set, on a free host port and its own spool folder. A context manager
    that yields the scenario's host-side settings (`predictor_url` is the new service), and removes it after."""
    import contextlib

    @contextlib.contextmanager
    def start(scenario: str, *env: str):
        name = f"{PROJECT}-{scenario.replace('_', '-')}-predictor"
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        flags = [arg for pair in zip(["-e"] * len(env), env, strict=True) for arg in pair]
        compose(
            "run", "-d", "--no-deps", "--name", name, "-p", "127.0.0.1::8000",
            "-e", f"SCENARIO={scenario}", "-e", "MODEL_NAME=", "-e", "CAPTURE_SPOOL_DIR=/tmp/spool", *flags,
            "predictor",
        )  # fmt: skip
        try:
            port = subprocess.run(["docker", "port", name, "8000"], capture_output=True, text=True, check=True)
            url = "http://" + port.stdout.strip().splitlines()[0].replace("0.0.0.0", "127.0.0.1")
            yield settings.model_copy(update={"scenario": scenario, "predictor_url_override": url})
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)

    return start


class PlainPython:
    """A user's own Python on the host: a fresh virtualenv, without this library, holding only what `install`
    put there. `run` starts a script in it with an environment that holds only `env` (no setting of this
    library's, none of the stack's), and returns the JSON the script prints last; a script that does not finish
    within `timeout` seconds fails the test."""

    def __init__(self, folder: Path, env: dict[str, str]):
        import sys

        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
        self.folder, self.env = folder, env

    def install(self, *args: str) -> None:
        """`pip install args`, from the indexes this machine's pip is set up with, and TORCH_INDEX_URL if set
        (PyTorch's CPU wheels, as the images use)."""
        torch = ["--extra-index-url", os.environ["TORCH_INDEX_URL"]] if os.environ.get("TORCH_INDEX_URL") else []
        # --no-compile: bytecode is written at first import instead, of what a test imports (half pip's time)
        pip = [self.folder / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        pip.append("--no-compile")
        done = subprocess.run(
            [*pip, *torch, *args],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"pip install {' '.join(args)}: {done.stderr[-3000:]}"

    def run(self, script: str, *args: str, timeout: float = 60, parse=None, env: dict[str, str] | None = None):
        """Run a Python script; returns `parse` (default: `json.loads`) of the last line it printed."""
        import json

        out = self.shell([self.folder / "bin" / "python", "-I", "-c", script, *args], timeout=timeout, env=env)
        return (parse or json.loads)(out.strip().splitlines()[-1])

    def shell(self, argv: list, timeout: float = 60, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Run a command with the virtualenv first on PATH; returns what it printed."""
        environment = {"PATH": f"{self.folder / 'bin'}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp")}
        done = subprocess.run(
            argv, cwd=cwd, env=environment | self.env | (env or {}), capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout


def pinned(*names: str) -> list[str]:
    """The project's pins of these distributions (`name==version`), from the lock its images install."""
    lock = (ROOT / "services" / "project" / "requirements.lock").read_text().splitlines()
    pins = [line.split()[0] for line in lock if line.split("==")[0] in names]
    assert len(pins) == len(names), (names, pins)
    return pins


@pytest.fixture(scope="session")
def plain_python(settings, tmp_path_factory):
    """A fresh virtualenv on the host with only the pinned `mlflow` and `boto3` (not this library), whose
    scripts see only MLFLOW_TRACKING_URI (the URL a user sets)."""
    plain = PlainPython(
        tmp_path_factory.mktemp("plain-python") / "venv", {"MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}
    )
    plain.install(*pinned("mlflow", "boto3"))
    return plain


@pytest.fixture(scope="session")
def readme_block():
    """The code block that follows `<!-- readme: MARKER -->` in README.md, as a user would paste it."""
    import textwrap

    def block(marker: str) -> str:
        after = (ROOT / "README.md").read_text().split(f"<!-- readme: {marker} -->", 1)[1]
        fenced = after.split("```", 2)[1]  # the language's name, then the code
        return textwrap.dedent(fenced.split("\n", 1)[1])  # as a list item, it is indented

    return block


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember which test ran last and whether it passed (`session.last_test`): the workshop's exercises
    continue on the stack the previous exercise left, as an attendee does, only after it passed."""
    report = yield
    if report.when == "call" or report.failed:
        item.session.last_test = (item.name, report.passed)
    return report
