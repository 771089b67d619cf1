"""Traffic and ground truth: simulated clients call the prediction service, and the real outcome of each
prediction is published later, by request id, to the prediction-logs bucket (as in real life, where a
house sells weeks after its price was estimated).

Each request sends one simulated record with `X-Request-ID` set to its record id (kept in the log as the
caller's id); its target becomes the *actual* of the request id the service answered with (row 0), published
`actuals_delay` seconds after the answer. With `clients`, each request
also comes from one of that many simulated callers (`X-Client-ID: client-<n>`, drawn with the seed), which an
A/B experiment assigns to a variant for good; the report counts the answers by the variant that gave them.
"""

from __future__ import annotations

import heapq
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests

from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import ACTUALS, ActualRecord, actual_record, log_key, parse_record_time, to_jsonl
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import Drift, generate_batch


@dataclass
class TrafficReport:
    sent: int = 0
    answered: int = 0
    refused: int = 0  # 4xx: invalid input (data-quality faults) or no model yet
    failed: int = 0  # 5xx or no answer
    actuals_published: int = 0
    variants: dict[str, int] = field(default_factory=dict)  # answers by variant: production, candidate
    request_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "request_ids"}


def publish_actuals(client, bucket: str, scenario: str, actuals: Sequence[ActualRecord]) -> str | None:
    """Write ground truth records (`contracts.actual_record`) as one JSON Lines object."""
    if not actuals:
        return None
    key = log_key(scenario, ACTUALS, parse_record_time(actuals[0]["observed_at"]), uuid.uuid4().hex[:12])
    client.put_object(Bucket=bucket, Key=key, Body=to_jsonl(list(actuals)), ContentType="application/x-ndjson")
    return key


def run_traffic(
    settings: Settings,
    s3,
    scenario: str,
    rate: float,
    duration: float,
    seed: int = 0,
    clock_start: datetime | None = None,
    drifts: Sequence[Drift] = (),
    actuals_delay: float = 30.0,
    session: requests.Session | None = None,
    clients: int = 0,
) -> TrafficReport:
    """Send `rate` requests per second for `duration` seconds; publish actuals `actuals_delay` s later.

    The simulated clock advances one minute per real second from `clock_start` (default: now), so drift
    scenarios with a start time switch on during the run. Bounded: it stops after `duration` (plus the
    last actuals' delay) whatever happens.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    if clients < 0:
        raise ValueError("clients must be 0 (no X-Client-ID) or more")
    callers = random.Random(seed)
    schema = get_schema(scenario)
    session = session or requests.Session()
    report = TrafficReport()
    clock_start = clock_start or datetime.now(UTC).replace(microsecond=0)
    pending: list[tuple[float, str, float]] = []  # (due, request_id, actual), a heap by due time
    started = time.monotonic()
    second = 0
    while time.monotonic() - started < duration:
        simulated = clock_start + timedelta(minutes=second)
        batch = generate_batch(scenario, seed, simulated, max(1, round(rate)), drifts)
        for _, row in batch.iterrows():
            record = {c: _plain(row[c]) for c in schema.feature_names}
            request_id = str(row[schema.id_column])
            report.sent += 1
            headers = {"X-Request-ID": request_id}
            if clients:
                headers["X-Client-ID"] = f"client-{callers.randrange(clients)}"
            try:
                resp = session.post(f"{settings.predictor_url}/predict", json=record, headers=headers, timeout=10)
            except requests.RequestException:
                report.failed += 1
                continue
            if resp.status_code == 200:
                report.answered += 1
                answer = resp.json()
                variant = answer.get("variant", "production")
                report.variants[variant] = report.variants.get(variant, 0) + 1
                # the outcome names the service's request id (the record id is only the caller's X-Request-ID)
                served_id = answer["request_id"]
                report.request_ids.append(served_id)
                heapq.heappush(pending, (time.monotonic() + actuals_delay, served_id, float(row[schema.target.name])))
            elif resp.status_code < 500:
                report.refused += 1
            else:
                report.failed += 1
        second += 1
        _publish_due(s3, settings, scenario, pending, report, time.monotonic())
        pause = started + second - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    while pending:  # the last outcomes arrive after their delay too
        time.sleep(max(0.0, pending[0][0] - time.monotonic()))
        _publish_due(s3, settings, scenario, pending, report, time.monotonic())
    return report


def _publish_due(s3, settings: Settings, scenario: str, pending: list, report: TrafficReport, now: float) -> None:
    due: list[ActualRecord] = []
    while pending and pending[0][0] <= now:
        _, request_id, actual = heapq.heappop(pending)
        due.append(actual_record(request_id, actual))
    if due:
        publish_actuals(s3, settings.prediction_logs_bucket, scenario, due)
        report.actuals_published += len(due)


def _plain(value):
    """numpy scalars to JSON-able Python values; NaN (a data-quality fault) to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
