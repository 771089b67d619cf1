"""Retraining on decay (seed step 21): challenger against champion on fresh labelled data.

By default a person retrains (trigger `training_pipeline`) and promotes. With the opt-in auto policy
(`AUTO_RETRAIN=true`), the monitoring DAG triggers `training_pipeline` on decay and then calls
`challenge`: the newest registered version (challenger) and the production version (champion) predict the
recent requests whose actual outcome is known; the challenger is promoted only if its MAE is lower, through
the same compliance checks as a person's promotion. The decision and its figures are recorded either way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from mlops_sandbox import registry
from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import ACTUAL_KEY, PRODUCTION, STAGING, alerts_prefix, decision_key
from mlops_sandbox.monitor.checks import production_answered
from mlops_sandbox.monitor.store import load_actuals, load_predictions
from mlops_sandbox.schema import get_schema
from mlops_sandbox.storage import get_json, list_keys, put_json, s3_client

ACTOR = "auto-retrain-policy"


def last_alert(settings: Settings, scenario: str) -> dict:
    """The status of the newest monitoring window that flagged decay (`monitoring/<scenario>/alerts/`).

    Raises:
        LookupError: no window has flagged decay yet.
    """
    client = s3_client(settings)
    keys = [k for k in list_keys(client, settings.monitoring_bucket, alerts_prefix(scenario)) if k.endswith(".json")]
    if not keys:
        raise LookupError(f"no monitoring window of {scenario} has flagged decay yet")
    return get_json(client, settings.monitoring_bucket, max(keys))  # keys are named by window start


def fresh_labelled(settings: Settings, scenario: str, start: datetime, end: datetime):
    """Captured requests of [start, end) (their inputs) joined with the actuals known for them."""
    client = s3_client(settings)
    window = load_predictions(client, settings.prediction_logs_bucket, get_schema(scenario), start, end)
    actuals = load_actuals(client, settings.prediction_logs_bucket, scenario, start, end + timedelta(hours=1))
    answered, _ = production_answered(window.predictions)  # not the candidate's shadow or A/B lines
    return answered.merge(actuals, on=ACTUAL_KEY, how="inner"), start, end


def challenge(
    settings: Settings,
    scenario: str,
    start: datetime | None = None,
    end: datetime | None = None,
    min_rows: int = 30,
    challenger: str | None = None,
    actor: str = ACTOR,
) -> dict:
    """Challenger (default: the newest version) against champion (production) on fresh labelled data: the
    requests of [start, end) (default: the last 30 minutes) whose actual outcome is known. `actor` is
    recorded as who promoted it (the auto-retrain policy, or the person who ran it)."""
    import mlflow

    from mlops_sandbox.tracking import use_tracking_server
    from mlops_sandbox.train.models import model_input

    schema = get_schema(scenario)
    name = settings.model_name_for(scenario)
    client = use_tracking_server(settings)
    champion = registry.alias_version(client, name, PRODUCTION)
    versions = sorted((int(v.version) for v in client.search_model_versions(f"name='{name}'")), reverse=True)
    if not versions:
        raise ValueError(f"{name} has no registered version to challenge with")
    challenger = str(challenger or versions[0])
    end = end or datetime.now(UTC)
    start = start or end - timedelta(minutes=30)
    rows, start, end = fresh_labelled(settings, scenario, start, end)
    decision = {
        "model_name": name,
        "challenger": challenger,
        "champion": champion,
        "fresh_rows": int(len(rows)),
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if challenger == champion:
        decision |= {"promoted": False, "why": "the newest version already serves production"}
    elif len(rows) < min_rows:
        decision |= {
            "promoted": False,
            "why": f"only {len(rows)} labelled requests in the window (need {min_rows})",
        }
    else:
        features = model_input(rows, schema)
        scores = {}
        for label, version in (("challenger", challenger), ("champion", champion)):
            if version is None:
                continue
            predictions = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(features)
            scores[label] = float(np.mean(np.abs(np.asarray(predictions, dtype=float) - rows["actual"].to_numpy())))
        decision |= {f"{k}_mae": v for k, v in scores.items()}
        if champion is not None and scores["challenger"] >= scores["champion"]:
            decision |= {"promoted": False, "why": "the challenger is not better on fresh labelled data"}
        else:
            reason = (
                f"challenger beat the champion after decay: MAE {scores['challenger']:,.4g} vs "
                f"{scores.get('champion', float('nan')):,.4g} on {len(rows)} fresh labelled requests"
            )
            registry.write_model_card_unless_written(  # a card a person wrote stays as it is
                challenger,
                f"Retrained after decay was flagged; promoted by {actor} because the {reason}.",
                actor,
                name=name,
                settings=settings,
            )
            try:
                registry.promote(challenger, STAGING, actor, reason, name=name, settings=settings)
                registry.promote(challenger, PRODUCTION, actor, reason, name=name, settings=settings)
                decision |= {"promoted": True, "why": reason}
            except registry.PromotionRefused as refused:
                decision |= {"promoted": False, "why": f"compliance refused it: {refused}"}
    s3 = s3_client(settings)
    put_json(s3, settings.monitoring_bucket, decision_key(scenario, datetime.now(UTC), challenger), decision)
    return decision
