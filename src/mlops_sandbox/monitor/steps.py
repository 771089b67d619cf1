"""The monitoring step over one time window, as the `monitoring` DAG runs it (`mlops-sandbox monitor`): the
wiring of `monitor.checks` to MLflow (the production model, the serving experiment), DVC (its training data),
S3 (`monitor.store`) and the Evidently UI (the scenario's project and its snapshots).

While a serving experiment runs (the registry's serving mode is shadow or ab) or the window holds candidate
lines, the window also compares the candidate with production (`mlops_sandbox.experiment.compare`), for the
window and since the experiment was set, and writes it to `contracts.experiment_key`.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import (
    ACTUAL_KEY,
    CANDIDATE_VARIANT,
    MODE_OFF,
    PRODUCTION,
    PRODUCTION_VARIANT,
    checkpoint_key,
)
from mlops_sandbox.monitor.checks import (
    EXPERIMENT_TAG,
    DecayRule,
    candidate_version_of,
    decay_report,
    experiment_mode,
    experiment_object,
    experiment_reports,
    experiment_rows,
    figures_and_reports,
    has_candidate_lines,
    production_answered,
    served_version,
    status_object,
)
from mlops_sandbox.monitor.store import (
    load_actuals,
    load_late_actuals,
    load_predictions,
    previous_status,
    quarantine_logs,
    save_experiment,
    save_status,
)
from mlops_sandbox.schema import Schema, get_schema
from mlops_sandbox.storage import get_json, put_json, s3_client

log = logging.getLogger(__name__)
REFERENCE_CACHE = Path(tempfile.gettempdir()) / "mlops-sandbox-reference"
EXPERIMENT_LOOKBACK = timedelta(days=7)  # the cumulative comparison reads at most this much history
MAE_PANEL = "MAE on predictions with actuals"
MAE_BY_VARIANT_PANEL = "MAE by variant"


def production_model(settings: Settings, scenario: str, version: str | None = None) -> dict | None:
    """Name, version, data-version tags and test MAE of the scenario's production model (or of its version
    `version`), or None when there is none."""
    from mlflow.exceptions import MlflowException

    from mlops_sandbox.tracking import use_tracking_server

    client = use_tracking_server(settings)
    name = settings.model_name_for(scenario)
    try:
        mv = (
            client.get_model_version_by_alias(name, PRODUCTION)
            if version is None
            else client.get_model_version(name, version)
        )
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


def dashboard_panels() -> list:
    """The panels of a scenario's Evidently dashboard. Series filter snapshots by tag: `drift` and `performance`
    are production's window figures, `experiment` with a variant's name a serving experiment's."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel

    return [
        counter_panel(
            title="Predictions in the last window",
            size="half",
            values=[PanelMetric(legend="rows", metric="RowCount", tags=["drift"])],
        ),
        line_plot_panel(
            title="Share of drifted features",
            size="half",
            values=[PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
        ),
        line_plot_panel(
            title=MAE_PANEL,
            size="half",
            values=[
                PanelMetric(legend="MAE", metric="MAE", tags=["performance"], metric_labels={"value_type": "mean"})
            ],
        ),
        line_plot_panel(
            title="Prediction volume per window",
            size="half",
            values=[PanelMetric(legend="predictions", metric="RowCount", tags=["drift"])],
        ),
        mae_by_variant_panel(),
    ]


def mae_by_variant_panel():
    """A serving experiment's MAE over time, one line per variant (`checks.experiment_reports`)."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    return line_plot_panel(
        title=MAE_BY_VARIANT_PANEL,
        size="half",
        values=[
            PanelMetric(
                legend=variant, metric="MAE", tags=[EXPERIMENT_TAG, variant], metric_labels={"value_type": "mean"}
            )
            for variant in (PRODUCTION_VARIANT, CANDIDATE_VARIANT)
        ],
    )


def upgrade_dashboard(workspace, project) -> list[str]:
    """Bring the dashboard of a project made before serving experiments up to date: production's MAE panel
    plots only `performance` snapshots (not the per-variant ones), and "MAE by variant" is added if missing.
    Returns what was changed (nothing when already up to date)."""
    dashboard = workspace.get_dashboard(project.id)
    changed = []
    for panel in dashboard.panels:
        if panel.title == MAE_PANEL and any(not series.tags for series in panel.values):
            for series in panel.values:
                series.tags = series.tags or ["performance"]
            changed.append(f"{MAE_PANEL}: performance snapshots only")
    if changed:
        workspace.save_dashboard(project.id, dashboard)
    if not any(panel.title == MAE_BY_VARIANT_PANEL for panel in dashboard.panels):
        project.dashboard.add_panel(mae_by_variant_panel())
        changed.append(f"{MAE_BY_VARIANT_PANEL}: added")
    for change in changed:
        log.info("Evidently project %s: %s", project.name, change)
    return changed


EVIDENTLY_RETRY_BACKOFF = 2.0  # urllib3's backoff factor: no wait before the second try, 4 s before the third


def remote_workspace(settings: Settings):
    """The Evidently UI server's workspace (evidently's `RemoteWorkspace`), with every call bounded: each try
    times out after EVIDENTLY_TIMEOUT_SECONDS, and a call is tried up to EVIDENTLY_ATTEMPTS times in all, with
    exponential backoff. A connection that fails is tried again whatever the call; a read that times out, or a
    502-504, only for a GET (a POST may have been done: a snapshot added twice), so a POST that times out is
    tried once.

    Evidently 0.7's client sends through a new `requests.Session` per call, with no timeout: a hung UI server
    would hold a monitoring run until its task's timeout. So its module's `Session` is replaced (for the whole
    process) by one with these bounds.
    """
    import requests
    from evidently.legacy.ui.workspace import remote
    from evidently.ui.workspace import RemoteWorkspace
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    again = settings.evidently_attempts - 1
    retry = Retry(
        total=again,
        connect=again,
        read=again,
        status=again,
        other=0,
        backoff_factor=EVIDENTLY_RETRY_BACKOFF,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
    )
    timeout = (min(5.0, settings.evidently_timeout_seconds), settings.evidently_timeout_seconds)

    class BoundedSession(requests.Session):
        def __init__(self):
            super().__init__()
            for scheme in ("http://", "https://"):
                self.mount(scheme, HTTPAdapter(max_retries=retry))

        def send(self, request, **kwargs):
            kwargs["timeout"] = kwargs.get("timeout") or timeout
            return super().send(request, **kwargs)

    remote.Session = BoundedSession
    return RemoteWorkspace(settings.evidently_url)


def evidently_project(settings: Settings, scenario: str, workspace=None):
    """The scenario's Evidently UI project, created with its dashboard on first use (one made earlier gets the
    panels added since: `upgrade_dashboard`). `workspace`: default, the UI server's (`remote_workspace`)."""
    if workspace is None:
        workspace = remote_workspace(settings)
    name = f"{scenario} monitoring"
    found = workspace.search_project(name)
    if found:
        upgrade_dashboard(workspace, found[0])
        return workspace, found[0]
    project = workspace.create_project(name, description=f"Drift and decay of the {scenario} production model")
    for panel in dashboard_panels():
        project.dashboard.add_panel(panel)
    return workspace, project


def serving_experiment(settings: Settings, scenario: str) -> dict:
    """The registry's serving experiment of the scenario's model (`registry.get_experiment`); mode `off` when
    the model is not registered yet."""
    from mlflow.exceptions import MlflowException

    from mlops_sandbox import registry

    name = settings.model_name_for(scenario)
    try:
        return registry.get_experiment(name=name, settings=settings)
    except (LookupError, MlflowException) as err:  # LookupError: not registered yet
        log.info("no serving experiment for %s: %s", name, err)
        return {"model_name": name, "mode": MODE_OFF, "candidate_version": None, "production_version": None}


def experiment_since(set_at: str | None, start: datetime, end: datetime) -> datetime:
    """Where the cumulative comparison starts: when the experiment was set, at most `EXPERIMENT_LOOKBACK`
    before the window's end, and never after the window's start."""
    since = end - EXPERIMENT_LOOKBACK
    if set_at:
        set_time = datetime.fromisoformat(set_at.replace("Z", "+00:00"))
        since = max(since, set_time if set_time.tzinfo else set_time.replace(tzinfo=UTC))
    return min(since, start)


def _since_set(frame: pd.DataFrame, set_at: str | None) -> pd.DataFrame:
    """The lines of `frame` captured since the experiment was set (all of them when that is not known): a
    window that starts before it holds lines of an earlier experiment, or none."""
    if not set_at or not len(frame):
        return frame
    return frame[frame["timestamp"] >= pd.Timestamp(set_at.replace("Z", "+00:00"))]


def run_experiment(
    settings: Settings,
    client,
    scenario: str,
    schema: Schema,
    start: datetime,
    end: datetime,
    current: pd.DataFrame,
    model: dict | None,
) -> tuple[dict | None, list]:
    """Compare the candidate with production when the registry says an experiment is on or the window holds
    candidate lines: for the window (`current`, every line joined with its actual) and since the experiment
    was set. Writes the comparison to S3; returns the window status's short `experiment` entry and the
    per-variant Evidently snapshots, or (None, []) when there is no experiment to compare.
    """
    from mlops_sandbox.experiment import compare

    registered = serving_experiment(settings, scenario)
    running = registered.get("mode", MODE_OFF) != MODE_OFF
    if not running and not has_candidate_lines(current):
        return None, []
    candidate = candidate_version_of(current, registered.get("candidate_version") if running else None)
    if candidate is None:
        log.warning("%s: serving mode %s but no candidate version to compare", scenario, registered.get("mode"))
        return None, []
    mode = experiment_mode(registered.get("mode") if running else None, current)
    production_version = registered.get("production_version") or (model or {}).get("version")
    set_at = registered.get("set_at") if running else None
    window_rows = experiment_rows(_since_set(current, set_at), candidate, production_version)

    since = experiment_since(set_at, start, end)
    if since < start:
        logs = settings.prediction_logs_bucket
        history = load_predictions(client, logs, schema, since, end).predictions
        actuals = load_actuals(client, logs, scenario, since, datetime.now(UTC) + timedelta(hours=1))
        history = history.merge(actuals, on=ACTUAL_KEY, how="left") if len(history) else history.assign(actual=[])
        if not running:  # no record of when it was set: from the candidate's first line in the lookback
            of_candidate = history[
                (history["variant"] == CANDIDATE_VARIANT) & (history["model_version"].astype(str) == candidate)
            ]
            if len(of_candidate):
                since = min(of_candidate["timestamp"].min().to_pydatetime(), start)
            history = history[history["timestamp"] >= pd.Timestamp(since)]
        cumulative_rows = experiment_rows(_since_set(history, set_at), candidate, production_version)
    else:
        cumulative_rows = window_rows

    min_labelled = settings.experiment_min_labelled
    cumulative = compare(cumulative_rows, mode, min_labelled)
    value = experiment_object(
        cumulative,
        compare(window_rows, mode, min_labelled),
        scenario,
        candidate,
        production_version,
        since,
        end,
    )
    key = save_experiment(client, settings.monitoring_bucket, scenario, candidate, end, value)
    log.info("%s experiment v%s against production: %s", scenario, candidate, cumulative["summary"])
    entry = {
        "mode": mode,
        "candidate_version": candidate,
        "production_version": value["production_version"],
        "verdict": cumulative["verdict"],
        "window_verdict": value["window"]["verdict"],
        "summary": cumulative["summary"],
        "key": key,
    }
    return entry, experiment_reports(window_rows, mode, end)


def run_window(
    settings: Settings, scenario: str, start: datetime, end: datetime, rule: DecayRule | None = None
) -> dict:
    """Monitor [start, end): figures, decay verdict, Evidently snapshots and the JSON status in MinIO. The
    status says when the window's actuals were read (`actuals_read_at`).

    The production model's figures cover the rows production answered; a serving experiment's lines are
    compared on their own (`run_experiment`) and counted in the status's `excluded_rows`.
    Idempotent: a rerun replaces the window's snapshots, status and experiment objects instead of adding more.
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
    actuals_read_at = datetime.now(UTC)  # what is stored after this is late for this check (`recheck_late_actuals`)
    actuals = load_actuals(
        client, settings.prediction_logs_bucket, scenario, start, datetime.now(UTC) + timedelta(hours=1)
    )
    lines = current.merge(actuals, on=ACTUAL_KEY, how="left") if len(current) else current.assign(actual=[])
    current, excluded = production_answered(lines)  # production's own figures: the rows it answered
    served = served_version(current)
    if model is not None and served is not None and served != model["version"]:
        # an earlier window (a rerun, or a catch-up): judged against the version that answered it, not today's
        model = production_model(settings, scenario, served) or model

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
    experiment, experiment_snapshots = run_experiment(settings, client, scenario, schema, start, end, lines, model)
    snapshots += experiment_snapshots
    status = status_object(
        scenario, start, end, figures, reasons, model_info, window.quarantined, rule, excluded, experiment
    )
    status["actuals_read_at"] = actuals_read_at.isoformat()

    previous = previous_status(client, bucket, scenario, start)
    status["evidently_snapshots"] = _replace_snapshots(settings, scenario, snapshots, previous)
    save_status(client, bucket, scenario, start, status)
    return status


def window_summary(status: dict) -> dict:
    """The short form of a window's status: what the CLI prints and the DAG's later tasks read."""
    summary = {k: status[k] for k in ("window_start", "window_end", "decay", "reasons")}
    summary |= {k: status["figures"].get(k) for k in ("rows", "labelled_rows", "drift_share", "mae")}
    summary["quarantined_files"] = len(status["quarantined_files"])
    return summary


def catch_up(
    settings: Settings,
    scenario: str,
    until: datetime,
    window_minutes: int = 5,
    lateness_seconds: int | None = None,
    rule: DecayRule | None = None,
) -> dict:
    """A scheduled monitoring run: every window from where the last one stopped up to the watermark.

    The watermark is `until` (at most now) less the allowed lateness (MONITORING_ALLOWED_LATENESS_SECONDS):
    rows still being uploaded, or prompt actuals, land before their window is checked. The windows are
    contiguous, each `window_minutes` long (the last one ends at the watermark), from the checkpoint the
    previous run left, so ticks that never ran (the stack was down, a run waited on retraining, the DAG was
    paused) are caught up: every captured row falls in a checked window. A gap longer than
    MONITORING_MAX_CATCH_UP_WINDOWS windows is not checked but reported (`not_monitored`).

    The checkpoint moves after each window, so a run that fails resumes where it stopped, and the next run's
    summary also covers the windows the failed one checked (its decay is not lost). A rerun of the same run
    (the same `until`: a cleared Airflow run) checks that run's windows again.

    Actuals later than the watermark are not lost either: the checkpoint lists the checked windows that still
    had rows without an actual (for MONITORING_RECHECK_HOURS after their end), and each run checks again those
    that have since received one (`recheck_late_actuals`).

    Returns:
        One summary (`window_summary`'s fields over all the windows: the first start, the last end, decay if
        any window decayed, each reason prefixed by its window), with `windows` (each window's summary),
        `rechecked` (the summaries of earlier windows checked again for their late actuals: a decay they did not
        show before counts, with its reasons, when they were judged against today's production version; their
        rows do not count), `recheck_failed` and `not_monitored` (None, or the span left out and why).
    """
    if window_minutes < 1:
        raise ValueError("window_minutes must be at least 1")
    lateness = settings.monitoring_allowed_lateness_seconds if lateness_seconds is None else lateness_seconds
    if lateness < 0:
        raise ValueError("the allowed lateness cannot be negative")
    length = timedelta(minutes=window_minutes)
    until = min(until.astimezone(UTC), datetime.now(UTC))  # a watermark in the future would skip rows not yet captured
    watermark = until - timedelta(seconds=lateness)
    client, bucket, key = s3_client(settings), settings.monitoring_bucket, checkpoint_key(scenario)
    checkpoint = get_json(client, bucket, key, missing_ok=True) or {}
    last_run = checkpoint.get("run") or {}
    start = datetime.fromisoformat(checkpoint["watermark"]) if checkpoint else watermark - length
    carried: list[dict] = []  # windows an unfinished run checked: its summary never reached anyone
    if last_run.get("until") == until.isoformat():
        start = datetime.fromisoformat(last_run["from"])  # the same run again: its windows again
    elif last_run and not last_run.get("done"):
        carried = _checked_windows(client, bucket, scenario, datetime.fromisoformat(last_run["from"]), start)
    not_monitored = None
    oldest = watermark - length * settings.monitoring_max_catch_up_windows
    if start < oldest:
        not_monitored = {
            "from": start.isoformat(),
            "to": oldest.isoformat(),
            "why": f"longer than MONITORING_MAX_CATCH_UP_WINDOWS={settings.monitoring_max_catch_up_windows} "
            f"windows of {window_minutes} min since the last checked window; `mlops-sandbox monitor --start "
            "--end` checks any span",
        }
        log.warning("%s: not monitored: %s", scenario, not_monitored)
        start = oldest
    run = {"until": until.isoformat(), "from": carried[0]["window_start"] if carried else start.isoformat()}

    earlier: list[dict] = checkpoint.get("unlabelled", [])  # windows waiting for actuals: `recheck_late_actuals`
    late_listed: str | None = checkpoint.get("late_actuals_listed_at")
    waiting: list[dict] = []  # those of this run

    def save(at: datetime, done: bool = False) -> None:
        value = {
            "watermark": at.isoformat(),
            "window_minutes": window_minutes,
            "run": run | {"done": done},
            "unlabelled": sorted(earlier + waiting, key=lambda w: w["window_start"]),
            "late_actuals_listed_at": late_listed,
        }
        put_json(client, bucket, key, value)

    save(start)
    windows = list(carried)
    while start < watermark:
        end = min(start + length, watermark)
        status = run_window(settings, scenario, start, end, rule)
        windows.append(window_summary(status))
        earlier = [w for w in earlier if w["window_start"] != status["window_start"]]  # a rerun's window
        waiting = _with_unlabelled(waiting, status)
        save(end)
        start = end

    def save_earlier(still_waiting: list[dict]) -> None:
        nonlocal earlier
        earlier = still_waiting
        save(start)

    late = recheck_late_actuals(settings, scenario, client, earlier, late_listed, rule, save_earlier)
    # the next run lists what was stored since this run's own windows read their actuals, too
    late_listed = min([late["listed_at"] or datetime.now(UTC).isoformat()] + [w["actuals_read_at"] for w in waiting])
    newly_decayed = [w for w in late["rechecked"] if w["decay"] and not w["decayed_before"]]
    if newly_decayed:  # only production's own decay is the run's (auto-retrain retrains production)
        serving = (production_model(settings, scenario) or {}).get("version")  # before `done`: a failure here
        newly_decayed = [w for w in newly_decayed if w["model_version"] == serving]  # leaves the run to carry
    save(start, done=True)  # the watermark, or a checkpoint already past it (an earlier run with less lateness)
    several = len(windows) > 1
    return {
        "window_start": windows[0]["window_start"] if windows else None,
        "window_end": windows[-1]["window_end"] if windows else None,
        "decay": any(w["decay"] for w in windows + newly_decayed),
        "reasons": [f"{w['window_start']}: {r}" if several else r for w in windows for r in w["reasons"]]
        + [f"{w['window_start']} (late actuals): {r}" for w in newly_decayed for r in w["reasons"]],
        "rows": sum(w["rows"] for w in windows),
        "labelled_rows": sum(w["labelled_rows"] or 0 for w in windows),
        "drift_share": windows[-1]["drift_share"] if windows else None,
        "mae": windows[-1]["mae"] if windows else None,
        "quarantined_files": sum(w["quarantined_files"] for w in windows),
        "watermark": watermark.isoformat(),
        "windows": windows,
        "rechecked": late["rechecked"],
        "recheck_failed": late["failed"],
        "not_monitored": not_monitored,
    }


LATE_MARGIN = timedelta(seconds=5)  # for the store's clock against this one's: a file inside it is read again
RECHECKS_PER_RUN = 12  # more wait for the next run (they stay due), so that a run stays short


def _with_unlabelled(unlabelled: list[dict], status: dict) -> list[dict]:
    """`unlabelled` after `status`: its window listed, with when its actuals were read, while production
    answered rows in it that have no actual yet; not listed once every row has one."""
    others = [w for w in unlabelled if w["window_start"] != status["window_start"]]
    figures = status["figures"]
    if "labelled_rows" not in figures or figures["labelled_rows"] >= figures["rows"]:  # no model: no MAE to mend
        return others
    entry = {k: status[k] for k in ("window_start", "window_end", "actuals_read_at")}
    return sorted([*others, entry], key=lambda w: w["window_start"])


def _mark_due(settings: Settings, scenario: str, client, waiting: list[dict], stored_after: datetime) -> None:
    """Mark `due` each window of `waiting` that one of the actuals stored after `stored_after` (and after the
    window's own check) labels a row of."""
    read_at = {w["window_start"]: pd.Timestamp(w["actuals_read_at"]) - LATE_MARGIN for w in waiting}
    first = min(datetime.fromisoformat(w["window_start"]) for w in waiting)
    stored_after = max(stored_after, min(read_at.values()).to_pydatetime())
    logs = settings.prediction_logs_bucket
    late = load_late_actuals(client, logs, scenario, first, stored_after)
    open_windows = [w for w in waiting if not w.get("due")]
    if not len(late) or not open_windows:
        return
    last = max(datetime.fromisoformat(w["window_end"]) for w in open_windows)
    predicted = load_predictions(client, logs, get_schema(scenario), first, last).predictions
    labelled = predicted[[*ACTUAL_KEY, "timestamp"]].merge(late[[*ACTUAL_KEY, "stored"]], on=ACTUAL_KEY)
    for entry in open_windows:
        start, end = pd.Timestamp(entry["window_start"]), pd.Timestamp(entry["window_end"])
        in_window = (labelled["timestamp"] >= start) & (labelled["timestamp"] < end)
        if (in_window & (labelled["stored"] > read_at[entry["window_start"]])).any():
            entry["due"] = True


def recheck_late_actuals(
    settings: Settings,
    scenario: str,
    client,
    waiting: list[dict],
    listed_at: str | None,
    rule: DecayRule | None = None,
    save=lambda still_waiting: None,
) -> dict:
    """Check again the windows of `waiting` that have received late actuals: its figures, decay verdict,
    snapshots and status are replaced (`run_window`), so a label that comes after its window was checked still
    counts.

    `waiting` lists checked windows with rows that had no actual yet, each with when its actuals were read
    (`actuals_read_at`); `listed_at` is when the previous run listed the actuals stored since (files stored
    before were seen then). A window is `due` when an actual of one of its rows was stored after its check. At
    most RECHECKS_PER_RUN due windows are checked again, oldest first, until one fails; the rest stay due for
    the next run. A failure (listing the late actuals, or a re-check) is reported in `failed`, not raised: the
    run's own windows stand, and the next run tries again. `save` gets the list as it changes. A window that
    ended more than MONITORING_RECHECK_HOURS ago leaves the list: later actuals are not counted
    (`mlops-sandbox monitor --start --end` checks any window again).

    Returns `rechecked` (each window's summary, with `decayed_before`, its verdict before, and `model_version`,
    the version it was judged against), `failed` (window and error) and `listed_at` (this run's, for the next).
    """
    now = datetime.now(UTC)
    horizon = now - timedelta(hours=settings.monitoring_recheck_hours)
    waiting = [dict(w) for w in waiting if datetime.fromisoformat(w["window_end"]) > horizon]
    result: dict = {"rechecked": [], "failed": [], "listed_at": listed_at}
    if waiting:
        since = datetime.fromisoformat(listed_at) - LATE_MARGIN if listed_at else datetime.min.replace(tzinfo=UTC)
        try:
            _mark_due(settings, scenario, client, waiting, since)
        except Exception as err:  # noqa: BLE001 - listed again by the next run (`listed_at` stays)
            log.warning("%s: late actuals not listed: %s", scenario, err)
            result["failed"].append({"window_start": None, "error": f"late actuals not listed: {str(err)[:300]}"})
            save(waiting)
            return result
        result["listed_at"] = now.isoformat()
    save(waiting)
    bucket = settings.monitoring_bucket
    for entry in [w for w in waiting if w.get("due")][:RECHECKS_PER_RUN]:
        start, end = datetime.fromisoformat(entry["window_start"]), datetime.fromisoformat(entry["window_end"])
        try:
            before = previous_status(client, bucket, scenario, start)
            status = run_window(settings, scenario, start, end, rule)
        except Exception as err:  # noqa: BLE001 - the next run tries again; this run's own windows stand
            log.warning("%s: window %s not checked again: %s", scenario, entry["window_start"], err)
            result["failed"].append({"window_start": entry["window_start"], "error": str(err)[:300]})
            break  # the cause (Evidently, MinIO) would likely fail the next ones too, each after its timeouts
        log.info("%s: window %s checked again for its late actuals", scenario, entry["window_start"])
        before_decay = bool(before.get("decay"))
        result["rechecked"].append(
            window_summary(status) | {"decayed_before": before_decay, "model_version": status["model"]["version"]}
        )
        waiting = _with_unlabelled([w for w in waiting if w is not entry], status)
        save(waiting)
    return result


def _checked_windows(client, bucket: str, scenario: str, start: datetime, end: datetime) -> list[dict]:
    """The summaries of the checked windows from `start` to `end`, each starting where the one before ended."""
    windows = []
    while start < end:
        status = previous_status(client, bucket, scenario, start)
        if not status:
            break
        windows.append(window_summary(status))
        start = datetime.fromisoformat(status["window_end"])
    return windows


def project_snapshots(settings: Settings, scenario: str) -> list[dict]:
    """The snapshots in the scenario's Evidently project, oldest first: id, time, kind (tags) and metadata.

    Read from the UI server's REST API: evidently 0.7's RemoteWorkspace cannot list runs yet.
    """
    import requests

    _, project = evidently_project(settings, scenario)
    url = f"{settings.evidently_url}/api/projects/{project.id}/snapshots"
    resp = requests.get(url, timeout=settings.evidently_timeout_seconds)
    resp.raise_for_status()
    rows = [
        {"id": s["id"], "timestamp": s["timestamp"], "kind": ",".join(s.get("tags") or []), **(s.get("metadata") or {})}
        for s in resp.json()
    ]
    return sorted(rows, key=lambda r: r["timestamp"])


def _replace_snapshots(settings: Settings, scenario: str, snapshots: list, previous: dict) -> list[str]:
    """Put this window's snapshots in the Evidently project, in place of those of an earlier run of it.

    The new ones are added first and the old ones deleted after, so the dashboard never lacks the window: a
    failure while adding removes what it added and leaves the earlier run's snapshots as they were.
    """
    if not snapshots and not previous.get("evidently_snapshots"):
        return []
    workspace, project = evidently_project(settings, scenario)
    ids: list[str] = []
    try:
        for snapshot in snapshots:
            ref = workspace.add_run(project.id, snapshot, include_data=False)
            ids.append(str(getattr(ref, "id", ref)))
    except Exception:
        _delete_snapshots(workspace, project.id, ids)
        raise
    _delete_snapshots(workspace, project.id, [i for i in previous.get("evidently_snapshots", []) if i not in ids])
    return ids


def _delete_snapshots(workspace, project_id, snapshot_ids: list[str]) -> None:
    """Delete snapshots of the project. Evidently 0.7's `RemoteWorkspace.delete_run` is not implemented (it
    raises NotImplementedError): for the UI server, the snapshot is deleted through its REST API
    (`DELETE /api/projects/<project>/<snapshot>`, what the UI's own delete button calls), with the bounded
    session of `remote_workspace`. One that is already gone (404) is skipped."""
    for snapshot_id in snapshot_ids:
        try:
            workspace.delete_run(project_id, snapshot_id)
            continue
        except NotImplementedError:
            pass
        except Exception:  # noqa: BLE001 - a local workspace: already gone
            log.info("snapshot %s was already gone", snapshot_id)
            continue
        import requests
        from evidently.legacy.ui.workspace import remote

        try:
            with remote.Session() as session:
                resp = session.delete(f"{workspace.base_url.rstrip('/')}/api/projects/{project_id}/{snapshot_id}")
            if resp.status_code != 404:
                resp.raise_for_status()
        except requests.RequestException as err:  # the window's new snapshots and status stand; its old point stays
            log.warning("snapshot %s of an earlier run of the window not deleted: %s", snapshot_id, err)
