"""`loop.wait_until_serving`: done only once every worker of the prediction service has answered with the
version (a request reaches whichever worker accepts it)."""

from datetime import UTC, datetime

import pytest

from mlops_sandbox import loop
from mlops_sandbox.config import Settings

pytestmark = pytest.mark.unit


class Answers:
    """/health answers in a given order (worker pid, version), then the last one forever."""

    def __init__(self, answers, workers=2):
        self.answers, self.workers, self.calls = list(answers), workers, 0

    def get(self, url, timeout):
        worker, version = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        answer = {"worker": worker, "model_version": version, "workers": self.workers}
        return type("R", (), {"json": lambda _: answer})()


@pytest.fixture
def health(monkeypatch):
    def install(answers, workers=2):
        fake = Answers(answers, workers)
        monkeypatch.setattr(loop.requests, "get", fake.get)
        monkeypatch.setattr(loop.time, "sleep", lambda _: None)
        return fake

    return install


def test_waits_until_every_worker_has_answered_with_the_version(health):
    # worker 11 answers v2 six times before worker 12, still on v1, is heard; then 12 moves to v2
    fake = health([(11, "2")] * 6 + [(12, "1"), (11, "2"), (12, "2")])
    loop.wait_until_serving(Settings(), "2", reload=False)
    assert fake.calls == 9


def test_times_out_naming_the_workers_answers(health, monkeypatch):
    health([(11, "2"), (12, "1")])
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(loop.time, "monotonic", lambda: next(clock))
    with pytest.raises(TimeoutError, match="all 2 workers") as err:
        loop.wait_until_serving(Settings(), "2", timeout=50, reload=False)
    assert "12: '1'" in str(err.value)


def test_a_replaced_worker_is_forgotten(health):
    # worker 12 is replaced by 13 (a restart): its old answer must not block the wait forever
    fake = health([(11, "2"), (12, "1"), (13, "2"), (11, "2")])
    loop.wait_until_serving(Settings(), "2", reload=False)
    assert fake.calls == 4


def test_wait_until_captured_reads_past_a_corrupt_log_file(monkeypatch):
    from s3_stand_in import FakeS3

    from mlops_sandbox.contracts import log_key

    when = datetime(2026, 5, 1, 12, tzinfo=UTC)
    objects = {
        log_key("house_prices", "predictions", when, "bad"): b"{not json\n[1, 2]\n",
        log_key("house_prices", "predictions", when, "good"): b'{"request_id": "a", "row": 0}\n',
    }
    monkeypatch.setattr("mlops_sandbox.storage.s3_client", lambda settings=None: FakeS3(objects))
    settings = Settings(_env_file=None)
    assert loop.wait_until_captured(settings, "house_prices", {"a"}, timeout=0) == set()
    assert loop.wait_until_captured(settings, "house_prices", {"a", "b"}, timeout=0) == {"b"}
