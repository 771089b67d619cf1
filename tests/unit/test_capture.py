import errno
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from mlops_sandbox.contracts import log_key, to_jsonl
from mlops_sandbox.serve.capture import CLOSED, OPEN, CaptureUnavailable, PredictionCapture

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


def log(capture: PredictionCapture, records: list[dict]) -> None:
    capture.log(to_jsonl(records), len(records))


def ids(n: int, start: int = 0) -> list[str]:
    return [f"r{i}" for i in range(start, start + n)]


def by_number(request_ids: list[str]) -> list[str]:
    return sorted(request_ids, key=lambda r: int(r[1:]))


def test_partitioned_by_scenario_date_and_hour_and_named_by_time():
    when = datetime(2026, 3, 1, 7, 5, 9, tzinfo=UTC)
    assert log_key("house_prices", "predictions", when, "x") == (
        "house_prices/predictions/date=2026-03-01/hour=07/20260301T070509-x.jsonl"
    )
    assert log_key("house_prices", "actuals", when, "y").startswith("house_prices/actuals/date=2026-03-01/hour=07/")


def test_a_logged_line_is_on_disk_before_log_returns(tmp_path):
    capture = PredictionCapture(FlakyS3(), tmp_path, "house_prices")
    log(capture, rows(0, 3))
    (segment,) = tmp_path.glob(f"{OPEN}*.jsonl")
    assert [json.loads(line)["request_id"] for line in segment.read_bytes().splitlines()] == ids(3)


def test_segments_split_at_hour_boundaries_under_keys_that_a_second_upload_overwrites(tmp_path):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices")
    t = datetime(2026, 3, 1, 10, 59, tzinfo=UTC)
    log(capture, rows(0, 3, t) + rows(3, 2, t + timedelta(minutes=2)))
    capture.rotate(force=True)
    (closed,) = tmp_path.glob(f"{CLOSED}*")
    copy = closed.read_bytes()
    assert capture.ship() == 1
    assert sorted(k.split("/")[3] for k in s3.objects) == ["hour=10", "hour=11"]
    keys = set(s3.objects)
    closed.write_bytes(copy)  # shipped again, as after a crash between the upload and the delete
    capture.ship()
    assert set(s3.objects) == keys and sorted(s3.request_ids()) == ids(5)


def test_an_outage_keeps_segments_on_disk_and_nothing_is_lost_or_doubled(tmp_path):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices", retry_seconds=0)
    log(capture, rows(0, 10))
    capture.rotate(force=True)
    capture.ship()
    s3.down = True
    for i in range(10, 40, 10):
        log(capture, rows(i, 10))
        capture.rotate(force=True)
        assert capture.ship() == 0
    assert len(list(tmp_path.glob(f"{CLOSED}*"))) == 3 and len(s3.request_ids()) == 10
    assert capture.stats["spooled"] == 30 and capture.spool_bytes() > 0
    s3.down = False
    assert capture.ship() == 3
    assert by_number(s3.request_ids()) == ids(40)
    assert list(tmp_path.iterdir()) == [] and capture.spool_bytes() == 0


def test_the_shipper_thread_ships_a_full_segment_before_its_timer(tmp_path):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices", segment_records=5, segment_seconds=60)
    capture.start()
    log(capture, rows(0, 5))
    deadline = time.monotonic() + 5
    while not s3.objects and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s3.objects, "the shipper did not ship a full segment before its timer"
    capture.close()
    assert s3.request_ids() == ids(5)


def test_close_with_s3_down_leaves_the_segment_and_the_next_start_ships_it(tmp_path):
    s3 = FlakyS3()
    s3.down = True
    first = PredictionCapture(s3, tmp_path, "house_prices", segment_seconds=60)
    first.start()
    log(first, rows(0, 7))
    first.close()  # SIGTERM path: S3 is down, so the rows stay in the spool
    assert s3.objects == {} and len(list(tmp_path.glob(f"{CLOSED}*"))) == 1
    s3.down = False
    assert PredictionCapture(s3, tmp_path, "house_prices").ship() == 1
    assert sorted(s3.request_ids()) == ids(7)


WORKER = """
import os, signal, sys
from mlops_sandbox.contracts import to_jsonl
from mlops_sandbox.serve.capture import PredictionCapture

capture = PredictionCapture(lambda key, body: None, sys.argv[1], "house_prices", segment_records=10**6)
for i in range(int(sys.argv[2])):
    row = {"request_id": f"r{i}", "row": 0, "timestamp": "2026-03-01T10:30:00+00:00", "prediction": 1.0}
    capture.log(to_jsonl([row]), 1)
print("logged", flush=True)
sys.stdin.read()  # alive, holding its open segment, until it is killed
"""


def test_a_killed_workers_open_segment_is_shipped_by_a_live_worker_and_a_live_ones_is_not(tmp_path):
    s3 = FlakyS3()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path), "500"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout.readline().strip() == "logged"
        live = PredictionCapture(s3, tmp_path, "house_prices")
        assert live.ship() == 0 and s3.objects == {}, "took the open segment of a worker that is alive"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        assert live.ship() == 1
        assert by_number(s3.request_ids()) == ids(500)
    finally:
        worker.kill()


def test_a_torn_last_line_of_a_dead_worker_is_dropped_and_the_rest_shipped(tmp_path):
    s3 = FlakyS3()
    (tmp_path / f"{OPEN}00000000000000000001-1-dead-1.jsonl").write_bytes(to_jsonl(rows(0, 4)) + b'{"request_id":"r4"')
    capture = PredictionCapture(s3, tmp_path, "house_prices")
    assert capture.ship() == 1
    assert by_number(s3.request_ids()) == ids(4) and capture.stats["torn"] == 1 and capture.stats["lost"] == 0


def test_a_half_made_segment_left_by_a_dead_worker_is_removed(tmp_path):
    half = tmp_path / ".new-00000000000000000001-1-dead-1.jsonl"
    half.write_bytes(b"")
    os.utime(half, (time.time() - 3600, time.time() - 3600))
    PredictionCapture(FlakyS3(), tmp_path, "house_prices").ship()
    assert not half.exists()


def test_a_version_1_spool_file_is_still_shipped(tmp_path):
    s3 = FlakyS3()
    old_key = log_key("house_prices", "predictions", datetime(2026, 3, 1, 10, tzinfo=UTC), "1-abc")
    (tmp_path / old_key.replace("/", "__")).write_bytes(to_jsonl(rows(0, 3)))
    assert PredictionCapture(s3, tmp_path, "house_prices").ship() == 1
    assert s3.request_ids() == ids(3)


def test_a_full_spool_refuses_new_lines_and_keeps_the_ones_it_has(tmp_path):
    s3 = FlakyS3()
    s3.down = True
    capture = PredictionCapture(s3, tmp_path, "house_prices", max_spool_bytes=2000)
    written = 0
    with pytest.raises(CaptureUnavailable, match="spool is full"):
        for i in range(100):
            log(capture, rows(i, 1))
            written += 1
    assert 0 < written < 100
    s3.down = False
    capture.rotate(force=True)
    capture.ship()
    assert by_number(s3.request_ids()) == ids(written)  # every accepted line, and only those
    log(capture, rows(written, 1))  # room again once shipped


def test_a_disk_error_mid_write_is_refused_and_cut_off_the_segment(tmp_path, monkeypatch):
    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices")
    log(capture, rows(0, 2))
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(CaptureUnavailable, match="No space left"):
        log(capture, rows(2, 3))
    monkeypatch.setattr(os, "write", real_write)
    log(capture, rows(5, 1))
    capture.rotate(force=True)
    capture.ship()
    assert by_number(s3.request_ids()) == ["r0", "r1", "r5"] and capture.stats["torn"] == 0


def test_an_unwritable_spool_is_refused(tmp_path):
    capture = PredictionCapture(FlakyS3(), tmp_path / "gone", "house_prices")
    with pytest.raises(CaptureUnavailable, match="cannot be written"):
        log(capture, rows(0, 1))


def test_a_segment_across_hours_is_split_and_a_line_without_a_time_is_counted_lost(tmp_path):
    s3 = FlakyS3()
    t = datetime(2026, 3, 1, 10, 59, tzinfo=UTC)
    body = to_jsonl(rows(0, 2, t)) + b'{"request_id":"r2","row":0}\n' + to_jsonl(rows(3, 2, t + timedelta(minutes=2)))
    (tmp_path / f"{CLOSED}00000000000000000001-1-x-1.jsonl").write_bytes(body)
    capture = PredictionCapture(s3, tmp_path, "house_prices")
    assert capture.ship() == 1
    assert sorted(k.split("/")[3] for k in s3.objects) == ["hour=10", "hour=11"]
    assert by_number(s3.request_ids()) == ["r0", "r1", "r3", "r4"] and capture.stats["lost"] == 1


def test_a_new_segment_whose_lock_another_worker_holds_for_a_moment_still_takes_the_line(tmp_path, monkeypatch):
    """Another worker's shipper may lock a just-created hidden segment file for a moment (to see whether it is a
    stale leftover): the writer waits for the lock, it does not refuse the request."""
    import fcntl
    import threading

    real_open = os.open

    def open_and_let_another_worker_lock(path, flags, *mode):
        fd = real_open(path, flags, *mode)
        if os.path.basename(path).startswith(".new-"):
            other = real_open(path, os.O_RDONLY)
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            threading.Timer(0.2, os.close, [other]).start()  # and lets go a moment later
        return fd

    s3 = FlakyS3()
    capture = PredictionCapture(s3, tmp_path, "house_prices")
    monkeypatch.setattr(os, "open", open_and_let_another_worker_lock)
    log(capture, rows(0, 1))
    monkeypatch.setattr(os, "open", real_open)
    capture.rotate(force=True)
    capture.ship()
    assert s3.request_ids() == ["r0"]
