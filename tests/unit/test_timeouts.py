"""A hung server fails a call within its bound, with an error that names it, instead of hanging the step.

Each test talks to a real socket on 127.0.0.1 that accepts and never answers (what a paused MinIO does), so the
clients really wait: DVC (a subprocess), boto3 and MLflow.
"""

from __future__ import annotations

import logging
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from s3_http_stand_in import TinyS3, Unanswering

from mlops_sandbox import versioning
from mlops_sandbox.config import Settings
from mlops_sandbox.storage import s3_client

pytestmark = pytest.mark.unit


@pytest.fixture
def unanswering():
    server = Unanswering()
    yield server
    server.close()


@pytest.fixture
def features(tmp_path):
    path = tmp_path / "features.parquet"
    path.write_bytes(b"feature table " * 500)
    return path


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr(versioning, "RETRY_BACKOFF_SECONDS", 0.1)


def settings_for(url: str, **values) -> Settings:
    return Settings(_env_file=None, S3_ENDPOINT_URL=url, **values)


def test_dvc_push_to_a_remote_that_never_answers_times_out_and_says_where(unanswering, features, quick_backoff):
    # DVC's own S3 client would wait a minute per read: the kill after DVC_TIMEOUT_SECONDS comes first
    settings = settings_for(unanswering.url, dvc_timeout_seconds=3, dvc_attempts=2, s3_read_timeout=60)
    started = time.monotonic()
    with pytest.raises(versioning.DvcError) as failed:
        versioning.push(features, settings, "house_prices")
    # two tries of 3 s, and the local dvc commands before them (init, remote, add: about a second each)
    assert 6 <= time.monotonic() - started < 40
    assert failed.value.timed_out
    message = str(failed.value)
    assert "dvc push timed out after 3 s (DVC_TIMEOUT_SECONDS)" in message
    assert f"the DVC remote s3://dvc-remote/house_prices at the S3 endpoint {unanswering.url}" in message
    assert "gave up after 2 attempts" in message
    assert unanswering.connections >= 2  # each try did reach the remote


def test_dvc_read_timeouts_surface_as_dvc_s_own_error_naming_the_url(unanswering, features, quick_backoff):
    # short S3 timeouts (the remote's read_timeout): DVC gives up by itself, before the kill
    settings = settings_for(unanswering.url, s3_connect_timeout=1, s3_read_timeout=1, s3_max_attempts=1, dvc_attempts=1)
    started = time.monotonic()
    with pytest.raises(versioning.DvcError) as failed:
        versioning.push(features, settings, "house_prices")
    assert time.monotonic() - started < 40  # with s3fs's own read timeout (15 s, 5 tries) it would take minutes
    assert not failed.value.timed_out
    assert f'Read timeout on endpoint URL: "{unanswering.url}/dvc-remote/house_prices/files/md5/' in str(failed.value)
    assert "gave up after 1 attempt)" in str(failed.value)


def test_dvc_push_is_tried_again_and_succeeds_once_the_remote_is_back(features, quick_backoff, caplog, tmp_path):
    s3 = TinyS3()
    try:
        s3.away.set()  # the first try waits on it until killed; then it answers again
        settings = settings_for(s3.url, dvc_timeout_seconds=3, dvc_attempts=2, s3_read_timeout=60)
        with caplog.at_level(logging.WARNING, logger="mlops_sandbox.versioning"):
            version = versioning.push(features, settings, "house_prices")
        assert "dvc push timed out after 3 s" in caplog.text and "attempt 2 of 2" in caplog.text
        assert s3.objects["dvc-remote", version.object_key] == features.read_bytes()
        # and the bytes come back through `dvc pull`, with the same remote settings
        pulled = versioning.pull(version, settings, tmp_path / "pulled" / version.path)
        assert pulled.read_bytes() == features.read_bytes()
    finally:
        s3.close()


def test_s3_client_fails_within_its_bound_on_a_server_that_never_answers(unanswering):
    settings = settings_for(unanswering.url, s3_connect_timeout=1, s3_read_timeout=0.5, s3_max_attempts=2)
    client = s3_client(settings)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError, match=f'Read timeout on endpoint URL: "{unanswering.url}/"'):
        client.list_buckets()
    # two tries of 0.5 s, and botocore's backoff between them (at most 1 s before the second)
    assert 1 <= time.monotonic() - started < 5
    assert unanswering.connections == 2


def test_s3_timeouts_come_from_settings_and_a_caller_s_config_wins():
    settings = Settings(_env_file=None, s3_connect_timeout=3, s3_read_timeout=7, s3_max_attempts=4)
    config = s3_client(settings).meta.config
    assert (config.connect_timeout, config.read_timeout) == (3, 7)
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
    defaults = s3_client(Settings(_env_file=None)).meta.config
    assert (defaults.connect_timeout, defaults.read_timeout, defaults.retries["total_max_attempts"]) == (5, 30, 3)
    # the prediction service's capture brings its own, fail-fast config: it is kept as it is
    capture = s3_client(settings, Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})).meta.config
    assert (capture.connect_timeout, capture.read_timeout) == (2, 10)
    assert capture.retries["total_max_attempts"] == 2


@pytest.fixture
def mlflow_globals(monkeypatch):
    """tracking_client sets MLflow's tracking URI and these variables for the process: put them back after."""
    from mlflow.tracking._tracking_service import utils

    from mlops_sandbox.tracking import HTTP_DEFAULTS

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    for name in (*HTTP_DEFAULTS, "MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"):
        monkeypatch.setenv(name, "")  # recorded as it was (delenv of an unset one records nothing) ...
        monkeypatch.delenv(name)  # ... then unset for the test
    return monkeypatch


def test_mlflow_calls_get_bounded_timeouts_and_retries_unless_set(mlflow_globals, unanswering):
    import os

    from mlops_sandbox.tracking import HTTP_DEFAULTS, tracking_client

    mlflow_globals.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")  # the user's own
    tracking_client(unanswering.url)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert int(HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) < 7  # MLflow's default: about 20 min a call


def test_an_mlflow_server_that_never_answers_fails_the_call_within_the_bound(mlflow_globals, unanswering):
    from mlflow.exceptions import MlflowException

    from mlops_sandbox.tracking import tracking_client

    for name, value in {"TIMEOUT": "1", "MAX_RETRIES": "1", "BACKOFF_FACTOR": "0"}.items():
        mlflow_globals.setenv(f"MLFLOW_HTTP_REQUEST_{name}", value)
    client = tracking_client(unanswering.url)
    started = time.monotonic()
    with pytest.raises(MlflowException, match=f"{unanswering.url}/api/2.0/mlflow/registered-models/search"):
        client.search_registered_models()
    assert time.monotonic() - started < 10  # two tries of 1 s
    assert unanswering.connections == 2


def test_env_example_gives_the_defaults_the_library_and_the_dags_use():
    import re
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (root / ".env.example").read_text(), flags=re.M))
    defaults = Settings(_env_file=None)
    for field in ("s3_connect_timeout", "s3_read_timeout", "s3_max_attempts", "dvc_timeout_seconds", "dvc_attempts"):
        assert float(example[field.upper()]) == getattr(defaults, field), field
    sys.path.insert(0, str(root / "dags"))
    try:
        import sandbox_containers
    finally:
        sys.path.remove(str(root / "dags"))
    for key in ("STEP_TIMEOUT_MINUTES", "TRAIN_TIMEOUT_MINUTES", "RETRAIN_WAIT_MINUTES"):
        assert float(example[key]) == getattr(sandbox_containers, key), key


@pytest.fixture
def evidently_session(monkeypatch):
    """remote_workspace replaces evidently's `Session` for the process: put it back after."""
    from evidently.legacy.ui.workspace import remote

    from mlops_sandbox.monitor import steps

    monkeypatch.setattr(remote, "Session", remote.Session)
    monkeypatch.setattr(steps, "EVIDENTLY_RETRY_BACKOFF", 0.1)
    return remote


def test_evidently_ui_calls_fail_within_their_bound_on_a_server_that_never_answers(unanswering, evidently_session):
    """Evidently's own client would wait forever: a read is tried EVIDENTLY_ATTEMPTS times of
    EVIDENTLY_TIMEOUT_SECONDS for a GET, once for a POST (it may have been done: a snapshot added twice)."""
    import requests

    from mlops_sandbox.monitor.steps import remote_workspace

    settings = Settings(
        _env_file=None, evidently_url=unanswering.url, evidently_timeout_seconds=0.5, evidently_attempts=3
    )
    started = time.monotonic()
    with pytest.raises(requests.RequestException, match="Read timed out"):
        remote_workspace(settings)  # it asks the server's version first: a GET
    assert 1.5 <= time.monotonic() - started < 10
    assert unanswering.connections == 3

    with pytest.raises(requests.RequestException, match="Read timed out"):
        evidently_session.Session().post(f"{unanswering.url}/api/projects/p/snapshots", json={})
    assert unanswering.connections == 4
