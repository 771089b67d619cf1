"""A client written for `mlflow models serve` works unchanged against the prediction service's `/invocations`:
MLflow's own scoring server runs the same production version beside it, and both get the same bodies, in each
of MLflow's input formats, and the same bad ones."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import numpy as np
import pytest
import requests

from mlops_sandbox import loop
from mlops_sandbox.contracts import PRODUCTION
from mlops_sandbox.registry import alias_version
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import generate_batch
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.tracking import use_tracking_server

pytestmark = pytest.mark.e2e
SCENARIO = "house_prices"
SCHEMA = get_schema(SCENARIO)
PORT = 5077  # published on 127.0.0.1 for this test only


@pytest.fixture(scope="module")
def mlflow_serve(compose, settings):
    """`mlflow models serve` of the production version, in a container of the project image on the stack's
    network (as a user would run it beside the stack); yields its URL and the version it serves."""
    version = alias_version(use_tracking_server(settings), settings.model_name, PRODUCTION)
    assert version is not None, "the earlier e2e tests leave a production model"
    name = f"mlflow-serve-{uuid.uuid4().hex[:8]}"
    compose(
        "run", "-d", "--rm", "--name", name, "--publish", f"127.0.0.1:{PORT}:{PORT}", "--entrypoint", "mlflow",
        "cli", "models", "serve", "-m", f"models:/{settings.model_name}/{version}", "--env-manager", "local",
        "--host", "0.0.0.0", "--port", str(PORT), "--workers", "1",
    )  # fmt: skip
    url = f"http://127.0.0.1:{PORT}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True, text=True)
                pytest.fail(f"mlflow models serve did not answer within 180 s:\n{logs.stdout}\n{logs.stderr}")
            time.sleep(2)
        yield url, version
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def _rows(count: int = 6):
    frame = generate_batch(SCENARIO, 77, parse_time("2031-11-01T00:00:00Z"), count)[SCHEMA.feature_names]
    return frame, json.loads(frame.to_json(orient="records"))


def _bodies():
    frame, records = _rows()
    split = json.loads(frame.to_json(orient="split", index=False))
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {column: frame[column].tolist() for column in frame.columns}},
    }


def test_each_input_format_gets_mlflow_s_predictions_and_is_captured(settings, mlflow_serve):
    url, version = mlflow_serve
    answered = set()
    for name, body in _bodies().items():
        theirs = requests.post(f"{url}/invocations", json=body, timeout=60)
        ours = requests.post(f"{settings.predictor_url}/invocations", json=body, timeout=60)
        assert theirs.status_code == 200, (name, theirs.text)
        assert ours.status_code == 200, (name, ours.text)
        assert set(ours.json()) == set(theirs.json()) == {"predictions"}, name
        np.testing.assert_allclose(ours.json()["predictions"], theirs.json()["predictions"], rtol=1e-9, err_msg=name)
        assert ours.headers["x-model-version"] == version
        answered.add(ours.headers["x-request-id"])
    frame, _ = _rows()
    csv = frame.to_csv(index=False)
    theirs = requests.post(f"{url}/invocations", data=csv, headers={"Content-Type": "text/csv"}, timeout=60)
    ours = requests.post(
        f"{settings.predictor_url}/invocations", data=csv, headers={"Content-Type": "text/csv"}, timeout=60
    )
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    np.testing.assert_allclose(ours.json()["predictions"], theirs.json()["predictions"], rtol=1e-9)
    answered.add(ours.headers["x-request-id"])
    # captured like /predict: each answered request is in the prediction logs under its request id
    assert loop.wait_until_captured(settings, SCENARIO, answered, timeout=120) == set()


def test_bad_input_gets_the_same_status_from_both(settings, mlflow_serve):
    url, _ = mlflow_serve
    _, records = _rows(1)
    record = records[0]
    bad = {
        "not JSON": ("{not json", "application/json"),
        "a list, not an object": (json.dumps(records), "application/json"),
        "no input field": (json.dumps({"data": records}), "application/json"),
        "a word for a number": (
            json.dumps({"dataframe_records": [{**record, "bedrooms": "three"}]}),
            "application/json",
        ),
        "another content type": (json.dumps({"dataframe_records": records}), "text/plain"),
    }
    missing = {k: v for k, v in record.items() if k != "area"}
    bad["a column missing"] = (json.dumps({"dataframe_records": [missing]}), "application/json")
    for name, (body, content_type) in bad.items():
        headers = {"Content-Type": content_type}
        theirs = requests.post(f"{url}/invocations", data=body, headers=headers, timeout=60)
        ours = requests.post(f"{settings.predictor_url}/invocations", data=body, headers=headers, timeout=60)
        assert theirs.status_code in (400, 415), (name, theirs.status_code, theirs.text)
        assert ours.status_code == theirs.status_code, (name, ours.text, theirs.text)
