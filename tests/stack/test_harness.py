"""The test harness itself keeps its promises on a real stack: a run on a reused stack deletes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlops_sandbox.storage import s3_client

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


def _container_ids(compose) -> set[str]:
    return set(compose("ps", "-aq").stdout.split())


def test_a_reused_stack_is_never_reset_by_the_tests(settings, compose, docker_compose_project_name):
    """`SANDBOX_TEST_REUSE_STACK=1` runs the workshop tests on a stack the tests did not create: the ones that
    would `make skip-to` (down -v) are skipped with the reason printed, and the stack's data and containers
    are as they were."""
    client = s3_client(settings)
    key = f"harness/{uuid.uuid4()}.txt"
    client.put_object(Bucket=settings.raw_data_bucket, Key=key, Body=b"the user's data")
    before = _container_ids(compose)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-m", "workshop",
             "tests/workshop/test_exercises.py::test_exercise_1_tour"],
            env=os.environ | {"SANDBOX_TEST_REUSE_STACK": "1", "SANDBOX_TEST_PROJECT": docker_compose_project_name},
            capture_output=True, text=True, cwd=ROOT, timeout=600,
        )  # fmt: skip
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-4000:]
        assert "1 skipped" in output and "SANDBOX_TEST_REUSE_STACK" in output and "would be deleted" in output
        body = client.get_object(Bucket=settings.raw_data_bucket, Key=key)["Body"].read()
        assert body == b"the user's data"
        assert _container_ids(compose) == before
    finally:
        client.delete_object(Bucket=settings.raw_data_bucket, Key=key)
