"""The extension points on the running stack: the third sector (energy_demand) and the third model type
(hist_gbt), each one file plus one catalog line, go through the whole loop like the first two:
simulate -> training_pipeline -> registered -> promoted -> served -> captured -> monitored.

The stack's predictor serves the configured scenario (house_prices), so this test starts a second one for
energy_demand: the same compose service and image, with SCENARIO set, as a user would to serve another sector.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests

from mlops_sandbox import catalog, loop
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.storage import s3_client
from mlops_sandbox.tracking import use_tracking_server
from mlops_sandbox.traffic import run_traffic

pytestmark = pytest.mark.e2e

SCENARIO = "energy_demand"
MODEL_TYPE = "hist_gbt"
START = "2031-06-01T00:00:00Z"  # a simulated clock no other test uses: summer days


@pytest.fixture(scope="module")
def energy(settings):
    """The host-side settings for the energy sector (its registered model is `energy-demand`)."""
    return settings.model_copy(update={"scenario": SCENARIO})


@pytest.fixture(scope="module")
def energy_predictor(scenario_predictor):
    """A predictor for energy_demand on a free host port, with its own spool folder; removed afterwards."""
    with scenario_predictor(SCENARIO) as energy:
        yield energy


def test_both_are_registered_in_the_catalog():
    assert SCENARIO in catalog.SECTORS and MODEL_TYPE in catalog.MODEL_TYPES


def test_energy_demand_with_gradient_boosted_trees_through_the_whole_loop(
    settings, compose, airflow, energy, energy_predictor
):
    # simulate: eight summer days land in the raw-data bucket
    out = compose(
        "run", "--rm", "cli", "simulate", "--scenario", SCENARIO, "--batches", "8", "--rows", "300",
        "--every", "1d", "--start", START, "--seed", "11",
    )  # fmt: skip
    landed = json.loads(out.stdout.strip().splitlines()[-1])["batches"]
    assert len(landed) == 8 and all(key.startswith(f"{SCENARIO}/") for key in landed)

    # train and register: the DAG's steps run the new model type on the new sector
    version = loop.run_training(airflow, SCENARIO, MODEL_TYPE, last_batches=8)
    client = use_tracking_server(settings)
    mv = client.get_model_version("energy-demand", version)
    assert mv.tags["model_type"] == MODEL_TYPE
    metrics = client.get_run(mv.run_id).data.metrics
    assert metrics["test_r2"] > 0.8, metrics

    # promote, as a person, through the same compliance checks
    card = "Energy demand per feeder and day, gradient-boosted trees, trained by the e2e test on simulated days."
    loop.promote_to_production(energy, version, "e2e", "first energy model", card)

    # serve: the energy predictor answers with that version
    loop.wait_until_serving(energy_predictor, version, timeout=180)
    example = catalog.sector(SCENARIO).example
    one = requests.post(f"{energy_predictor.predictor_url}/predict", json=example, timeout=30)
    assert one.status_code == 200, one.text
    assert one.json()["model_version"] == version and one.json()["predictions"][0] > 0
    bad = requests.post(f"{energy_predictor.predictor_url}/predict", json={**example, "day_of_week": 9}, timeout=30)
    assert bad.status_code == 422

    # traffic with delayed ground truth, captured under the sector's own prefix
    report = run_traffic(
        energy_predictor,
        s3_client(energy_predictor),
        SCENARIO,
        rate=4,
        duration=30,
        seed=5,
        clock_start=parse_time(START) + timedelta(days=3),
        actuals_delay=3,
    )
    assert report.answered >= 100 and report.failed == 0, report.as_dict()
    missing = loop.wait_until_captured(energy_predictor, SCENARIO, set(report.request_ids))
    assert not missing, f"{len(missing)} answered requests not in the bucket after 120 s, e.g. {sorted(missing)[:3]}"

    # monitor: the monitoring DAG checks the window for this sector, with labelled rows
    summary = loop.run_monitoring(airflow, SCENARIO, window_minutes=5)
    assert summary["state"] in {"success", "failed"}, summary  # failed = decay flagged, still a verdict
    assert summary["rows"] >= report.answered * 0.9, summary
    assert summary["labelled_rows"] >= report.actuals_published * 0.9 and summary["mae"] is not None, summary
