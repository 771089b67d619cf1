"""The formats stages share: the layouts of objects already in the buckets must not move, and what one stage
writes, the other reads."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlops_sandbox import contracts

pytestmark = pytest.mark.unit

T = datetime(2026, 3, 1, 7, 5, 9, 123456, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))


def test_key_layouts_are_the_ones_in_the_buckets():
    assert contracts.raw_batch_key("house_prices", T) == "house_prices/date=2026-03-01/batch-20260301T070509Z.csv"
    assert contracts.run_prefix("house_prices", "manual__2026-03-01T07:05:09+00:00") == (
        "house_prices/runs/manual__2026-03-01T07-05-09-00-00"
    )
    assert contracts.run_quarantine_prefix("house_prices", "r1") == "house_prices/runs/r1/quarantine/"
    assert contracts.log_key("house_prices", contracts.ACTUALS, T, "abc") == (
        "house_prices/actuals/date=2026-03-01/hour=07/20260301T070509-abc.jsonl"
    )
    assert contracts.status_key("house_prices") == "house_prices/status.json"
    assert contracts.window_key("house_prices", T) == "house_prices/windows/20260301T070509Z.json"
    assert contracts.alert_key("house_prices", T) == "house_prices/alerts/20260301T070509Z.json"
    assert contracts.decision_key("house_prices", T, "3") == "house_prices/decisions/20260301T070509Z-v3.json"
    log = "house_prices/predictions/date=2026-03-01/hour=07/x.jsonl"
    assert contracts.quarantine_reason_key("house_prices", log) == f"house_prices/quarantine/{log}.reason.json"


def test_keys_are_in_utc_whatever_the_zone_of_the_time():
    local = T.astimezone(PARIS)  # 08:05 in Paris
    assert contracts.raw_batch_key("house_prices", local) == contracts.raw_batch_key("house_prices", T)
    assert contracts.log_key("house_prices", contracts.PREDICTIONS, local, "x") == contracts.log_key(
        "house_prices", contracts.PREDICTIONS, T, "x"
    )


def test_timestamps_round_trip():
    whole = T.replace(microsecond=0)
    assert contracts.parse_key_time(contracts.key_time(T)) == whole
    assert contracts.parse_log_time(contracts.log_time(T)) == whole
    assert contracts.parse_record_time(contracts.record_time(T.astimezone(PARIS))) == T
    assert contracts.raw_batch_time(contracts.raw_batch_key("house_prices", T)) == whole


def test_raw_batches_sort_by_time_and_other_objects_are_left_out():
    keys = [contracts.raw_batch_key("house_prices", T + timedelta(hours=h)) for h in (30, 1, 5)]
    assert contracts.raw_batch_keys([*keys, "house_prices/notes.txt"]) == [keys[1], keys[2], keys[0]]


def test_log_partitions_cover_the_hours_of_a_window():
    prefixes = contracts.log_hour_prefixes("house_prices", contracts.PREDICTIONS, T, T + timedelta(hours=1))
    assert prefixes == [
        "house_prices/predictions/date=2026-03-01/hour=07/",
        "house_prices/predictions/date=2026-03-01/hour=08/",
    ]
    with pytest.raises(ValueError, match="unknown log kind"):
        contracts.log_prefix("house_prices", "prediction")


def test_prediction_log_lines_keep_the_format_of_existing_logs():
    records = contracts.prediction_log_records(
        "req-1", "house-prices", "3", [{"area": 80}, {"area": 95}], [1, 2.5], 4.2, T
    )
    line = contracts.to_jsonl(records).splitlines()[1].decode()
    assert line == (
        '{"request_id":"req-1","row":1,"timestamp":"2026-03-01T07:05:09.123456+00:00","model_name":"house-prices",'
        '"model_version":"3","variant":"production","inputs":{"area":95},"prediction":2.5,"latency_ms":4.2}'
    )
    shadow = ("shadow", "production_version", "production_prediction")
    not_sent = (*shadow, "client_request_id")  # a caller that sent no X-Request-ID
    assert tuple(json.loads(line)) == tuple(f for f in contracts.PREDICTION_LOG_FIELDS if f not in not_sent)
    assert "latency_ms" not in contracts.PREDICTION_LOG_REQUIRED
    assert "variant" not in contracts.PREDICTION_LOG_REQUIRED  # logs from before experiments have none
    shadowed = contracts.prediction_log_records(
        "req-1", "house-prices", "4", [{"area": 80}], [1.5], 0.3, T, "candidate", ("3", [1.25])
    )
    assert tuple(shadowed[0]) == tuple(f for f in contracts.PREDICTION_LOG_FIELDS if f != "client_request_id")
    (named,) = contracts.prediction_log_records("req-3", "h", "3", [{"a": 1}], [1.0], 0.1, T, client_request_id="c-7")
    assert named["client_request_id"] == "c-7" and named["request_id"] == "req-3"
    assert shadowed[0]["shadow"] is True and shadowed[0]["production_prediction"] == 1.25
    with pytest.raises(ValueError):
        contracts.prediction_log_records("req-2", "house-prices", "3", [{"area": 80}], [1, 2], 1.0)


def test_actual_records():
    record = contracts.actual_record("req-1", 250_000.0, T)
    assert json.loads(contracts.to_jsonl([record])) == {
        "request_id": "req-1",
        "row": 0,
        "actual": 250_000.0,
        "observed_at": "2026-03-01T07:05:09.123456+00:00",
    }
    assert tuple(record) == contracts.ACTUAL_FIELDS
    assert contracts.actual_record("req-1", 1.0, T, row=3)["row"] == 3


def test_aliases_in_promotion_order():
    assert contracts.ALIASES == ("staging", "production") == (contracts.STAGING, contracts.PRODUCTION)


def test_prediction_log_lines_are_the_records_as_json_lines_byte_for_byte():
    import msgspec

    from mlops_sandbox.contracts import prediction_log_lines, prediction_log_records, to_jsonl

    Row = msgspec.defstruct("Row", [("area", float), ("furnished", str)])
    when = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    as_dicts = [{"area": 5500.0, "furnished": "yes"}, {"area": 1e-7, "furnished": 'quote " and \\u00e9'}]
    as_structs = [Row(**d) for d in as_dicts]
    predictions = [1.5, 2e20]
    expected = to_jsonl(prediction_log_records('id "1"', "house-prices", "3", as_dicts, predictions, 2.25, when))
    for inputs in (as_dicts, as_structs):
        assert prediction_log_lines('id "1"', "house-prices", "3", inputs, predictions, 2.25, when) == expected
    client = {"client_request_id": 'mine "2"'}
    expected = to_jsonl(prediction_log_records("s", "house-prices", "3", as_dicts, predictions, 1.0, when, **client))
    assert prediction_log_lines("s", "house-prices", "3", as_structs, predictions, 1.0, when, **client) == expected
    expected = to_jsonl(prediction_log_records("r", "house-prices", "4", as_dicts, predictions, 0.5, when, "candidate"))
    assert prediction_log_lines("r", "house-prices", "4", as_structs, predictions, 0.5, when, "candidate") == expected
    with pytest.raises(ValueError, match="2 inputs but 1 predictions"):
        prediction_log_lines("r", "m", "1", as_dicts, [1.0], 1.0, when)


def test_a_shadow_batchs_lines_are_each_parts_records_as_json_lines_byte_for_byte():
    """The shadow scorer's batch: parts of requests of one row and of several (a large request comes in parts,
    the second starting at its row 2), with production versions that differ, and request ids JSON escapes."""
    from mlops_sandbox.contracts import CANDIDATE_VARIANT, prediction_log_records, shadow_log_lines, to_jsonl

    when = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    a, b, c = {"area": 5500.0, "furnished": "yes"}, {"area": 1e-7, "furnished": 'quote " and \u00e9'}, {"area": 2.0}
    parts = [
        ('id "1"\n', "3", 0, [1.5], [a]),
        ("big", "3", 0, [2.0, 3.0], [a, b]),
        ("big", "3", 2, [4.0], [c]),
        ("other", "2", 0, [-0.5], [b]),
    ]
    candidate = [10.0, 2e20, -1.0, 0.25, 7.0]
    expected, start = b"", 0
    for request_id, version, first_row, answered, records in parts:
        mine = candidate[start : start + len(records)]
        start += len(records)
        shadow = prediction_log_records(
            request_id, "house-prices", "4", records, mine, 1.5, when, CANDIDATE_VARIANT, (version, answered)
        )
        expected += to_jsonl([{**line, "row": line["row"] + first_row} for line in shadow])
    assert shadow_log_lines(parts, "house-prices", "4", candidate, 1.5, when) == expected
    with pytest.raises(ValueError, match="5 inputs but 4 predictions"):
        shadow_log_lines(parts, "house-prices", "4", candidate[:4], 1.5, when)
    with pytest.raises(ValueError, match="5 shadow predictions but 4 answered"):
        shadow_log_lines([*parts[:3], ("other", "2", 0, [], [b])], "house-prices", "4", candidate, 1.5, when)
