"""Each workshop exercise (docs/workshop.md), from its `make skip-to STEP=N`: the stack is in the state the
exercise starts from, the exercise's commands and notebook run, and the attendee sees what the doc says.

They reset the stack they run on, so they run after tests/stack and tests/e2e (make test-stack).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import requests

from mlops_sandbox import loop, registry, workshop
from mlops_sandbox.contracts import raw_batch_time
from mlops_sandbox.ingest import list_batches
from mlops_sandbox.retrain import last_alert
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.storage import get_json, s3_client
from mlops_sandbox.tracking import use_tracking_server

pytestmark = pytest.mark.workshop
SCENARIO = "house_prices"
ROOT = Path(__file__).resolve().parents[2]
CONTINUED = "continued from the exercise before"


def _ok(process: subprocess.CompletedProcess) -> str:
    assert process.returncode == 0, f"exit {process.returncode}\n{process.stdout[-6000:]}\n{process.stderr[-6000:]}"
    return process.stdout


@pytest.fixture
def skip_to(make):
    def run(step: int) -> str:
        return _ok(make("skip-to", f"STEP={step}"))

    return run


@pytest.fixture
def start(skip_to, request):
    """Bring the stack to the start of exercise N the way the room does: an attendee who just did exercise
    N-1 goes on with the stack it left. So, when the test of exercise N-1 ran right before and passed, exercise
    N continues on that stack; otherwise (a failure, a `-k` selection) `make skip-to STEP=N` prepares it.
    Returns CONTINUED when it continued (the test then does what the doc asks of an attendee coming from
    exercise N-1, if anything), else what `make skip-to` printed."""

    def run(step: int) -> str:
        name, passed = getattr(request.session, "last_test", ("", False))
        if step > 1 and passed and name.startswith(f"test_exercise_{step - 1}_"):
            return CONTINUED
        return skip_to(step)

    return run


@pytest.fixture
def cli(compose):
    """`docker compose run --rm cli ARGS`, as the doc has attendees type it; returns stdout."""
    return lambda *args: _ok(compose("run", "--rm", "cli", *args, check=False))


@pytest.fixture
def notebook(compose):
    """Run a notebook headless in the jupyter service (a cell error fails); returns the text it printed and
    displayed, which is what the attendee reads (never MLflow's "Downloading artifacts" progress bars)."""

    def run(name: str) -> str:
        path = f"/home/sandbox/work/notebooks/{name}.ipynb"
        _ok(
            compose(
                "exec",
                "-T",
                "jupyter",
                "mlops-sandbox",
                "notebook",
                "run",
                path,
                "--save-to",
                "/tmp/executed",
                check=False,
            )
        )
        executed = json.loads(_ok(compose("exec", "-T", "jupyter", "cat", f"/tmp/executed/{name}.ipynb", check=False)))
        texts = []
        for cell in executed["cells"]:
            for output in cell.get("outputs", []):
                texts.append("".join(output.get("text", "")))
                texts.append("".join(output.get("data", {}).get("text/plain", "")))
        text = "\n".join(texts)
        assert "Downloading artifacts" not in text, f"{name} prints MLflow's progress bars"  # issue 13: quiet
        return text

    return run


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _versions(settings) -> list[dict]:
    return registry.list_versions(settings=settings)


def test_make_skip_to_refuses_a_step_that_is_not_an_exercise(make):
    process = make("skip-to", "STEP=99")
    assert process.returncode != 0 and "N from 1 to 8" in process.stdout + process.stderr


def test_exercise_1_tour(skip_to, cli, settings):
    skip_to(1)
    report = cli("check-stack")
    assert "FAIL" not in report and "ok   mlflow" in report
    # every dashboard of the table answers, and nothing has run yet
    for url in (
        f"{settings.airflow_url}/",
        f"{settings.mlflow_tracking_uri}/",
        f"{settings.predictor_url}/docs",
        f"{settings.evidently_url}/",
        f"{settings.jupyter_url}/lab?token={settings.jupyter_token}",
    ):
        assert requests.get(url, timeout=30).status_code == 200, url
    assert requests.get(f"{settings.predictor_url}/health", timeout=10).json()["model_loaded"] is False
    assert list_batches(s3_client(settings), settings.raw_data_bucket, SCENARIO) == []


def test_exercise_2_land_and_explore(start, cli, notebook, settings):
    start(2)
    conf = json.dumps({"batches": 12, "rows": 400, "start": workshop.SEED_START})
    run = _last_json(cli("trigger", "simulate_batch", "--conf", conf, "--wait"))
    assert run["state"] == "success"
    keys = list_batches(s3_client(settings), settings.raw_data_bucket, SCENARIO)
    assert len(keys) == workshop.SEED_BATCHES
    assert raw_batch_time(keys[0]) == parse_time(workshop.SEED_START)  # the doc's clock: the same houses in every room
    shown = notebook("01-explore-data")
    assert "12 batches" in shown and "4800 valid rows, 0 quarantined" in shown
    assert "quarantined rows" in shown and "missing_value" in shown  # the quality drift's quarantine


def test_exercise_3_train_and_develop(start, cli, notebook, settings):
    start(3)
    assert len(list_batches(s3_client(settings), settings.raw_data_bucket, SCENARIO)) == workshop.SEED_BATCHES
    assert _versions(settings) == []
    run = _last_json(cli("trigger", "training_pipeline", "--conf", '{"last_batches": 12}', "--wait"))
    assert run["state"] == "success" and set(run["tasks"].values()) == {"success"}
    versions = _versions(settings)
    assert [(v["version"], v["aliases"]) for v in versions] == [("1", [])]
    shown = notebook("02-develop-model")
    assert all(f"{label:<12} test RMSE" in shown for label in ("linear", "mlp-small", "mlp-default"))
    assert "pipeline v1" in shown
    client = use_tracking_server(settings)
    experiment = client.get_experiment_by_name(f"notebooks-{SCENARIO}")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_name for r in runs} == {"linear", "mlp-small", "mlp-default"}
    assert all(
        r.data.metrics["test_rmse"] > 0 and r.data.tags["dvc_data_version"] == versions[0]["data_version"] for r in runs
    )


def test_exercise_4_register_and_promote(start, notebook, settings):
    start(4)
    assert [(v["version"], v["aliases"], v["has_model_card"]) for v in _versions(settings)] == [("1", [], False)]
    shown = notebook("03-register-and-promote")
    assert "refused to move house-prices version 1 to 'production'" in shown
    assert all(f"FAIL {check}" in shown for check in ("metric:test_r2", "model_card", "staged_first"))
    assert "production: signature, lineage, model_card, metric:test_r2, metric:test_mape, staged_first" in shown
    (version,) = _versions(settings)
    assert sorted(version["aliases"]) == ["production", "staging"] and version["has_model_card"]
    tags = use_tracking_server(settings).get_model_version(settings.model_name, "1").tags
    assert "metric:test_r2" in tags["production.refused_because"]
    assert tags["production.promoted_by"] == "attendee"
    assert requests.get(f"{settings.predictor_url}/health", timeout=10).json()["model_version"] == "1"


def test_exercise_5_call_the_prediction_service(start, cli, notebook, settings):
    start(5)
    assert requests.get(f"{settings.predictor_url}/health", timeout=10).json()["model_version"] == "1"
    shown = notebook("04-call-the-prediction-service")
    assert "(model version 1)" in shown and "\n422" in "\n" + shown
    assert all(field in shown for field in ("area", "bedrooms", "parking", "furnishingstatus", "Field required"))
    report = _last_json(cli("traffic", "--duration", "30", "--actuals-delay", "2"))
    assert report["answered"] >= 200 and report["failed"] == 0 and report["refused"] == 0
    assert report["actuals_published"] == report["answered"]


def test_exercise_6_monitoring_and_drift(start, cli, notebook, settings):
    start(6)
    run = _last_json(cli("trigger", "monitoring", "--conf", '{"window_minutes": 15}', "--wait"))
    assert run["state"] == "success" and run["tasks"]["flag_decay"] == "success"
    s3 = s3_client(settings)
    healthy = get_json(s3, settings.monitoring_bucket, f"{SCENARIO}/status.json")
    assert healthy["decay"] is False and healthy["figures"]["rows"] >= 200
    shown = notebook("05-monitoring-and-drift")
    answered = re.search(r"(\d+) answered, 0 refused, 0 failed", shown)
    assert answered and int(answered.group(1)) >= 200 and ": failed" in shown  # the run that flagged decay
    decayed = get_json(s3, settings.monitoring_bucket, f"{SCENARIO}/status.json")
    assert decayed["decay"] is True and any("MAE" in reason for reason in decayed["reasons"])
    assert decayed["window_end"] > healthy["window_end"]
    assert last_alert(settings, SCENARIO)["window_start"] == decayed["window_start"]


def test_exercise_7_retrain_and_recover(start, cli, settings):
    start(7)
    assert last_alert(settings, SCENARIO)["decay"] is True
    clock = workshop.NEW_MARKET_START  # right after the seed batches
    landed = _last_json(
        cli("simulate", "--start", clock, "--batches", "12", "--rows", "400", "--drift", workshop.CONCEPT_DRIFT)
    )
    assert len(landed["batches"]) == 12
    run = _last_json(cli("trigger", "training_pipeline", "--conf", '{"last_batches": 12}', "--wait"))
    assert run["state"] == "success"
    assert [v["version"] for v in _versions(settings)] == ["2", "1"]
    decision = _last_json(cli("challenge", "--since-alert", "--by", "attendee"))
    assert decision["challenger"] == "2" and decision["champion"] == "1" and decision["promoted"] is True
    assert decision["challenger_mae"] < decision["champion_mae"]
    versions = {v["version"]: v["aliases"] for v in _versions(settings)}
    assert sorted(versions["2"]) == ["production", "staging"] and versions["1"] == []
    tags = use_tracking_server(settings).get_model_version(settings.model_name, "2").tags
    assert tags["production.promoted_by"] == "attendee" and tags["previous_production_version"] == "1"
    from mlops_sandbox.loop import wait_until_serving

    wait_until_serving(settings, "2", timeout=90, reload=False)  # the service's own poll of the alias
    cli("traffic", "--duration", "30", "--actuals-delay", "2", "--seed", "3", "--drift", workshop.CONCEPT_DRIFT)
    recovered = _last_json(cli("trigger", "monitoring", "--conf", '{"window_minutes": 1}', "--wait"))
    assert recovered["state"] == "success" and recovered["tasks"]["flag_decay"] == "success"


def _doc_commands_after(marker: str) -> list[list[str]]:
    """The `docker compose run --rm cli ...` lines of the first bash block after `marker` in docs/workshop.md,
    as argument lists for `cli`: what the doc has attendees paste."""
    after = (ROOT / "docs" / "workshop.md").read_text().split(marker, 1)[1]
    block = after.split("```bash\n", 1)[1].split("```", 1)[0]
    prefix = ["docker", "compose", "run", "--rm", "cli"]
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert commands and all(c[: len(prefix)] == prefix for c in commands), block
    return [c[len(prefix) :] for c in commands]


def test_exercise_8_compare_on_live_traffic_and_promote(start, cli, notebook, settings):
    if start(8) == CONTINUED:  # the doc's "Coming from exercise 7, make version 3 yourself"
        for command in _doc_commands_after("Coming from exercise 7, make version 3 yourself"):
            cli(*command)
    assert {v["version"]: v["aliases"] for v in _versions(settings)} == {"3": ["staging"], "2": ["production"], "1": []}
    assert _last_json(cli("model", "experiment", "status"))["mode"] == "off"
    # 1. shadow: the candidate predicts beside production, answering nobody
    shadow = _last_json(cli("model", "experiment", "shadow", "--by", "attendee", "--reason", "v3 on live traffic"))
    assert (shadow["mode"], shadow["candidate_version"], shadow["production_version"]) == ("shadow", "3", "2")
    loop.wait_until_experiment(settings, "shadow")  # the attendee waits until /model lists both
    served = requests.get(f"{settings.predictor_url}/model", timeout=10).json()["served"]
    assert [(m["version"], m["role"]) for m in served] == [("2", "production"), ("3", "candidate (shadow)")]
    # 2. traffic, with each real price published 2 s after its answer
    drift = workshop.CONCEPT_DRIFT
    traffic = ["--duration", "30", "--actuals-delay", "2", "--seed", "4", "--start", workshop.SHADOW_START]
    report = _last_json(cli("traffic", *traffic, "--drift", drift))
    assert report["answered"] >= 250 and report["failed"] == 0 and report["actuals_published"] == report["answered"]
    assert report["variants"] == {"production": report["answered"]}  # in shadow, callers only see production
    # 3. the monitoring DAG compares the candidate with production on the labelled pairs
    run = _last_json(cli("trigger", "monitoring", "--conf", '{"window_minutes": 1}', "--wait"))
    assert run["state"] == "success"
    paired = registry.latest_comparison(settings, SCENARIO, "3")
    assert paired["mode"] == "shadow" and paired["comparison"]["labelled"] >= settings.experiment_min_labelled
    assert paired["verdict"] in {"better", "inconclusive"} and "paired" in paired["comparison"]["method"]
    assert paired["variants"]["production"]["labelled"] == paired["comparison"]["labelled"]
    # 4-5. the notebook: A/B at 20 %, sticky callers, traffic in rounds, the comparisons, promotion on them
    shown = notebook("06-ab-testing")
    assert "alice  -> production (version 2), 3 answers" in shown
    assert "erin   -> candidate (version 3), 3 answers" in shown
    minimum = f"labelled, minimum {settings.experiment_min_labelled}"
    assert re.search(rf"ok +online_comparison: candidate MAE .* {minimum}", shown)
    assert "ok   beats_production" in shown
    ab = [c for c in workshop.experiment_comparisons(settings, SCENARIO, "3") if c["mode"] == "ab"]
    assert ab and ab[-1]["comparison"]["labelled"] >= settings.experiment_min_labelled
    assert ab[-1]["verdict"] in {"better", "inconclusive"} and "independent" in ab[-1]["comparison"]["method"]
    versions = {v["version"]: v["aliases"] for v in _versions(settings)}
    assert sorted(versions["3"]) == ["production", "staging"] and versions["2"] == []
    tags = use_tracking_server(settings).get_model_version(settings.model_name, "3").tags
    assert tags["production.promoted_by"] == "attendee" and tags["previous_production_version"] == "2"
    assert minimum in tags["production.online_comparison"]
    health = requests.get(f"{settings.predictor_url}/health", timeout=10).json()
    assert health["model_version"] == "3" and health["experiment"]["mode"] == "off"
    assert _last_json(cli("model", "experiment", "status"))["mode"] == "off"
