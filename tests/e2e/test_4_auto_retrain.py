"""The opt-in auto policy on the running stack: decay -> training_pipeline -> challenger vs champion.

The run opts in with its `auto_retrain=on` param (what AUTO_RETRAIN=true does for every run), so the
scheduled monitoring runs of the test stack stay as they are.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mlops_sandbox.registry import PRODUCTION, alias_version
from mlops_sandbox.simulate import batch_times, generate_batch, next_clock, publish_batch
from mlops_sandbox.storage import s3_client
from mlops_sandbox.tracking import use_tracking_server
from mlops_sandbox.traffic import run_traffic

pytestmark = pytest.mark.e2e
SCENARIO = "house_prices"


def test_decay_retrains_and_promotes_a_better_challenger(settings, airflow):
    s3 = s3_client(settings)
    name = settings.model_name_for(SCENARIO)
    champion = alias_version(use_tracking_server(settings), name, PRODUCTION)
    assert champion is not None, "the earlier e2e tests leave a production model"
    # The world goes back to the original market: 24 fresh raw batches (newer than any before) and traffic
    # from it. The champion was trained on concept-drifted prices (test_3_demo), so its errors grow.
    later = next_clock(
        s3, settings.raw_data_bucket, SCENARIO, datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    )
    for when in batch_times(later, timedelta(hours=1), 24):
        publish_batch(generate_batch(SCENARIO, 31, when, 300), SCENARIO, when, s3, settings.raw_data_bucket)
    sent = run_traffic(settings, s3, SCENARIO, rate=10, duration=30, seed=32, actuals_delay=1)
    assert sent.answered == sent.sent

    run_id = airflow.trigger("monitoring", {"scenario": SCENARIO, "window_minutes": 1, "auto_retrain": "on"})
    airflow.wait("monitoring", run_id, timeout=900)
    states = airflow.task_states("monitoring", run_id)
    assert states["flag_decay"] == "failed"  # the alert
    assert states["auto_retrain_on"] == "success" and states["retrain"] == "success", states
    assert states["challenge"] == "success", states

    decision = json.loads(airflow.xcom("monitoring", run_id, "challenge"))
    assert decision["champion"] == champion and decision["fresh_rows"] >= 30
    assert decision["promoted"] is True, decision
    assert decision["challenger_mae"] < decision["champion_mae"]
    client = use_tracking_server(settings)
    assert alias_version(client, name, PRODUCTION) == decision["challenger"]
    tags = client.get_model_version(name, decision["challenger"]).tags
    assert tags["production.promoted_by"] == "auto-retrain-policy"
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=settings.monitoring_bucket, Prefix=f"{SCENARIO}/decisions/").get(
            "Contents", []
        )
    ]
    assert any(k.endswith(f"-v{decision['challenger']}.json") for k in keys)
