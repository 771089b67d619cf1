import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from mlops_sandbox.contracts import log_key
from mlops_sandbox.serve.capture import PredictionCapture

pytestmark = pytest.mark.unit


class FlakyS3:
    """Stores uploads; refuses them while `down`."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.down = False

    def __call__(self, key: str, body: bytes) -> None:
        if self.down:
            raise ConnectionError("S3 is down")
        self.objects[key] = body

    def request_ids(self) -> list[str]:
        return [json.loads(line)["request_id"] for body in self.objects.values() for line in body.splitlines()]


def rows(start: int, n: int, when: datetime | None = None) -> list[dict]:
    when = when or datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    return [
        {"request_id": f"r{i}", "row": 0, "timestamp": when.isoformat(), "prediction": 1.0}
        for i in range(start, start + n)
    ]


def test_partitioned_by_scenario_date_and_hour_and_named_by_time():
    when = datetime(2026, 3, 1, 7, 5, 9, tzinfo=UTC)
    assert log_key("house_prices", "predictions", when, "x") == (
        "house_prices/predictions/date=2026-03-01/hour=07/20260301T070509-x.jsonl"
    )
    assert log_key("house_prices", "actuals", when, "y").startswith("house_prices/actuals/date=2026-03-01/hour=07/")


def test_batches_split_at_hour_boundaries(tmp_path):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices", batch_records=10)
    t = datetime(2026, 3, 1, 10, 59, tzinfo=UTC)
    capture.log(rows(0, 3, t) + rows(3, 2, t + timedelta(minutes=2)))
    capture.flush()
    assert sorted(k.split("/")[3] for k in s3.objects) == ["hour=10", "hour=11"]
    assert sorted(s3.request_ids()) == [f"r{i}" for i in range(5)]


def test_outage_spools_to_disk_and_nothing_is_lost_or_doubled(tmp_path):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices", batch_records=10, retry_seconds=0)
    capture.log(rows(0, 10))
    capture.flush()
    s3.down = True
    for i in range(10, 40, 10):
        capture.log(rows(i, 10))
        capture.flush()
    assert len(capture.spooled_files()) == 3 and len(s3.request_ids()) == 10
    assert capture.upload_spool() == 0  # still down: files stay
    s3.down = False
    assert capture.upload_spool() == 3
    assert sorted(s3.request_ids(), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(40)]
    assert capture.spooled_files() == []


def test_memory_is_bounded_by_spilling_to_disk(tmp_path):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices", batch_records=10, max_buffer=50)
    for i in range(0, 200, 5):
        capture.log(rows(i, 5))  # no writer thread running: the buffer would grow without the bound
        assert len(capture._buffer) <= 50
    capture.close()
    capture.upload_spool()
    assert sorted(s3.request_ids(), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(200)]


def test_close_flushes_and_a_restart_uploads_what_was_spooled(tmp_path):
    s3 = FlakyS3()
    s3.down = True
    first = PredictionCapture(s3, tmp_path, "house_prices", batch_records=100, flush_seconds=60)
    first.start()
    first.log(rows(0, 7))
    first.close()  # SIGTERM path: S3 is down, so the rows go to the spool
    assert s3.objects == {} and len(first.spooled_files()) == 1
    s3.down = False
    second = PredictionCapture(s3, tmp_path, "house_prices")
    assert second.upload_spool() == 1
    assert sorted(s3.request_ids()) == [f"r{i}" for i in range(7)]


def test_writer_thread_flushes_on_batch_size(tmp_path):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices", batch_records=5, flush_seconds=30)
    capture.start()
    capture.log(rows(0, 5))
    deadline = time.monotonic() + 5
    while not s3.objects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s3.objects, "the writer did not flush a full batch before its timer"
    capture.close()
    assert len(s3.request_ids()) == 5
