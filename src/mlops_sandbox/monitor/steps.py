"""The monitoring step over one time window, as the `monitoring` DAG runs it (`mlops-sandbox monitor`): the
wiring of `monitor.checks` to MLflow (the production model), DVC (its training data), S3 (`monitor.store`)
and the Evidently UI (the scenario's project and its snapshots).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import PRODUCTION
from mlops_sandbox.monitor.checks import DecayRule, decay_report, figures_and_reports, status_object
from mlops_sandbox.monitor.store import load_actuals, load_predictions, previous_status, quarantine_logs, save_status
from mlops_sandbox.schema import get_schema
from mlops_sandbox.storage import s3_client

log = logging.getLogger(__name__)
REFERENCE_CACHE = Path(tempfile.gettempdir()) / "mlops-sandbox-reference"


def production_model(settings: Settings, scenario: str) -> dict | None:
    """Name, version, data-version tags and test MAE of the scenario's production model, or None."""
    from mlflow.exceptions import MlflowException

    from mlops_sandbox.tracking import use_tracking_server

    client = use_tracking_server(settings)
    name = settings.model_name_for(scenario)
    try:
        mv = client.get_model_version_by_alias(name, PRODUCTION)
    except MlflowException:
        return None
    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    return {"name": name, "version": str(mv.version), "tags": dict(mv.tags), "test_mae": metrics.get("test_mae")}


def reference_data(settings: Settings, tags: dict) -> pd.DataFrame:
    """The production model's training rows, fetched through DVC once per data version."""
    from mlops_sandbox.versioning import DataVersion, pull

    version = DataVersion.from_tags(tags)
    cached = REFERENCE_CACHE / f"{version.md5}.parquet"
    if not cached.exists():
        pull(version, settings, cached)  # the whole feature table, as versioned
    table = pd.read_parquet(cached)
    return table[table["split"] == "train"].reset_index(drop=True)


def evidently_project(settings: Settings, scenario: str):
    """The scenario's Evidently UI project, created with its dashboard on first use."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel
    from evidently.ui.workspace import RemoteWorkspace

    workspace = RemoteWorkspace(settings.evidently_url)
    name = f"{scenario} monitoring"
    found = workspace.search_project(name)
    if found:
        return workspace, found[0]
    project = workspace.create_project(name, description=f"Drift and decay of the {scenario} production model")
    project.dashboard.add_panel(
        counter_panel(
            title="Predictions in the last window",
            size="half",
            values=[PanelMetric(legend="rows", metric="RowCount", tags=["drift"])],
        )
    )
    project.dashboard.add_panel(
        line_plot_panel(
            title="Share of drifted features",
            size="half",
            values=[PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
        )
    )
    project.dashboard.add_panel(
        line_plot_panel(
            title="MAE on predictions with actuals",
            size="half",
            values=[PanelMetric(legend="MAE", metric="MAE", metric_labels={"value_type": "mean"})],
        )
    )
    project.dashboard.add_panel(
        line_plot_panel(
            title="Prediction volume per window",
            size="half",
            values=[PanelMetric(legend="predictions", metric="RowCount", tags=["drift"])],
        )
    )
    return workspace, project


def run_window(
    settings: Settings, scenario: str, start: datetime, end: datetime, rule: DecayRule | None = None
) -> dict:
    """Monitor [start, end): figures, decay verdict, Evidently snapshots and the JSON status in MinIO.

    Idempotent: a rerun replaces the window's snapshots and status objects instead of adding more.
    """
    if end <= start:
        raise ValueError("the window must end after it starts")
    schema = get_schema(scenario)
    rule = rule or DecayRule.from_settings(settings)
    client = s3_client(settings)
    bucket = settings.monitoring_bucket
    model = production_model(settings, scenario)
    window = load_predictions(client, settings.prediction_logs_bucket, schema, start, end)
    quarantine_logs(client, settings.prediction_logs_bucket, bucket, scenario, window.quarantined)
    current = window.predictions
    actuals = load_actuals(
        client, settings.prediction_logs_bucket, scenario, start, datetime.now(UTC) + timedelta(hours=1)
    )
    current = current.merge(actuals, on="request_id", how="left") if len(current) else current.assign(actual=[])

    if model is None:
        figures, snapshots, reasons = {"rows": int(len(current))}, [], []
        model_info = {"name": settings.model_name_for(scenario), "version": None}
    else:
        figures, snapshots = figures_and_reports(reference_data(settings, model["tags"]), current, schema, end)
        reasons = rule.check(figures, model["test_mae"])
        if reasons:
            snapshots.append(decay_report(current, reasons, end))
        figures["baseline_mae"] = model["test_mae"]
        model_info = {"name": model["name"], "version": model["version"]}
    figures["model_versions_seen"] = (
        sorted(map(str, current["model_version"].dropna().unique())) if len(current) else []
    )
    status = status_object(scenario, start, end, figures, reasons, model_info, window.quarantined, rule)

    previous = previous_status(client, bucket, scenario, start)
    status["evidently_snapshots"] = _replace_snapshots(settings, scenario, snapshots, previous)
    save_status(client, bucket, scenario, start, status)
    return status


def project_snapshots(settings: Settings, scenario: str) -> list[dict]:
    """The snapshots in the scenario's Evidently project, oldest first: id, time, kind (tags) and metadata.

    Read from the UI server's REST API: evidently 0.7's RemoteWorkspace cannot list runs yet.
    """
    import requests

    _, project = evidently_project(settings, scenario)
    resp = requests.get(f"{settings.evidently_url}/api/projects/{project.id}/snapshots", timeout=30)
    resp.raise_for_status()
    rows = [
        {"id": s["id"], "timestamp": s["timestamp"], "kind": ",".join(s.get("tags") or []), **(s.get("metadata") or {})}
        for s in resp.json()
    ]
    return sorted(rows, key=lambda r: r["timestamp"])


def _replace_snapshots(settings: Settings, scenario: str, snapshots: list, previous: dict) -> list[str]:
    """Put this window's snapshots in the Evidently project, in place of those of an earlier run of it."""
    if not snapshots and not previous.get("evidently_snapshots"):
        return []
    workspace, project = evidently_project(settings, scenario)
    for snapshot_id in previous.get("evidently_snapshots", []):
        try:
            workspace.delete_run(project.id, snapshot_id)
        except Exception:  # noqa: BLE001 - already gone
            log.info("snapshot %s was already gone", snapshot_id)
    ids = []
    for snapshot in snapshots:
        ref = workspace.add_run(project.id, snapshot, include_data=False)
        ids.append(str(getattr(ref, "id", ref)))
    return ids
