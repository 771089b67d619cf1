"""The training loop on the running stack (seed steps 1-9, 12-19):
simulate -> training_pipeline DAG -> registered version with lineage -> human promotion -> served -> rollback.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import requests

from mlops_sandbox import registry
from mlops_sandbox.loop import wait_until_serving
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import generate_batch
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.storage import s3_client
from mlops_sandbox.tracking import use_tracking_server
from mlops_sandbox.train.models import model_input
from mlops_sandbox.versioning import DataVersion

pytestmark = pytest.mark.e2e

SCENARIO = "house_prices"
START = "2031-03-01T00:00:00Z"  # a simulated clock no other test uses
SCHEMA = get_schema(SCENARIO)


MODEL_REQUIREMENTS = """
import json, sys
import mlflow

print(json.dumps(open(mlflow.pyfunc.get_model_dependencies(sys.argv[1])).read().split()))
"""
LOAD_BY_ALIAS = """
import importlib.util, json, sys
import mlflow, pandas as pd

assert importlib.util.find_spec("mlops_sandbox") is None  # a user's own Python: not this library
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_json(sys.argv[2], orient="split")
rows = rows.astype({c.name: c.type.to_pandas() for c in model.metadata.get_input_schema().inputs})
predictions = [float(p) for p in model.predict(rows)]
print(json.dumps({"predictions": predictions}))
"""


def _train(airflow, model_type: str) -> str:
    run_id = airflow.trigger(
        "training_pipeline", {"scenario": SCENARIO, "model_type": model_type, "last_batches": 6, "epochs": 60}
    )
    state = airflow.wait("training_pipeline", run_id, timeout=900)
    assert state == "success", airflow.task_states("training_pipeline", run_id)
    return json.loads(airflow.xcom("training_pipeline", run_id, "register"))["version"]


def _serving(settings, version: str, timeout: float = 90) -> dict:
    """Ask the service to reload, then wait until every worker answers with `version`."""
    wait_until_serving(settings, version, timeout)
    return requests.get(f"{settings.predictor_url}/model", timeout=30).json()


@pytest.fixture(scope="module")
def trained(settings, compose, airflow):
    """Six simulated batches, then two pipeline runs: a linear baseline and a PyTorch MLP."""
    out = compose("run", "--rm", "cli", "simulate", "--batches", "6", "--rows", "400", "--start", START, "--seed", "7")
    landed = json.loads(out.stdout.strip().splitlines()[-1])["batches"]
    assert len(landed) == 6
    airflow.wait_for_dag("training_pipeline")
    return {"keys": landed, "linear": _train(airflow, "linear"), "mlp": _train(airflow, "mlp")}


def test_simulated_batches_landed_in_the_raw_bucket(settings, trained):
    client = s3_client(settings)
    for key in trained["keys"]:
        body = client.get_object(Bucket=settings.raw_data_bucket, Key=key)["Body"].read().decode()
        assert body.splitlines()[0].startswith("record_id,event_time,area,bedrooms")
        assert len(body.splitlines()) == 401


def test_versions_carry_lineage_and_features_are_in_the_dvc_remote(settings, trained):
    client = use_tracking_server(settings)
    for model_type in ("linear", "mlp"):
        mv = client.get_model_version(settings.model_name, trained[model_type])
        assert mv.tags["model_type"] == model_type
        assert mv.tags["raw_batch_keys"].split(",") == trained["keys"]
        data = DataVersion.from_tags(mv.tags)
        head = s3_client(settings).head_object(Bucket=settings.dvc_bucket, Key=data.object_key)
        assert head["ContentLength"] == data.size
        run = client.get_run(mv.run_id)
        assert {"test_rmse", "test_mae", "test_r2"} <= set(run.data.metrics)
        assert run.data.params["model_type"] == model_type
    mlp_artifacts = [
        a.path
        for a in client.list_artifacts(client.get_model_version(settings.model_name, trained["mlp"]).run_id, "pytorch")
    ]
    assert mlp_artifacts == ["pytorch/model.pth"]


def test_rerunning_train_and_register_of_a_pipeline_run_adds_no_run_and_no_version(settings, compose, trained):
    """What a person does by clearing a finished task in Airflow: the step runs again for the same pipeline run.
    It finds its own earlier result, and neither trains another MLflow run nor registers another version."""
    client = use_tracking_server(settings)
    mv = client.get_model_version(settings.model_name, trained["linear"])
    pipeline_run = mv.tags["pipeline_run_id"]
    versions = sorted(v.version for v in client.search_model_versions(f"name='{settings.model_name}'"))

    def step(*args: str) -> dict:
        out = compose("run", "--rm", "cli", "pipeline", *args, "--scenario", SCENARIO, "--run-id", pipeline_run)
        return json.loads(out.stdout.strip().splitlines()[-1])

    again = step("train", "--model-type", "linear")
    assert again["mlflow_run_id"] == mv.run_id and "already trained" in again["rerun"]
    assert step("register")["version"] == trained["linear"]
    assert sorted(v.version for v in client.search_model_versions(f"name='{settings.model_name}'")) == versions
    runs = client.search_runs(
        [client.get_run(mv.run_id).info.experiment_id], filter_string=f"tags.pipeline_run_id = '{pipeline_run}'"
    )
    assert [r.info.run_id for r in runs] == [mv.run_id]


def test_promotion_with_compliance_checks_serving_and_rollback(settings, trained, plain_python, tmp_path):
    linear, mlp = trained["linear"], trained["mlp"]
    card = "House-price model trained by the e2e test on simulated batches; not for real decisions."

    # no model card yet: staging is refused, and the reason is named
    with pytest.raises(registry.PromotionRefused) as refused:
        registry.promote(linear, "staging", "e2e", "baseline", settings=settings)
    assert [c.name for c in refused.value.failed] == ["model_card"]

    # the seeds' None -> Staging -> Production, for the baseline first
    registry.set_model_card(linear, card, "e2e", settings=settings)
    with pytest.raises(registry.PromotionRefused, match="staged_first"):
        registry.promote(linear, "production", "e2e", "skip staging", settings=settings)
    registry.promote(linear, "staging", "e2e", "baseline", settings=settings)
    registry.promote(linear, "production", "e2e", "first production model", settings=settings)
    assert _serving(settings, linear)["version"] == linear

    # the MLP replaces it: it beats production on the same test set
    registry.set_model_card(mlp, card, "e2e", settings=settings)
    registry.promote(mlp, "staging", "e2e", "candidate", settings=settings)
    checks = registry.promote(mlp, "production", "e2e", "beats the baseline", settings=settings)
    assert next(c for c in checks if c.name == "beats_production").passed
    tags = use_tracking_server(settings).get_model_version(settings.model_name, mlp).tags
    assert tags["production.promoted_by"] == "e2e" and tags["production.reason"] == "beats the baseline"
    assert tags["previous_production_version"] == linear
    served = _serving(settings, mlp)
    assert served["alias"] == "production" and served["lineage"]["raw_batch_keys"].split(",") == trained["keys"]

    # the predictor answers like the registered pyfunc model, for the same rows
    import mlflow

    rows = generate_batch(SCENARIO, 99, parse_time(START), 25)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{mlp}")
    expected = np.asarray(pyfunc.predict(model_input(rows, SCHEMA)), dtype=float)

    # a user's own Python on the host (a fresh virtualenv with only the pinned mlflow and boto3, and
    # MLFLOW_TRACKING_URI) installs the model's declared requirements and loads it by alias, without this library
    uri = f"models:/{settings.model_name}@production"
    (tmp_path / "requirements.txt").write_text("\n".join(plain_python.run(MODEL_REQUIREMENTS, uri)))
    plain_python.install("-r", str(tmp_path / "requirements.txt"))
    (tmp_path / "rows.json").write_text(rows[SCHEMA.feature_names].to_json(orient="split"))
    loaded = plain_python.run(LOAD_BY_ALIAS, uri, str(tmp_path / "rows.json"), timeout=60)
    np.testing.assert_allclose(loaded["predictions"], expected, rtol=1e-6)
    records = json.loads(rows[SCHEMA.feature_names].to_json(orient="records"))
    resp = requests.post(f"{settings.predictor_url}/predict", json=records, timeout=60)
    assert resp.status_code == 200 and resp.json()["model_version"] == mlp
    np.testing.assert_allclose(resp.json()["predictions"], expected, rtol=1e-9)

    # the baseline cannot come back through promotion: it is worse than production on the same test set
    registry.promote(linear, "staging", "e2e", "retry", settings=settings)
    with pytest.raises(registry.PromotionRefused) as worse:
        registry.promote(linear, "production", "e2e", "retry", settings=settings)
    assert [c.name for c in worse.value.failed] == ["beats_production"]

    # ... but a rollback, one call, gives production back to it
    assert registry.rollback("e2e", "demo rollback", settings=settings) == {
        "model_name": settings.model_name,
        "from_version": mlp,
        "to_version": linear,
    }
    assert _serving(settings, linear)["version"] == linear
    one = requests.post(f"{settings.predictor_url}/predict", json=records[0], timeout=60).json()
    assert one["model_version"] == linear and len(one["predictions"]) == 1


def test_invalid_input_on_the_live_service_is_422_per_field(settings, trained):
    bad = {"area": "huge", "bedrooms": 3}
    resp = requests.post(f"{settings.predictor_url}/predict", json=bad, timeout=30)
    assert resp.status_code == 422
    fields = {str(err["loc"][-1]) for err in resp.json()["detail"]}
    assert {"area", "bathrooms", "furnishingstatus"} <= fields


def test_the_readme_dvc_lines_pull_the_production_models_features_on_the_host(
    settings, trained, plain_python, readme_block, tmp_path
):
    """The README's block, run as pasted in a user's own Python: the bytes its lineage tags name come back."""
    import hashlib

    script = readme_block("dvc").replace("http://localhost:9000", settings.s3_endpoint_url)
    script = script.replace("http://localhost:5050", settings.mlflow_tracking_uri)
    script = script.replace('"house-prices"', json.dumps(settings.model_name))
    plain_python.shell(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, timeout=600)
    tags = use_tracking_server(settings).get_model_version_by_alias(settings.model_name, "production").tags
    pulled = (tmp_path / "features" / tags["dvc_data_path"]).read_bytes()
    assert len(pulled) == int(tags["dvc_data_size"]) and hashlib.md5(pulled).hexdigest() == tags["dvc_data_version"]
    features = pd.read_parquet(io.BytesIO(pulled))
    assert len(features) > 0 and set(SCHEMA.feature_names) <= set(features.columns)
