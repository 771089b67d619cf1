"""The workshop (docs/workshop.md): its exercises, and the state a fresh stack needs at the start of each.

`make skip-to STEP=N` resets the stack and then runs `mlops-sandbox workshop prepare N` in the `cli`
container, which does what exercises 1 .. N-1 leave behind (and what exercise N's **Start from** asks for
beyond that), with the same commands and DAGs the exercises use. Everything is seeded, so a prepared stack
matches the one an attendee built by hand.

Exercise 8 (shadow, then A/B, then promote on the evidence) also reads the monitor's comparisons of a candidate
with production as a table (the helpers at the end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mlops_sandbox import loop, registry
from mlops_sandbox.airflow_api import AirflowAPI
from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.contracts import STAGING, experiments_prefix
from mlops_sandbox.ingest import list_batches
from mlops_sandbox.simulate import land_batches, parse_drift
from mlops_sandbox.simulate.generator import parse_time
from mlops_sandbox.storage import get_json, list_keys, s3_client
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
# The simulated clock of every batch (and of exercise 8's traffic) is fixed, so every attendee, and
# `make skip-to`, trains on the same houses and compares versions on the same customers: the verdicts the doc
# shows are the ones a room sees. (On the wall clock each hour's houses differ, and the A/B verdict of exercise
# 8 is a draw: now and then a room would see its better candidate judged worse, and refused.)
SEED_START = "2026-10-01T00:00Z"  # exercise 2: the 12 seed batches, hourly
NEW_MARKET_START = "2026-10-01T12:00Z"  # exercise 7: 12 batches of the new market, right after them
CANDIDATE_START = "2026-10-02T00:00Z"  # exercise 8's start: 24 more
SHADOW_START = "2026-10-03T00:00Z"  # exercise 8, step 2: the shadow traffic
AB_START = "2026-10-03T14:00Z"  # exercise 8, the notebook: A/B round N starts N-1 simulated hours later
ACTOR = "workshop"
MODEL_CARD = (
    "House-price MLP trained by the workshop pipeline on the first 12 simulated batches. "
    "Intended for the sandbox's prediction service; not for real valuations."
)
# Exercise 8: a candidate retrained on more of the new market (24 more batches: 36 in all) is staged beside
# version 2, the MLP exercise 7 trained on the first 12. It beats production offline by a few percent, which
# live traffic can only show, or not, as the evidence grows.
CANDIDATE_MORE_BATCHES = 24
CANDIDATE_LAST_BATCHES = SEED_BATCHES + CANDIDATE_MORE_BATCHES
CANDIDATE_CARD = (
    "House-price MLP retrained by the workshop pipeline on the newest 36 batches of the new market (concept "
    "drift). Candidate to replace production after an online experiment; not for real valuations."
)
AB_SHARE = 0.2  # the candidate's share of callers in exercise 8's A/B experiment
AB_RATE = 25  # requests per second: at a 20 % share, 2 rounds of 30 s give ~300 labelled candidate rows
AB_SECONDS = 30
AB_ROUNDS = 2


def ab_round_start(round_: int) -> datetime:
    """The simulated clock of A/B round `round_` (1, 2, ...) in exercise 8's notebook."""
    if round_ < 1:
        raise ValueError("rounds count from 1")
    return parse_time(AB_START) + timedelta(hours=round_ - 1)


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
    Exercise(
        8,
        "Compare on live traffic: shadow, then A/B, then promote on the evidence",
        "06-ab-testing",
        "version 2 in production; version 3, retrained on 36 batches of the new market, in staging; no experiment",
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
    start = parse_time(SEED_START)
    keys = land_batches(
        s3_client(settings), settings.raw_data_bucket, scenario, SEED_BATCHES, ROWS_PER_BATCH, start=start
    )
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


def _retrain_and_challenge(settings: Settings, scenario: str, airflow: AirflowAPI, state: dict) -> None:
    """Exercise 7's steps 1 to 3: the new market's batches, a version trained on them, and its challenge."""
    from mlops_sandbox.retrain import challenge, last_alert

    s3 = s3_client(settings)
    drift = [parse_drift(CONCEPT_DRIFT)]
    start = parse_time(NEW_MARKET_START)
    land_batches(s3, settings.raw_data_bucket, scenario, SEED_BATCHES, ROWS_PER_BATCH, start=start, drifts=drift)
    version = loop.run_training(airflow, scenario, "mlp", SEED_BATCHES)
    since = parse_time(last_alert(settings, scenario)["window_start"])
    decision = challenge(settings, scenario, since, challenger=version, actor=ACTOR)
    if not decision["promoted"]:
        raise RuntimeError(f"the retrained version {version} did not win its challenge: {decision}")
    loop.wait_until_serving(settings, version)
    state["retrained_version"] = version


def _stage_candidate(settings: Settings, scenario: str, airflow: AirflowAPI, state: dict) -> None:
    """Exercise 8's start: 24 more batches of the new market, a version trained on all 36, staged."""
    s3 = s3_client(settings)
    drift = [parse_drift(CONCEPT_DRIFT)]
    start = parse_time(CANDIDATE_START)
    land_batches(
        s3, settings.raw_data_bucket, scenario, CANDIDATE_MORE_BATCHES, ROWS_PER_BATCH, start=start, drifts=drift
    )
    version = loop.run_training(airflow, scenario, "mlp", CANDIDATE_LAST_BATCHES)
    registry.set_model_card(version, CANDIDATE_CARD, ACTOR, settings=settings)
    registry.promote(version, STAGING, ACTOR, "workshop: the candidate of exercise 8's experiment", settings=settings)
    state["candidate_version"] = version


# What exercise N leaves behind that later exercises need (exercise 1 leaves nothing).
AFTER: dict[int, Callable[[Settings, str, AirflowAPI, dict], None]] = {
    2: _land_seed_data,
    3: _train_v1,
    4: _promote_v1,
    5: _normal_traffic,
    6: _drift_and_decay,
    7: _retrain_and_challenge,
}
# What exercise N's **Start from** asks for beyond what the exercises before it leave behind (done before its
# own steps, so also on the way to any later exercise).
SETUP: dict[int, Callable[[Settings, str, AirflowAPI, dict], None]] = {
    8: _stage_candidate,
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
    for step in range(1, number + 1):
        if step in SETUP:
            say(f"the start of exercise {step} ({exercise(step).starts_from}) ...")
            SETUP[step](settings, scenario, airflow, state)
        if step < number and step in AFTER:
            say(f"exercise {step} ({exercise(step).title}) ...")
            AFTER[step](settings, scenario, airflow, state)
    state["seconds"] = round((datetime.now(UTC) - started) / timedelta(seconds=1))
    say(f"ready for exercise {number}: {target.title} (starts from {target.starts_from})")
    return state


def experiment_comparisons(settings: Settings, scenario: str, candidate_version: str | int) -> list[dict]:
    """Every comparison of candidate `candidate_version` with production that the monitor wrote, oldest first
    (`s3://monitoring/<scenario>/experiments/v<candidate>/`); each covers the experiment since it was set."""
    s3 = s3_client(settings)
    keys = list_keys(s3, settings.monitoring_bucket, experiments_prefix(scenario, str(candidate_version)))
    return [get_json(s3, settings.monitoring_bucket, key) for key in keys if key.endswith(".json")]


def comparison_rows(comparisons: Iterable[dict]) -> list[dict]:
    """One flat row per comparison, for a table: when, design, labelled rows, the candidate-minus-production
    MAE difference with its interval, and the verdict. Missing figures are None."""
    rows = []
    for comparison in comparisons:
        figures = comparison.get("comparison") or {}
        variants = comparison.get("variants") or {}
        rows.append(
            {
                "until": comparison.get("until"),
                "mode": comparison.get("mode"),
                "labelled": figures.get("labelled"),
                "candidate_labelled": (variants.get("candidate") or {}).get("labelled"),
                "production_labelled": (variants.get("production") or {}).get("labelled"),
                "mae_difference": figures.get("difference"),
                "low": figures.get("low"),
                "high": figures.get("high"),
                "verdict": comparison.get("verdict"),
            }
        )
    return rows
