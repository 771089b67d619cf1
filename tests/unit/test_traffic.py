"""`traffic.run_traffic` as the workshop and the tests drive it, against a stand-in service and bucket."""

import json

import pytest

from mlops_sandbox.config import Settings
from mlops_sandbox.experiment import assign_variant
from mlops_sandbox.traffic import run_traffic

pytestmark = pytest.mark.unit


class Service:
    """Answers /predict as an A/B experiment with share 0.5 would, by X-Client-ID (else X-Request-ID)."""

    def __init__(self):
        self.headers = []

    def post(self, url, json, headers, timeout):
        self.headers.append(headers)
        variant = assign_variant(headers.get("X-Client-ID", headers["X-Request-ID"]), 0.5)
        # the service's own key, not the caller's X-Request-ID
        answer = {"request_id": f"served-{len(self.headers)}", "predictions": [1.0], "variant": variant}
        return type("R", (), {"status_code": 200, "json": lambda _: answer})()


class Bucket(dict):
    def put_object(self, Bucket, Key, Body, ContentType):  # noqa: N803 - boto3's names
        self[Key] = Body


def _run(clients: int, seed: int = 3) -> tuple:
    service, bucket = Service(), Bucket()
    report = run_traffic(
        Settings(_env_file=None), bucket, "house_prices", rate=20, duration=0.5, seed=seed,
        actuals_delay=0, session=service, clients=clients,
    )  # fmt: skip
    return report, service.headers, bucket


def test_callers_are_drawn_from_the_given_number_with_the_seed_and_answers_counted_by_variant():
    report, headers, bucket = _run(clients=4)
    callers = [h["X-Client-ID"] for h in headers]
    assert len(callers) == report.sent == report.answered == 20
    assert set(callers) <= {f"client-{n}" for n in range(4)} and len(set(callers)) > 1
    assert callers == [h["X-Client-ID"] for h in _run(clients=4)[1]]  # the same seed, the same callers
    expected = [assign_variant(c, 0.5) for c in callers]
    assert report.variants == {v: expected.count(v) for v in set(expected)}
    actuals = [json.loads(line) for body in bucket.values() for line in body.splitlines()]
    assert sorted(a["request_id"] for a in actuals) == sorted(report.request_ids)
    # each outcome names the row the service answered, by the service's key
    assert sorted(report.request_ids) == sorted(f"served-{n}" for n in range(1, 21))
    assert {a["row"] for a in actuals} == {0}


def test_without_clients_no_caller_is_named():
    report, headers, _ = _run(clients=0)
    assert report.answered == 20 and not any("X-Client-ID" in h for h in headers)
    with pytest.raises(ValueError, match="clients"):
        run_traffic(Settings(_env_file=None), Bucket(), "house_prices", 1, 1, clients=-1)
