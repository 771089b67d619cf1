"""The workshop (docs/workshop.md): its exercises, and the state a fresh stack needs at the start of each.

`make skip-to STEP=N` resets the stack and then runs `mlops-sandbox workshop prepare N` in the `cli`
container, which does what exercises 1 .. N-1 leave behind, with the same commands and DAGs the exercises
use. Everything is seeded, so a prepared stack matches the one an attendee built by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mlops_sandbox import loop
from mlops_sandbox.airflow_api import AirflowAPI
from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.ingest import list_batches
from mlops_sandbox.simulate import land_batches, parse_drift
from mlops_sandbox.storage import s3_client
from mlops_sandbox.traffic import run_traffic

# What the exercises ask attendees to type; the tests and `prepare` use the same figures.
SEED_BATCHES = 12
ROWS_PER_BATCH = 400
TRAFFIC_RATE = 10  # requests per second
TRAFFIC_SECONDS = 30
ACTUALS_DELAY = 2  # seconds until an outcome is known
HEALTHY_WINDOW_MINUTES = 15  # exercise 6 monitors the normal traffic of exercise 5, whenever that was
DRIFT_WINDOW_MINUTES = 1  # ... and then only the drifted burst it has just sent
CONCEPT_DRIFT = "concept,2026-01-01T00:00Z,1.0"  # on for every batch and request after that date
ACTOR = "workshop"
MODEL_CARD = (
    "House-price MLP trained by the workshop pipeline on the first 12 simulated batches. "
    "Intended for the sandbox's prediction service; not for real valuations."
)


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    notebook: str | None
    starts_from: str  # the state `prepare(number)` builds


EXERCISES: tuple[Exercise, ...] = (
    Exercise(1, "Start the stack and tour the dashboards", None, "a fresh, empty stack"),
    Exercise(2, "Land simulated data and explore it", "01-explore-data", "a fresh, empty stack"),
    Exercise(3, "Train in Airflow, develop a model in JupyterLab", "02-develop-model", "12 raw batches in MinIO"),
    Exercise(
        4, "Register and promote, with compliance checks", "03-register-and-promote", "version 1 registered, no alias"
    ),
    Exercise(
        5,
        "Call the prediction service",
        "04-call-the-prediction-service",
        "version 1 in production, served by the prediction service",
    ),
    Exercise(
        6,
        "Monitoring and drift",
        "05-monitoring-and-drift",
        "version 1 served; exercise 5's burst of normal traffic captured in MinIO",
    ),
    Exercise(
        7,
        "Retrain, challenge the champion, recover",
        None,
        "decay flagged by the monitoring DAG after concept drift",
    ),
)


def exercise(number: int) -> Exercise:
    """The exercise numbered `number`.

    Raises:
        ValueError: there is no such exercise.
    """
    for item in EXERCISES:
        if item.number == number:
            return item
    raise ValueError(f"no exercise {number}: the workshop has exercises 1 to {len(EXERCISES)}")


def send_traffic(settings: Settings, scenario: str, seed: int, drifted: bool):
    """One burst of requests (exercise 5's traffic; with `drifted`, exercise 6's concept drift)."""
    return run_traffic(
        settings,
        s3_client(settings),
        scenario,
        TRAFFIC_RATE,
        TRAFFIC_SECONDS,
        seed=seed,
        drifts=[parse_drift(CONCEPT_DRIFT)] if drifted else [],
        actuals_delay=ACTUALS_DELAY,
    )


def _land_seed_data(settings: Settings, scenario: str, _: AirflowAPI, state: dict) -> None:
    keys = land_batches(s3_client(settings), settings.raw_data_bucket, scenario, SEED_BATCHES, ROWS_PER_BATCH)
    state["raw_batches"] = len(keys)


def _train_v1(settings: Settings, scenario: str, airflow: AirflowAPI, state: dict) -> None:
    state["version"] = loop.run_training(airflow, scenario, "mlp", SEED_BATCHES)


def _promote_v1(settings: Settings, scenario: str, _: AirflowAPI, state: dict) -> None:
    loop.promote_to_production(settings, state["version"], ACTOR, "workshop: first production model", MODEL_CARD)
    loop.wait_until_serving(settings, state["version"])


def _normal_traffic(settings: Settings, scenario: str, _: AirflowAPI, state: dict) -> None:
    state["requests"] = send_traffic(settings, scenario, seed=1, drifted=False).answered


def _drift_and_decay(settings: Settings, scenario: str, airflow: AirflowAPI, state: dict) -> None:
    state["healthy_run"] = loop.run_monitoring(airflow, scenario, HEALTHY_WINDOW_MINUTES)
    if state["healthy_run"]["decay"]:
        raise RuntimeError(f"normal traffic was flagged as decay: {state['healthy_run']['reasons']}")
    send_traffic(settings, scenario, seed=2, drifted=True)
    state["decayed_run"] = loop.run_monitoring(airflow, scenario, DRIFT_WINDOW_MINUTES)
    if not state["decayed_run"]["decay"]:
        raise RuntimeError(f"concept drift was not flagged: {state['decayed_run']}")


# What exercise N leaves behind that later exercises need (exercise 1 leaves nothing).
AFTER: dict[int, Callable[[Settings, str, AirflowAPI, dict], None]] = {
    2: _land_seed_data,
    3: _train_v1,
    4: _promote_v1,
    5: _normal_traffic,
    6: _drift_and_decay,
}


def prepare(
    number: int, settings: Settings | None = None, say: Callable[[str], None] = print, force: bool = False
) -> dict:
    """Bring a fresh stack to the state at the start of exercise `number`; returns what it made.

    Raises:
        ValueError: no such exercise, or the stack is not fresh (raw data already landed) and not `force`.
    """
    target = exercise(number)
    settings = settings or get_settings()
    scenario = settings.scenario
    if not force and number > 2 and list_batches(s3_client(settings), settings.raw_data_bucket, scenario):
        raise ValueError(
            "the stack already holds raw data: prepare expects a fresh stack (`make skip-to STEP=N` resets it first)"
        )
    airflow = AirflowAPI(settings)
    state: dict = {"exercise": number, "scenario": scenario}
    started = datetime.now(UTC)
    for done in range(1, number):
        if done in AFTER:
            say(f"exercise {done} ({exercise(done).title}) ...")
            AFTER[done](settings, scenario, airflow, state)
    state["seconds"] = round((datetime.now(UTC) - started) / timedelta(seconds=1))
    say(f"ready for exercise {number}: {target.title} (starts from {target.starts_from})")
    return state
