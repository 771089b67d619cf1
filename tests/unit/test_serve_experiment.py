"""Shadow and A/B experiments in the prediction service, with stand-in registries: production is version 3
(1,000 per square foot), the `staging` candidate version 4 (1.1 times that)."""

import time

import pytest
from fastapi.testclient import TestClient
from serving_stand_ins import Candidate, DeclaredExperiment, FixedRegistry

from mlops_sandbox.config import Settings
from mlops_sandbox.experiment import assign_variant
from mlops_sandbox.serve.app import create_app
from mlops_sandbox.serve.schema import EXAMPLES

pytestmark = pytest.mark.unit

RECORD = EXAMPLES["house_prices"]
SHADOW = {"serving_mode": "shadow"}
AB_HALF = {"serving_mode": "ab", "serving_ab_share": "0.5"}


class Captured(list):
    """Stands in for a PredictionCapture: keeps what the service logs."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def log(self, lines: bytes, count: int) -> None:
        import json

        rows = [json.loads(line) for line in lines.splitlines()]
        assert len(rows) == count
        self.extend(rows)


def _client(experiment: DeclaredExperiment, capture: Captured | None = None) -> TestClient:
    # "testserver": the Host that TestClient sends
    settings = Settings(
        _env_file=None, model_poll_seconds=3600, capture_enabled=False, predictor_allowed_hosts="testserver"
    )
    return TestClient(create_app(settings, FixedRegistry("house-prices", "http://unused"), capture, experiment))


def _experiment_seen(client: TestClient, mode: str) -> dict:
    """/health's experiment once the poller has read the declaration (it runs as the app starts)."""
    for _ in range(100):
        health = client.get("/health").json()
        if health["model_loaded"] and health["experiment"]["mode"] == mode:
            return health["experiment"]
        time.sleep(0.05)
    raise AssertionError(f"the experiment never became {mode}: {health}")


def test_no_experiment_declared_production_answers_everyone_and_rows_say_so():
    captured = Captured()
    with _client(DeclaredExperiment(), captured) as client:
        experiment = _experiment_seen(client, "off")
        answer = client.post("/predict", json=RECORD, headers={"X-Client-ID": "anyone"}).json()
    assert experiment == {
        "mode": "off",
        "share": None,
        "candidate_version": None,
        "production_version": "3",
        "running": False,
        "broken": None,
    }
    assert (answer["model_version"], answer["variant"]) == ("3", "production")
    assert [(r["variant"], r["model_version"]) for r in captured] == [("production", "3")]


def test_ab_answers_a_sticky_share_of_callers_with_the_candidate_by_client_id():
    captured = Captured()
    keys = [f"client-{i}" for i in range(40)]
    with _client(DeclaredExperiment(AB_HALF), captured) as client:
        experiment = _experiment_seen(client, "ab")
        answers = {}
        for key in keys * 2:  # every caller twice: the same variant both times
            answer = client.post("/predict", json=RECORD, headers={"X-Client-ID": key}).json()
            assert answers.setdefault(key, answer) == {**answer, "request_id": answers[key]["request_id"]}
        served = client.get("/model").json()["served"]
    assert experiment["share"] == 0.5 and experiment["candidate_version"] == "4" and experiment["running"]
    expected = {key: assign_variant(key, 0.5) for key in keys}
    assert {key: answer["variant"] for key, answer in answers.items()} == expected
    assert 0 < sum(v == "candidate" for v in expected.values()) < len(keys)  # both variants answered
    for answer in answers.values():
        production = answer["variant"] == "production"
        assert answer["model_version"] == ("3" if production else "4")
        assert answer["predictions"][0] == pytest.approx(RECORD["area"] * 1000 * (1 if production else 1.1))
    assert {(r["variant"], r["model_version"]) for r in captured} == {("production", "3"), ("candidate", "4")}
    assert not any(r.get("shadow") for r in captured)
    assert [(s["version"], s["role"]) for s in served] == [("3", "production"), ("4", "candidate (ab)")]


def test_without_a_client_id_a_caller_is_assigned_by_its_request_id():
    with _client(DeclaredExperiment(AB_HALF)) as client:
        _experiment_seen(client, "ab")
        for request_id in ("a", "b", "c", "d", "e", "f"):
            answer = client.post("/predict", json=RECORD, headers={"X-Request-ID": request_id}).json()
            assert answer["variant"] == assign_variant(request_id, 0.5)


def test_shadow_answers_with_production_and_captures_the_candidates_prediction_after_the_answer():
    captured = Captured()
    batch = [RECORD, {**RECORD, "area": 2000.0}]
    with _client(DeclaredExperiment(SHADOW), captured) as client:
        _experiment_seen(client, "shadow")
        answers = [client.post("/predict", json=batch, headers={"X-Request-ID": f"r{i}"}).json() for i in range(5)]
        for _ in range(100):  # the shadow lines follow the answers
            if sum(bool(r.get("shadow")) for r in captured) == 10:
                break
            time.sleep(0.05)
    assert {(a["model_version"], a["variant"]) for a in answers} == {("3", "production")}
    answered = [r for r in captured if not r.get("shadow")]
    shadows = {(r["request_id"], r["row"]): r for r in captured if r.get("shadow")}
    assert len(answered) == len(shadows) == 10
    for row in answered:
        shadow = shadows[row["request_id"], row["row"]]
        assert (row["variant"], row["model_version"]) == ("production", "3")
        assert (shadow["variant"], shadow["model_version"], shadow["production_version"]) == ("candidate", "4", "3")
        assert shadow["production_prediction"] == row["prediction"]
        assert shadow["prediction"] == pytest.approx(row["prediction"] * 1.1)
        assert shadow["inputs"] == row["inputs"]


@pytest.mark.parametrize("tags", [SHADOW, AB_HALF], ids=["shadow", "ab"])
def test_a_candidate_that_cannot_load_leaves_production_answering_and_the_experiment_marked_broken(tags):
    captured = Captured()
    with _client(DeclaredExperiment(tags, Candidate(factor=None)), captured) as client:
        experiment = _experiment_seen(client, tags["serving_mode"])
        answers = [client.post("/predict", json=RECORD, headers={"X-Client-ID": f"c{i}"}) for i in range(20)]
        metrics = client.get("/metrics").text
    assert "cannot be loaded" in experiment["broken"] and not experiment["running"]
    assert {(a.status_code, a.json()["variant"]) for a in answers} == {(200, "production")}
    assert {r["variant"] for r in captured} == {"production"}
    assert 'predictor_experiment_broken{model_name="house-prices"} 1.0' in metrics


def test_a_candidate_that_fails_on_a_request_never_costs_the_caller_an_answer():
    with _client(DeclaredExperiment(AB_HALF, Candidate(factor=-1))) as client:
        _experiment_seen(client, "ab")
        keys = [k for k in (f"c{i}" for i in range(50)) if assign_variant(k, 0.5) == "candidate"][:3]
        answers = [client.post("/predict", json=RECORD, headers={"X-Client-ID": k}) for k in keys]
        experiment = client.get("/health").json()["experiment"]
    assert [(a.status_code, a.json()["variant"], a.json()["model_version"]) for a in answers] == [
        (200, "production", "3")
    ] * 3
    assert "failed on a request" in experiment["broken"] and not experiment["running"]


def test_a_candidate_promoted_to_production_ends_the_experiment():
    promoted = FixedRegistry("house-prices", "http://unused")
    promoted.refresh()
    candidate = Candidate()
    candidate.refresh = lambda: setattr(candidate, "_current", promoted.current) or True  # staging is version 3
    with _client(DeclaredExperiment(SHADOW, candidate)) as client:
        experiment = _experiment_seen(client, "off")
    assert experiment["broken"] is None and not experiment["running"]


def test_shadow_work_is_bounded_when_the_candidate_falls_behind_and_the_excess_is_counted():
    import threading

    from mlops_sandbox.serve import metrics
    from mlops_sandbox.serve.experiment import ShadowJob, ShadowScorer

    release = threading.Event()
    slow = Candidate()
    slow.refresh()
    inner = slow.current.pyfunc
    original = inner.predict
    inner.predict = lambda frame: release.wait(10) and original(frame)  # a candidate that is busy until released
    experiment = DeclaredExperiment(SHADOW, slow)
    experiment.refresh(None)
    captured = Captured()
    scorer = ShadowScorer(experiment, captured, max_rows=3, window=0.0)

    def job(request_id: str, rows: int) -> ShadowJob:
        records = [RECORD] * rows
        columns = {name: [RECORD[name]] * rows for name in RECORD}
        return ShadowJob(request_id, records, columns, "3", [1.0] * rows)

    dropped = metrics.SHADOW_DROPPED._value.get()
    scorer.submit(job("before-start", 1))  # not started: nothing is queued
    scorer.start()
    scorer.submit(job("first", 1))
    for _ in range(100):  # the thread has taken it, and waits in the candidate
        if scorer._queued == 0:
            break
        time.sleep(0.01)
    scorer.submit(job("queued", 2))  # 2 of at most 3 rows waiting
    scorer.submit(job("over", 2))  # 4 > 3: not shadowed
    release.set()
    scorer.stop()
    assert sorted({r["request_id"] for r in captured}) == ["first", "queued"]
    assert all(r["shadow"] and r["model_version"] == "4" for r in captured) and len(captured) == 3
    assert metrics.SHADOW_DROPPED._value.get() - dropped == 3  # before-start (1) and over (2)


def test_a_failed_candidate_stays_aside_until_the_experiment_is_set_again():
    experiment = DeclaredExperiment({**AB_HALF, "serving_mode.set_at": "2026-11-26T10:00:00+00:00"})
    production = FixedRegistry("house-prices", "http://unused")
    production.refresh()
    experiment.refresh(production.current)
    candidate = experiment.candidate
    assert candidate is not None and candidate.version == "4"
    experiment.fail(candidate, RuntimeError("boom"))
    experiment.refresh(production.current)  # the next poll: the same declaration
    assert experiment.candidate is None and "boom" in experiment.broken
    experiment.tags["serving_mode.set_at"] = "2026-11-26T10:05:00+00:00"  # set again, the same mode
    experiment.refresh(production.current)
    assert experiment.candidate.version == "4" and experiment.broken is None
