"""The formats that stages hand each other: bucket key layouts, timestamp formats, registry alias names, and
the prediction-log and actuals records.

Every stage that writes or reads one of these imports it from here, never from the stage on the other side
(the monitor does not import the predictor to find its logs). Changing a layout here changes it everywhere;
objects already in the buckets keep these layouts, so change them only with a migration.

Buckets (`Settings.buckets`) and what this module lays out in them:

- raw-data: `<scenario>/date=<YYYY-MM-DD>/batch-<KEY_TIME>.csv`, one simulated batch each;
- pipeline: `<scenario>/runs/<run_key>/...`, a training run's hand-overs, bad rows under `quarantine/`;
- prediction-logs: `<scenario>/predictions/date=<YYYY-MM-DD>/hour=<HH>/<LOG_TIME>-<unique>.jsonl`
  (captured requests) and the same under `<scenario>/actuals/` (ground truth), JSON Lines;
- monitoring: `<scenario>/status.json` (the newest window), `windows/<KEY_TIME>.json`,
  `alerts/<KEY_TIME>.json` (windows that decayed), `decisions/<KEY_TIME>-v<version>.json` (challenges),
  `experiments/v<candidate>/<KEY_TIME>.json` (online comparisons of a candidate with production),
  `quarantine/<prediction-log key>` with a `.reason.json` beside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from typing import Any, NotRequired, TypedDict

import msgspec

# --- registry aliases --------------------------------------------------------------------------------------
STAGING = "staging"
PRODUCTION = "production"  # the version the prediction service serves and the monitor watches
ALIASES = (STAGING, PRODUCTION)  # in promotion order

# --- serving experiments: the candidate (`staging`) beside production, declared on the registered model ------
SERVING_MODE_TAG = "serving_mode"  # registered-model tag: one of SERVING_MODES
SERVING_AB_SHARE_TAG = "serving_ab_share"  # registered-model tag: the candidate's share of callers in `ab` mode
SERVING_HISTORY_TAG = "serving_mode.history"  # registered-model tag: JSON list of every change, newest last
MODE_OFF, MODE_SHADOW, MODE_AB = "off", "shadow", "ab"
SERVING_MODES = (MODE_OFF, MODE_SHADOW, MODE_AB)
MAX_AB_SHARE = 0.5
PRODUCTION_VARIANT = "production"  # a captured row answered (or, in shadow mode, paired) by production
CANDIDATE_VARIANT = "candidate"  # a captured row predicted by the `staging` version
VARIANTS = (PRODUCTION_VARIANT, CANDIDATE_VARIANT)

# --- timestamp formats (always UTC) ------------------------------------------------------------------------
KEY_TIME_FORMAT = "%Y%m%dT%H%M%SZ"  # in raw batch, window, alert and decision keys, and record ids: sorts by time
LOG_TIME_FORMAT = "%Y%m%dT%H%M%S"  # at the start of prediction-log and actuals file names
PARTITION_DATE_FORMAT = "%Y-%m-%d"  # the `date=` partition
PARTITION_HOUR_FORMAT = "%H"  # the `hour=` partition
# Record timestamps (`timestamp`, `observed_at`) are ISO 8601 with the UTC offset: `record_time()`.


def key_time(when: datetime) -> str:
    """`when` as it stands in keys: `20260101T003000Z`."""
    return when.astimezone(UTC).strftime(KEY_TIME_FORMAT)


def parse_key_time(text: str) -> datetime:
    """The UTC time of a `key_time()` stamp."""
    return datetime.strptime(text, KEY_TIME_FORMAT).replace(tzinfo=UTC)


def log_time(when: datetime) -> str:
    """`when` as it starts a prediction-log or actuals file name: `20260101T003000`."""
    return when.astimezone(UTC).strftime(LOG_TIME_FORMAT)


def parse_log_time(text: str) -> datetime:
    """The UTC time of a `log_time()` stamp."""
    return datetime.strptime(text, LOG_TIME_FORMAT).replace(tzinfo=UTC)


def record_time(when: datetime) -> str:
    """`when` as a record carries it: ISO 8601 in UTC (`2026-01-01T00:30:00.123456+00:00`)."""
    return when.astimezone(UTC).isoformat()


def parse_record_time(text: str) -> datetime:
    """The time of a `record_time()` string."""
    return datetime.fromisoformat(text)


def _partition(when: datetime) -> str:
    when = when.astimezone(UTC)
    return f"date={when:{PARTITION_DATE_FORMAT}}/hour={when:{PARTITION_HOUR_FORMAT}}/"


# --- raw-data bucket ---------------------------------------------------------------------------------------
def raw_batches_prefix(scenario: str) -> str:
    return f"{scenario}/"


def raw_batch_key(scenario: str, when: datetime) -> str:
    """Where a batch lives: partitioned by scenario and day, named by its time (a time maps to one key)."""
    return f"{scenario}/date={when.astimezone(UTC):{PARTITION_DATE_FORMAT}}/batch-{key_time(when)}.csv"


def raw_batch_name(key: str) -> str:
    """A batch key's file name, `batch-<KEY_TIME>.csv`: names sort by batch time."""
    return key.rsplit("/", 1)[-1]


def raw_batch_time(key: str) -> datetime:
    """The simulated time a batch key names."""
    return parse_key_time(raw_batch_name(key).removeprefix("batch-").removesuffix(".csv"))


def raw_batch_keys(keys: Iterable[str]) -> list[str]:
    """The batch keys among `keys` (listed under `raw_batches_prefix`), oldest first."""
    return sorted((k for k in keys if k.endswith(".csv")), key=raw_batch_name)


# --- pipeline bucket ---------------------------------------------------------------------------------------
def run_key(run_id: str) -> str:
    """A run id made safe for object keys and tags (`manual__2026-01-01T00:00:00+00:00` -> `manual__2026-...`)."""
    key = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-")
    if not key:
        raise ValueError(f"run id {run_id!r} has nothing usable in it")
    return key


def run_prefix(scenario: str, run_id: str) -> str:
    """A training run's folder (no trailing slash): its steps hand over through objects under it."""
    return f"{scenario}/runs/{run_key(run_id)}"


def run_quarantine_prefix(scenario: str, run_id: str) -> str:
    """Where a run's validation puts the rows it refused (`report.json`, `violations.csv`)."""
    return f"{run_prefix(scenario, run_id)}/quarantine/"


# --- prediction-logs bucket --------------------------------------------------------------------------------
PREDICTIONS = "predictions"  # captured requests
ACTUALS = "actuals"  # ground truth, published later
LOG_KINDS = (PREDICTIONS, ACTUALS)


def log_prefix(scenario: str, kind: str = PREDICTIONS) -> str:
    """`<scenario>/predictions/` (captured requests) or `<scenario>/actuals/` (ground truth)."""
    if kind not in LOG_KINDS:
        raise ValueError(f"unknown log kind {kind!r}; known: {LOG_KINDS}")
    return f"{scenario}/{kind}/"


def log_key(scenario: str, kind: str, when: datetime, unique: str) -> str:
    """A JSON Lines file of `kind` whose first record is at `when`; `unique` keeps writers apart."""
    return f"{log_prefix(scenario, kind)}{_partition(when)}{log_time(when)}-{unique}.jsonl"


def log_hour_prefixes(scenario: str, kind: str, start: datetime, end: datetime) -> list[str]:
    """The date/hour partitions that can hold records of [start, end)."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    prefixes = []
    while hour < end:
        prefixes.append(f"{log_prefix(scenario, kind)}{_partition(hour)}")
        hour += timedelta(hours=1)
    return prefixes


_jsonl = msgspec.json.Encoder(enc_hook=str)


def to_jsonl(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Records as the bucket keeps them: JSON Lines, compact, UTF-8, one record a line, each ending in a newline.
    A value JSON has no type for is written as its `str()`."""
    return _jsonl.encode_lines(rows)


class PredictionLogRecord(TypedDict):
    """One captured prediction: one line of a prediction log (one row of a request's batch).

    `variant` says which model predicted it: `production`, or `candidate` (the `staging` version) when an A/B
    experiment answered the caller with it. In shadow mode the candidate's prediction of an answered row is a
    line of its own (`shadow: true`), written after the answer, that also carries the production version and
    prediction it pairs with. Logs from before experiments have no `variant`: read them as `production`.
    """

    request_id: str  # made by the service, unique per request; actuals refer to it (with `row`)
    row: int  # the record's place in the request's batch
    timestamp: str  # record_time() of the answer
    model_name: str
    model_version: str  # of the model that made `prediction`
    variant: NotRequired[str]  # one of VARIANTS
    client_request_id: NotRequired[str]  # the caller's X-Request-ID, as sent (callers may repeat one)
    inputs: dict[str, Any]  # the record as validated, by feature name
    prediction: float
    latency_ms: float  # of the whole request; readers do not need it
    shadow: NotRequired[bool]  # a candidate's prediction that was not the answer
    production_version: NotRequired[str]  # shadow lines: the version that answered
    production_prediction: NotRequired[float]  # shadow lines: its answer for this row


PREDICTION_LOG_FIELDS: tuple[str, ...] = tuple(PredictionLogRecord.__annotations__)
PREDICTION_LOG_OPTIONAL: tuple[str, ...] = (
    "variant",
    "client_request_id",
    "latency_ms",
    "shadow",
    "production_version",
    "production_prediction",
)
PREDICTION_LOG_REQUIRED: tuple[str, ...] = tuple(f for f in PREDICTION_LOG_FIELDS if f not in PREDICTION_LOG_OPTIONAL)


def prediction_log_record(
    request_id: str,
    row: int,
    timestamp: datetime,
    model_name: str,
    model_version: str,
    inputs: dict[str, Any],
    prediction: float,
    latency_ms: float,
) -> PredictionLogRecord:
    """The record the prediction service captures for one predicted row (row `row` of its request)."""
    (record,) = prediction_log_records(
        request_id, model_name, model_version, [inputs], [prediction], latency_ms, timestamp
    )
    return {**record, "row": row}


def prediction_log_records(
    request_id: str,
    model_name: str,
    model_version: str,
    inputs: Sequence[dict[str, Any]],
    predictions: Iterable[float],
    latency_ms: float,
    timestamp: datetime | None = None,
    variant: str = PRODUCTION_VARIANT,
    shadow_of: tuple[str, Sequence[float]] | None = None,
    client_request_id: str | None = None,
) -> list[PredictionLogRecord]:
    """The records of one answered request: one per row, all stamped `timestamp` (default: now).

    `variant` names the model that predicted them. `shadow_of` (the production version and its predictions)
    makes them shadow lines: a candidate's predictions of rows that production answered. `client_request_id`
    (the caller's X-Request-ID) is kept on each line when the caller sent one.
    """
    stamp = record_time(timestamp or datetime.now(UTC))
    client = {} if client_request_id is None else {"client_request_id": client_request_id}
    records: list[PredictionLogRecord] = [
        {
            "request_id": request_id,
            "row": i,
            "timestamp": stamp,
            "model_name": model_name,
            "model_version": model_version,
            "variant": variant,
            **client,  # type: ignore[typeddict-item]
            "inputs": record,
            "prediction": float(prediction),
            "latency_ms": latency_ms,
        }
        for i, (record, prediction) in enumerate(zip(inputs, predictions, strict=True))
    ]
    if shadow_of is not None:
        version, answered = shadow_of
        for record, production in zip(records, answered, strict=True):
            record.update(shadow=True, production_version=version, production_prediction=float(production))
    return records


def prediction_log_lines(
    request_id: str,
    model_name: str,
    model_version: str,
    inputs: Sequence[Any],
    predictions: Sequence[float],
    latency_ms: float,
    timestamp: datetime | None = None,
    variant: str = PRODUCTION_VARIANT,
    client_request_id: str | None = None,
) -> bytes:
    """`to_jsonl(prediction_log_records(...))` of an answered request, byte for byte, built without a dict per
    row: the fields every row shares are encoded once, the inputs (dicts or msgspec structs) and predictions in
    one call each, and the lines joined in C. The prediction service's hot path for a batch. (A candidate's
    shadow lines are `shadow_log_lines`'.)"""
    head = b'{"request_id":' + _jsonl.encode(request_id) + b',"row":'
    rows = _jsonl.encode(list(range(len(inputs))))[1:-1].split(b",")
    shared = _shared_fields(model_name, model_version, variant, client_request_id, timestamp)
    tail = b',"latency_ms":' + _jsonl.encode(float(latency_ms)) + b"}\n"
    return _lines(repeat(head), rows, shared, inputs, predictions, repeat(tail), None)


def shadow_log_lines(
    parts: Sequence[tuple[str, str, int, Sequence[float], Sequence[Any]]],
    model_name: str,
    model_version: str,
    predictions: Sequence[float],
    latency_ms: float,
    timestamp: datetime | None = None,
) -> bytes:
    """The candidate's shadow lines for a batch of parts of answered requests, each (request id, production's
    version, its first row's place in the request, production's predictions, its inputs), `predictions` being
    the candidate's for all their rows in order: byte for byte, each part's `to_jsonl(prediction_log_records(...,
    variant=CANDIDATE_VARIANT, shadow_of=(production's version, its predictions)))` with its rows numbered from
    its first row's place, joined. What every row shares is encoded once for the batch, not once a part: the
    shadow scorer's batches are mostly single-row requests."""
    sizes = [len(part[4]) for part in parts]
    ids = _jsonl.encode_lines([part[0] for part in parts]).split(b"\n")[:-1]  # JSON escapes a newline
    heads = [b'{"request_id":' + request_id + b',"row":' for request_id in ids]
    first = [range(part[2], part[2] + n) for part, n in zip(parts, sizes, strict=True)]
    rows = _jsonl.encode(list(chain.from_iterable(first)))[1:-1].split(b",")
    latency = b',"latency_ms":' + _jsonl.encode(float(latency_ms)) + b',"shadow":true,"production_version":'
    versions = {part[1] for part in parts}
    leads = {version: latency + _jsonl.encode(version) + b',"production_prediction":' for version in versions}
    paired = _numbers(list(chain.from_iterable(part[3] for part in parts)))
    shared = _shared_fields(model_name, model_version, CANDIDATE_VARIANT, None, timestamp)
    tails = map(b"%s%s}\n".__mod__, zip(_each_row((leads[part[1]] for part in parts), sizes), paired, strict=True))
    inputs = list(chain.from_iterable(part[4] for part in parts))
    return _lines(_each_row(heads, sizes), rows, shared, inputs, predictions, tails, paired)


def _shared_fields(
    model_name: str, model_version: str, variant: str, client_request_id: str | None, timestamp: datetime | None
) -> bytes:
    """What a line has between its row number and its inputs: the same for every row of a call."""
    return (
        b',"timestamp":'
        + _jsonl.encode(record_time(timestamp or datetime.now(UTC)))
        + b',"model_name":'
        + _jsonl.encode(model_name)
        + b',"model_version":'
        + _jsonl.encode(model_version)
        + b',"variant":'
        + _jsonl.encode(variant)
        + (b"" if client_request_id is None else b',"client_request_id":' + _jsonl.encode(client_request_id))
        + b',"inputs":'
    )


def _each_row(values: Iterable[bytes], sizes: Sequence[int]) -> Iterable[bytes]:
    """Each part's value once for each of its rows."""
    return chain.from_iterable(map(repeat, values, sizes))


def _lines(
    heads: Iterable[bytes],
    rows: list[bytes],
    shared: bytes,
    inputs: Sequence[Any],
    predictions: Sequence[float],
    tails: Iterable[bytes],
    paired: list[bytes] | None,
) -> bytes:
    """The lines, joined in C: each row's head and number, the shared fields, its inputs, its prediction and
    its tail (`paired`: production's predictions in a shadow line, as many as the rows)."""
    values = _jsonl.encode_lines(inputs).split(b"\n")[:-1]
    outputs = _numbers(predictions)
    if not len(rows) == len(values) == len(outputs):
        raise ValueError(f"{len(values)} inputs but {len(outputs)} predictions")
    if paired is not None and len(paired) != len(outputs):
        raise ValueError(f"{len(outputs)} shadow predictions but {len(paired)} answered ones")
    parts = zip(heads, rows, repeat(shared), values, repeat(b',"prediction":'), outputs, tails)
    return b"".join(map(b"".join, parts))


def _numbers(values: Sequence[float]) -> list[bytes]:
    """Each value as JSON encodes a float, one bytes string each."""
    return _jsonl.encode([float(v) for v in values])[1:-1].split(b",")


class ActualRecord(TypedDict):
    """The real outcome of one predicted row, known later: one line of an actuals file.

    It names the row as the prediction log does: the service's `request_id` (the answer's `request_id`, not the
    caller's X-Request-ID, which callers may repeat) and the row's place in that request's batch. A line
    without `row` labels row 0, the only row of a one-record request.
    """

    request_id: str
    row: NotRequired[int]
    actual: float
    observed_at: str  # record_time() of when it became known


ACTUAL_FIELDS: tuple[str, ...] = tuple(ActualRecord.__annotations__)
# what an actual and a prediction-log line are joined on: the service's request id and the row's place
ACTUAL_KEY: list[str] = ["request_id", "row"]


def actual_record(request_id: str, actual: float, observed_at: datetime | None = None, row: int = 0) -> ActualRecord:
    """The ground truth of row `row` of request `request_id`, observed at `observed_at` (default: now)."""
    return {
        "request_id": request_id,
        "row": row,
        "actual": actual,
        "observed_at": record_time(observed_at or datetime.now(UTC)),
    }


# --- monitoring bucket -------------------------------------------------------------------------------------
def status_key(scenario: str) -> str:
    """The status of the newest monitored window."""
    return f"{scenario}/status.json"


def window_key(scenario: str, start: datetime) -> str:
    """The status of the window that starts at `start` (a rerun overwrites it)."""
    return f"{scenario}/windows/{key_time(start)}.json"


def checkpoint_key(scenario: str) -> str:
    """Where scheduled monitoring has got to: the end of the last window it checked (`catch_up`)."""
    return f"{scenario}/checkpoint.json"


def alerts_prefix(scenario: str) -> str:
    return f"{scenario}/alerts/"


def alert_key(scenario: str, start: datetime) -> str:
    """The status of a window that decayed, named by its start, so the newest alert sorts last."""
    return f"{alerts_prefix(scenario)}{key_time(start)}.json"


def decisions_prefix(scenario: str) -> str:
    return f"{scenario}/decisions/"


def decision_key(scenario: str, when: datetime, challenger: str) -> str:
    """A challenger-against-champion decision, made at `when`."""
    return f"{decisions_prefix(scenario)}{key_time(when)}-v{challenger}.json"


def experiments_prefix(scenario: str, candidate_version: str | None = None) -> str:
    """Online comparisons of the scenario's candidates with production; of one candidate version if given."""
    prefix = f"{scenario}/experiments/"
    return prefix if candidate_version is None else f"{prefix}v{candidate_version}/"


def experiment_key(scenario: str, candidate_version: str, when: datetime) -> str:
    """The comparison of candidate `candidate_version` with production as computed at `when` (newest sorts last)."""
    return f"{experiments_prefix(scenario, candidate_version)}{key_time(when)}.json"


def quarantined_log_key(scenario: str, key: str) -> str:
    """Where the monitor keeps a copy of the prediction log at `key` that it could not read."""
    return f"{scenario}/quarantine/{key}"


def quarantine_reason_key(scenario: str, key: str) -> str:
    """Why the prediction log at `key` was quarantined (`{"key", "reason"}`)."""
    return f"{quarantined_log_key(scenario, key)}.reason.json"
