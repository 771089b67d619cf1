"""Promotion on evidence from live traffic (seed step 6), on the running stack, for delivery_delay:

- shadow: production (an MLP trained briefly) answers; the candidate (gradient-boosted trees) predicts every
  request after the answer. The monitoring DAG's paired comparison says the candidate is better, and promotion
  is allowed on it;
- A/B: the MLP comes back as the candidate, answering half the callers. The comparison of the two groups says
  it is worse, and promotion is refused with the figures;
- a candidate that cannot be loaded: production answers everything, with 0 5xx, and the experiment is broken.

The stack's predictor serves house_prices, so the test starts a second one for delivery_delay.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests

from mlops_sandbox import loop, registry
from mlops_sandbox.contracts import STAGING
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.storage import s3_client
from mlops_sandbox.tracking import use_tracking_server
from mlops_sandbox.traffic import run_traffic

pytestmark = pytest.mark.e2e

SCENARIO = "delivery_delay"
START = "2031-09-01T00:00:00Z"  # a simulated clock no other test uses
CARD = "Delivery delay in minutes, trained by the e2e test on simulated batches; not for real decisions."


def _train(airflow, model_type: str, **conf) -> str:
    airflow.wait_for_dag("training_pipeline")
    run_id = airflow.trigger("training_pipeline", {"scenario": SCENARIO, "model_type": model_type, **conf})
    state = airflow.wait("training_pipeline", run_id, timeout=900)
    assert state == "success", airflow.task_states("training_pipeline", run_id)
    return json.loads(airflow.xcom("training_pipeline", run_id, "register"))["version"]


@pytest.fixture(scope="module")
def delivery(settings, compose, airflow, scenario_predictor):
    """Six simulated days, a briefly trained MLP in production, gradient-boosted trees in staging, and a
    predictor for the sector (CAPTURE_FLUSH_SECONDS=2, so that its logs reach the bucket quickly)."""
    out = compose(
        "run", "--rm", "cli", "simulate", "--scenario", SCENARIO, "--batches", "6", "--rows", "300",
        "--every", "1d", "--start", START, "--seed", "21",
    )  # fmt: skip
    assert len(json.loads(out.stdout.strip().splitlines()[-1])["batches"]) == 6
    mlp = _train(airflow, "mlp", epochs=10, last_batches=6)  # r2 about 0.7: fit for production, not the best
    trees = _train(airflow, "hist_gbt", last_batches=6)
    with scenario_predictor(SCENARIO, "CAPTURE_FLUSH_SECONDS=2") as sector:
        loop.promote_to_production(sector, mlp, "e2e", "first delivery model", CARD)
        registry.set_model_card(trees, CARD, "e2e", settings=sector)
        registry.promote(trees, STAGING, "e2e", "candidate", settings=sector)
        loop.wait_until_serving(sector, mlp, timeout=180)
        yield {"settings": sector, "mlp": mlp, "trees": trees}


def _experiment(compose, sector, *args: str) -> dict:
    """`mlops-sandbox model experiment ...`, as a person runs it."""
    out = compose("run", "--rm", "cli", "model", "--name", sector.model_name, "experiment", *args)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _traffic(sector, rate: float, duration: float, seed: int, day: int):
    report = run_traffic(
        sector,
        s3_client(sector),
        SCENARIO,
        rate=rate,
        duration=duration,
        seed=seed,
        clock_start=parse_time(START) + timedelta(days=day),
        actuals_delay=2,
    )
    assert report.answered == report.sent and report.failed == 0, report.as_dict()
    return report


def _comparison(airflow, sector, candidate: str) -> dict:
    """Run the monitoring DAG on the last minutes, and read the comparison it wrote for `candidate`."""
    summary = loop.run_monitoring(airflow, SCENARIO, window_minutes=3)
    assert summary["state"] in {"success", "failed"}, summary  # failed = decay flagged, still a verdict
    comparison = registry.latest_comparison(sector, SCENARIO, candidate)
    assert comparison is not None, summary
    return comparison


def test_shadow_with_a_better_candidate_gives_better_and_promotion_is_allowed(compose, airflow, delivery):
    sector, mlp, trees = delivery["settings"], delivery["mlp"], delivery["trees"]
    state = _experiment(compose, sector, "shadow", "--by", "e2e", "--reason", "trees against the MLP")
    assert (state["mode"], state["candidate_version"], state["production_version"]) == ("shadow", trees, mlp)
    assert loop.wait_until_experiment(sector, "shadow")["candidate_version"] == trees

    report = _traffic(sector, rate=10, duration=30, seed=31, day=7)
    missing = loop.wait_until_captured(sector, SCENARIO, set(report.request_ids), shadowed=True)
    assert not missing, (
        f"{len(missing)} answered requests have no shadow line in the bucket, e.g. {sorted(missing)[:3]}"
    )
    answer = requests.post(f"{sector.predictor_url}/predict", json=_example(), timeout=30).json()
    assert (answer["model_version"], answer["variant"]) == (mlp, "production")  # production always answers

    comparison = _comparison(airflow, sector, trees)
    assert comparison["mode"] == "shadow" and comparison["verdict"] == "better", comparison["summary"]
    assert comparison["comparison"]["labelled"] >= sector.experiment_min_labelled
    assert comparison["comparison"]["high"] < 0  # candidate MAE minus production's, interval below 0

    checks = {c.name: c for c in registry.promote(trees, "production", "e2e", "better online", settings=sector)}
    assert checks["online_comparison"].passed and "better" in checks["online_comparison"].detail
    tags = use_tracking_server(sector).get_model_version(sector.model_name, trees).tags
    assert "better" in tags["production.online_comparison"]
    assert registry.get_experiment(settings=sector)["mode"] == "off"  # the promotion ended the experiment


def test_ab_with_a_worse_candidate_gives_worse_and_promotion_is_refused_with_figures(compose, airflow, delivery):
    sector, mlp, trees = delivery["settings"], delivery["mlp"], delivery["trees"]
    registry.promote(mlp, STAGING, "e2e", "the MLP again, on live traffic", settings=sector)
    loop.wait_until_serving(sector, trees, timeout=120)
    _experiment(compose, sector, "ab", "--share", "0.5", "--by", "e2e", "--reason", "A/B: the MLP against trees")
    loop.wait_until_experiment(sector, "ab")

    # sticky: a caller's every request goes to the same variant
    seen = {
        client: {
            requests.post(
                f"{sector.predictor_url}/predict", json=_example(), headers={"X-Client-ID": client}, timeout=30
            ).json()["model_version"]
            for _ in range(4)
        }
        for client in ("alice", "bob", "carol", "dave", "erin", "frank")
    }
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert set.union(*seen.values()) == {mlp, trees}, seen  # both variants answer someone

    report = _traffic(sector, rate=25, duration=40, seed=32, day=8)  # about 500 callers a variant
    missing = loop.wait_until_captured(sector, SCENARIO, set(report.request_ids))
    assert not missing, f"{len(missing)} answered requests not in the bucket, e.g. {sorted(missing)[:3]}"

    comparison = _comparison(airflow, sector, mlp)
    assert comparison["mode"] == "ab" and comparison["verdict"] == "worse", comparison["summary"]
    variants = comparison["variants"]
    assert variants["candidate"]["versions"] == [mlp] and variants["production"]["versions"] == [trees]
    assert min(variants["candidate"]["labelled"], variants["production"]["labelled"]) >= sector.experiment_min_labelled

    with pytest.raises(registry.PromotionRefused) as refused:
        registry.promote(mlp, "production", "e2e", "try anyway", settings=sector)
    online = next(c for c in refused.value.failed if c.name == "online_comparison")
    assert "worse" in online.detail and f"{variants['candidate']['mae']:.4g}" in online.detail, online.detail
    tags = use_tracking_server(sector).get_model_version(sector.model_name, mlp).tags
    assert "worse" in tags["production.refused_because"]


def test_a_candidate_that_cannot_load_leaves_production_answering_with_no_5xx(compose, delivery):
    sector, trees = delivery["settings"], delivery["trees"]
    # a version registered, with plain MLflow, from a path of a real run that holds no model; set as staging
    client = use_tracking_server(sector)
    run = client.get_run(client.get_model_version(sector.model_name, trees).run_id)
    source = f"{run.info.artifact_uri}/no-such-model"
    broken = client.create_model_version(sector.model_name, source, run_id=run.info.run_id)
    client.set_registered_model_alias(sector.model_name, STAGING, broken.version)
    _experiment(compose, sector, "ab", "--share", "0.5", "--by", "e2e", "--reason", "a candidate that cannot load")
    experiment = loop.wait_until_experiment(sector, "ab", running=False)
    assert "cannot be" in experiment["broken"], experiment

    report = _traffic(sector, rate=10, duration=10, seed=33, day=9)
    assert report.answered >= 90
    answers = [
        requests.post(f"{sector.predictor_url}/predict", json=_example(), headers={"X-Client-ID": f"c{i}"}, timeout=30)
        for i in range(20)
    ]
    assert {(a.status_code, a.json()["model_version"], a.json()["variant"]) for a in answers} == {
        (200, trees, "production")
    }
    metrics = requests.get(f"{sector.predictor_url}/metrics", timeout=30).text
    assert 'predictor_experiment_broken{model_name="delivery-delay"} 1.0' in metrics
    assert not any(
        line.startswith('predictor_requests_total{route="/predict",status="5') for line in metrics.splitlines()
    )
    _experiment(compose, sector, "off", "--by", "e2e", "--reason", "done")


def _example() -> dict:
    from mlops_sandbox import catalog

    return catalog.sector(SCENARIO).example
