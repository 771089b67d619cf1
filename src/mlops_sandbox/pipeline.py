"""The training pipeline's steps (seed steps 14-19), one function each, as the DAG runs them.

Each step runs in its own container, so steps hand over through the pipeline bucket: every run has a
prefix `<scenario>/runs/<run_key>/` there, and a step overwrites its own outputs when rerun (idempotent).
Each step returns a small JSON-able summary, which the CLI prints as its last line (Airflow's XCom).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pandas as pd

from mlops_sandbox import versioning
from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import run_key, run_prefix, run_quarantine_prefix
from mlops_sandbox.features import preprocess
from mlops_sandbox.ingest import list_batches, read_batches, validate
from mlops_sandbox.schema import get_schema
from mlops_sandbox.storage import get_json, put_json, s3_client

MAX_TAG_CHARS = 4500  # MLflow tag values are limited to 5,000 characters


def _put_parquet(client, bucket: str, key: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def _get_parquet(client, bucket: str, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))


def ingest(settings: Settings, scenario: str, run_id: str, last_batches: int | None = None) -> dict:
    """Step 1 (seed step 14): read the scenario's raw batches (the newest `last_batches`, or all)."""
    get_schema(scenario)
    client = s3_client(settings)
    keys = list_batches(client, settings.raw_data_bucket, scenario, last=last_batches)
    raw = read_batches(client, settings.raw_data_bucket, keys)
    prefix = run_prefix(scenario, run_id)
    _put_parquet(client, settings.pipeline_bucket, f"{prefix}/raw.parquet", raw)
    summary = {"step": "ingest", "batches": len(keys), "rows": len(raw), "raw_keys": keys}
    put_json(client, settings.pipeline_bucket, f"{prefix}/ingest.json", summary)
    return {k: v for k, v in summary.items() if k != "raw_keys"}


def validate_step(settings: Settings, scenario: str, run_id: str) -> dict:
    """Step 2: validate against the declared schema; quarantine bad rows with the rule each broke."""
    schema = get_schema(scenario)
    client = s3_client(settings)
    prefix, quarantine = run_prefix(scenario, run_id), run_quarantine_prefix(scenario, run_id)
    result = validate(_get_parquet(client, settings.pipeline_bucket, f"{prefix}/raw.parquet"), schema)
    report = result.report()
    _put_parquet(client, settings.pipeline_bucket, f"{prefix}/valid.parquet", result.valid)
    put_json(client, settings.pipeline_bucket, f"{quarantine}report.json", {"run_id": run_id, **report})
    buffer = io.StringIO()
    result.quarantined.to_csv(buffer, index=False)
    client.put_object(
        Bucket=settings.pipeline_bucket, Key=f"{quarantine}violations.csv", Body=buffer.getvalue().encode()
    )
    if result.valid.empty:
        raise ValueError(f"every row broke a rule; see s3://{settings.pipeline_bucket}/{quarantine}")
    return {"step": "validate", **{k: v for k, v in report.items() if k != "violations"}}


def preprocess_step(settings: Settings, scenario: str, run_id: str) -> dict:
    """Step 3 (seed step 15): the feature table with a fixed train/test split."""
    schema = get_schema(scenario)
    client = s3_client(settings)
    prefix = run_prefix(scenario, run_id)
    table = preprocess(_get_parquet(client, settings.pipeline_bucket, f"{prefix}/valid.parquet"), schema)
    _put_parquet(client, settings.pipeline_bucket, f"{prefix}/features.parquet", table)
    counts = table["split"].value_counts().to_dict()
    return {"step": "preprocess", "train_rows": counts.get("train", 0), "test_rows": counts.get("test", 0)}


def version_features(settings: Settings, scenario: str, run_id: str) -> dict:
    """Step 4 (seed step 16): `dvc add` + `dvc push` the feature table to the DVC remote in MinIO."""
    client = s3_client(settings)
    prefix = run_prefix(scenario, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.parquet"
        client.download_file(settings.pipeline_bucket, f"{prefix}/features.parquet", str(path))
        data_version = versioning.push(path, settings, scenario)
    put_json(client, settings.pipeline_bucket, f"{prefix}/data_version.json", data_version.tags())
    return {"step": "version_features", **data_version.tags()}


def fetch_features(settings: Settings, data_version: versioning.DataVersion) -> pd.DataFrame:
    """Seed step 17: the feature table of `data_version`, fetched back through DVC."""
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(versioning.pull(data_version, settings, Path(tmp) / data_version.path))


def lineage_tags(raw_keys: list[str], data_version: versioning.DataVersion, run_id: str, scenario: str) -> dict:
    keys = ",".join(raw_keys)
    if len(keys) > MAX_TAG_CHARS:
        keys = keys[:MAX_TAG_CHARS].rsplit(",", 1)[0] + ",...(+more; see lineage/raw_keys.json)"
    return {
        **data_version.tags(),
        "raw_batch_keys": keys,
        "raw_batch_count": str(len(raw_keys)),
        "pipeline_run_id": run_id,
        "scenario": scenario,
    }


def _quoted(value: str) -> str:
    """`value` as a string literal of MLflow's search filters."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _trained_before(tracking, summary: dict | None, model_type: str, data_version: versioning.DataVersion):
    """The summary of this pipeline run's train step when it already finished, on the same features and model
    type (a rerun then has nothing to do); None otherwise."""
    from mlflow.exceptions import MlflowException

    if not summary:
        return None
    try:
        run = tracking.get_run(summary["mlflow_run_id"])
    except MlflowException:
        return None  # deleted since
    same = run.info.status == "FINISHED" and run.data.params.get("model_type") == model_type
    try:
        return summary if same and versioning.DataVersion.from_tags(run.data.tags) == data_version else None
    except ValueError:
        return None


def _forget_earlier_runs(tracking, experiment_id: str, run_id: str, keep: str) -> list[str]:
    """Delete the MLflow runs an earlier attempt of this pipeline run's train step left (killed, failed, or
    replaced), unless a registered version came from one. Returns their ids."""
    runs = tracking.search_runs([experiment_id], filter_string=f"tags.pipeline_run_id = {_quoted(run_id)}")
    forgotten = []
    for run in runs:
        other = run.info.run_id
        if other != keep and not tracking.search_model_versions(f"run_id = {_quoted(other)}"):
            tracking.delete_run(other)
            forgotten.append(other)
    return forgotten


def train(settings: Settings, scenario: str, run_id: str, model_type: str, epochs: int | None = None) -> dict:
    """Steps 5-8 (seed steps 17-18): fetch the features through DVC, train, evaluate on the held-out test
    set, and log params, metrics, the `.pth`, the model (signature, input example) and lineage to MLflow.

    Idempotent per pipeline run: a rerun after the step finished returns its summary and trains nothing, and a
    rerun that trains deletes the runs earlier attempts left (unless a version was registered from one).
    """
    import mlflow

    from mlops_sandbox.tracking import use_tracking_server
    from mlops_sandbox.train import evaluate, fit
    from mlops_sandbox.train.mlflow_model import log_model

    schema = get_schema(scenario)
    client = s3_client(settings)
    prefix = run_prefix(scenario, run_id)
    data_version = versioning.DataVersion.from_tags(
        get_json(client, settings.pipeline_bucket, f"{prefix}/data_version.json")
    )
    tracking = use_tracking_server(settings)
    previous = get_json(client, settings.pipeline_bucket, f"{prefix}/train.json", missing_ok=True)
    done = _trained_before(tracking, previous, model_type, data_version)
    if done is not None:
        return {**done, "rerun": "already trained in this pipeline run: nothing new logged"}
    raw_keys = get_json(client, settings.pipeline_bucket, f"{prefix}/ingest.json")["raw_keys"]
    table = fetch_features(settings, data_version)
    train_rows, test_rows = table[table["split"] == "train"], table[table["split"] == "test"]
    model = fit(train_rows, schema, model_type, epochs=epochs)  # epochs: for the types trained in epochs
    metrics = {f"test_{k}": v for k, v in evaluate(model.predict, test_rows, schema).items()}
    metrics |= {f"train_{k}": v for k, v in evaluate(model.predict, train_rows, schema).items()}

    mlflow.set_experiment(scenario)
    with mlflow.start_run(run_name=f"{model_type}-{run_key(run_id)}") as run:
        params = {
            "model_type": model_type,
            "train_rows": len(train_rows),
            "test_rows": len(test_rows),
            "n_features": model.n_inputs,
            "target_log": model.target_log,
        }
        params |= model.params()  # the model type's own options
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(lineage_tags(raw_keys, data_version, run_id, scenario))
        mlflow.log_dict({"raw_keys": raw_keys}, "lineage/raw_keys.json")
        info = log_model(model, test_rows.head(5))
    summary = {"step": "train", "mlflow_run_id": run.info.run_id, "model_uri": info.model_uri, **metrics}
    put_json(client, settings.pipeline_bucket, f"{prefix}/train.json", summary)
    _forget_earlier_runs(tracking, run.info.experiment_id, run_id, keep=run.info.run_id)
    return summary


def register(settings: Settings, scenario: str, run_id: str) -> dict:
    """Step 9 (seed step 19): register the trained model as a new version, with its lineage as version tags.

    It carries no alias and no description: a person writes the model card and promotes it. Idempotent: a
    rerun finds the version registered from the same MLflow run and returns it, and registers no other.
    """
    import mlflow

    from mlops_sandbox.tracking import use_tracking_server

    client = s3_client(settings)
    prefix = run_prefix(scenario, run_id)
    trained = get_json(client, settings.pipeline_bucket, f"{prefix}/train.json")
    tracking = use_tracking_server(settings)
    run = tracking.get_run(trained["mlflow_run_id"])
    model_name = settings.model_name_for(scenario)
    earlier = [
        mv
        for mv in tracking.search_model_versions(f"run_id = {_quoted(trained['mlflow_run_id'])}")
        if mv.name == model_name
    ]
    if earlier:
        version = min(earlier, key=lambda mv: int(mv.version))
    else:
        version = mlflow.register_model(
            trained["model_uri"],
            model_name,
            tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            | {"mlflow_run_id": trained["mlflow_run_id"], "model_type": run.data.params.get("model_type", "")},
        )
    summary = {
        "step": "register",
        "model_name": model_name,
        "version": str(version.version),
        "mlflow_run_id": trained["mlflow_run_id"],
    }
    put_json(client, settings.pipeline_bucket, f"{prefix}/register.json", summary)
    return summary
