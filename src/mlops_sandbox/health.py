"""Checks that the stack's servers answer with real content, as seen from inside the compose network."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.storage import bucket_exists, s3_client


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_buckets(settings: Settings) -> list[Check]:
    """Every configured bucket exists on the S3 server."""
    client = s3_client(settings)
    checks = []
    for role, bucket in settings.buckets.items():
        try:
            ok = bucket_exists(client, bucket)
            checks.append(Check(f"bucket:{role}", ok, bucket if ok else f"{bucket} is missing"))
        except Exception as err:  # noqa: BLE001 - reported, not raised: this is a report of every check
            checks.append(Check(f"bucket:{role}", False, f"{bucket}: {err}"))
    return checks


def check_mlflow(settings: Settings) -> Check:
    """The MLflow tracking server answers its REST API (not only /health)."""
    url = f"{settings.mlflow_tracking_uri}/api/2.0/mlflow/experiments/search"
    try:
        resp = requests.post(url, json={"max_results": 1}, timeout=10)
        ok = resp.status_code == 200 and "experiments" in resp.json()
        return Check("mlflow", ok, f"HTTP {resp.status_code} from {url}")
    except Exception as err:  # noqa: BLE001
        return Check("mlflow", False, f"{url}: {err}")


def check_stack(settings: Settings | None = None) -> list[Check]:
    """Run every check; the caller decides what a failure means."""
    settings = settings or get_settings()
    return [*check_buckets(settings), check_mlflow(settings)]
