import pytest
import requests

from mlops_sandbox import airflow_api
from mlops_sandbox.airflow_api import AirflowAPI, AirflowUnavailable
from mlops_sandbox.config import Settings

pytestmark = pytest.mark.unit


class Answer:
    def __init__(self, status: int, body: dict | None = None):
        self.status_code, self.body, self.text = status, body or {}, str(body)

    def json(self):
        return self.body


def _api(monkeypatch, answers: list) -> AirflowAPI:
    def request(method, url, **kwargs):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(airflow_api.requests, "request", request)
    api = AirflowAPI(Settings())
    api._token = "token"
    return api


def test_waiting_for_a_run_outlasts_airflow_being_briefly_unavailable(monkeypatch):
    answers = [
        requests.ConnectionError("refused"),
        Answer(503, {"detail": "database restarting"}),
        Answer(200, {"state": "running"}),
        Answer(500, {"detail": "server closed the connection unexpectedly"}),
        Answer(200, {"state": "success"}),
    ]
    api = _api(monkeypatch, answers)
    assert api.wait("training_pipeline", "manual__1", timeout=30, poll=0) == "success"
    assert answers == []


def test_a_client_error_is_not_waited_out_and_unavailability_has_a_bound(monkeypatch):
    with pytest.raises(RuntimeError, match="HTTP 404") as refused:
        _api(monkeypatch, [Answer(404, {"detail": "no such run"})]).wait("training_pipeline", "x", timeout=30, poll=0)
    assert not isinstance(refused.value, AirflowUnavailable)
    with pytest.raises(AirflowUnavailable, match="HTTP 503"):
        _api(monkeypatch, [Answer(503)] * 3).wait("training_pipeline", "x", timeout=0, poll=0)


def test_progress_that_fails_while_airflow_is_unavailable_does_not_hide_the_runs_state(monkeypatch):
    answers = [Answer(503), Answer(200, {"state": "success"})]
    api = _api(monkeypatch, answers)
    shown = []

    def progress():
        shown.append(api.call("GET", "/dags/training_pipeline/dagRuns/x/taskInstances"))

    assert api.wait("training_pipeline", "x", timeout=30, poll=0, progress=progress) == "success"
    assert shown == [] and answers == []


def test_a_login_while_airflow_is_unavailable_is_waited_out_too(monkeypatch):
    logins = [requests.ConnectionError("refused"), Answer(503), Answer(200, {"access_token": "t"})]

    api = _api(monkeypatch, [Answer(200, {"state": "failed"})])
    api._token = None
    calls = airflow_api.requests.request

    def request(method, url, **kwargs):
        if not url.endswith("/auth/token"):
            return calls(method, url, **kwargs)
        answer = logins.pop(0)
        if isinstance(answer, Exception):
            raise answer
        answer.raise_for_status = lambda: None
        return answer

    monkeypatch.setattr(airflow_api.requests, "request", request)
    assert api.wait("training_pipeline", "x", timeout=30, poll=0) == "failed"
    assert logins == [] and api.token() == "t"
