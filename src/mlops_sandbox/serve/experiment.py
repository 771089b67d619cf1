"""The shadow or A/B experiment a worker runs beside production, as the registry declares it.

The registered model's tags say the mode (`serving_mode`: off | shadow | ab) and, in `ab` mode, the candidate's
share of callers (`serving_ab_share`); the candidate is the version with the `staging` alias. Every worker reads
them at each registry poll, so every worker and every restart agrees (`mlops-sandbox model experiment` sets
them).

- shadow: production answers every request. After the answer, the candidate predicts the same rows
  (`ShadowScorer`: queued, in batches, in a thread of its own that works at most a tenth of the time) and its
  predictions are captured as shadow lines beside production's.
- ab: a caller whose key (`X-Client-ID`, else the request id) hashes below the share is answered by the
  candidate (`mlops_sandbox.experiment.assign_variant`: sticky and the same in every worker).

The candidate never costs a caller an answer: if it cannot be loaded, or fails on a request, production answers,
and the experiment is marked broken (in `/health`, `/model` and `predictor_experiment_broken`) until the
experiment or its candidate changes.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlops_sandbox.contracts import (
    CANDIDATE_VARIANT,
    MODE_AB,
    MODE_OFF,
    MODE_SHADOW,
    PRODUCTION_VARIANT,
    SERVING_MODE_TAG,
    STAGING,
    prediction_log_lines,
)
from mlops_sandbox.experiment import assign_variant, declared_mode
from mlops_sandbox.schema import Schema
from mlops_sandbox.serve import metrics
from mlops_sandbox.serve.capture import CaptureUnavailable, PredictionCapture
from mlops_sandbox.serve.model import ProductionModel, ServedModel

log = logging.getLogger(__name__)

SHADOW_QUEUE_ROWS = 20_000  # rows waiting for their shadow prediction; more are not shadowed (and counted)
SHADOW_BATCH_ROWS = 2_000  # the candidate predicts at most this many queued rows in one call
SHADOW_WINDOW_SECONDS = 0.05  # what queued in this time is predicted in one call
SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another waits (Python's default: 0.005)
SHADOW_MAX_BUSY = 0.1  # the share of the time the scoring thread may work: the rest is the answers' (and the GIL)


class Experiment:
    """What this worker runs beside production: the declared mode and share, the candidate, and whether it
    is broken. `refresh` (the registry poller's) reads the declaration; the routes read `mode`, `share`,
    `candidate` and `broken` without locks (each is replaced whole)."""

    def __init__(self, model_name: str, tracking_uri: str, schema: Schema | None = None):
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.holder = ProductionModel(model_name, tracking_uri, STAGING, schema, gauge=metrics.CANDIDATE_VERSION)
        self.mode = MODE_OFF
        self.share = 0.0
        self.broken: str | None = None
        self._declared: tuple[str, str] = (MODE_OFF, "")  # the mode and when it was set (its tag)
        self._failed: tuple | None = None  # the declaration and candidate version that failed on a request
        self._lock = threading.Lock()

    @property
    def candidate(self) -> ServedModel | None:
        """The candidate to run, or None: no experiment, broken, or the candidate is production's version."""
        if self.mode == MODE_OFF or self.broken is not None:
            return None
        return self.holder.current

    def declared_tags(self) -> dict[str, str]:
        """The registered model's tags, which declare the experiment."""
        from mlops_sandbox.tracking import tracking_client

        return dict(tracking_client(self.tracking_uri).get_registered_model(self.model_name).tags or {})

    def refresh(self, production: ServedModel | None) -> None:
        """Read the declared experiment from the registry, and load the candidate it names (if changed)."""
        with self._lock:
            try:
                tags = self.declared_tags()
            except Exception as err:  # noqa: BLE001 - registry away or model gone: production decides what is served
                log.info("experiment not read: %s", err)
                if production is None:
                    self._set(MODE_OFF, 0.0, None)
                return
            mode, share, problem = declared_mode(tags)
            self._declared = (mode, tags.get(f"{SERVING_MODE_TAG}.set_at", ""))
            if mode == MODE_OFF:
                self.holder.release()
                self._set(MODE_OFF, 0.0, problem)
                return
            self.holder.refresh()
            candidate = self.holder.current
            if candidate is None:
                broken = f"the candidate ('{STAGING}') cannot be served: {self.holder.last_error}"
            elif production is not None and candidate.version == production.version:
                self._set(MODE_OFF, 0.0, None)  # promoted: the experiment is over
                return
            elif self._failed == (*self._declared, candidate.version):
                broken = self.broken
            else:
                broken = None
                self._failed = None
            self._set(mode, share, broken)

    def _set(self, mode: str, share: float, broken: str | None) -> None:
        if (mode, share, broken) != (self.mode, self.share, self.broken):
            log.info("experiment: mode %s, share %s, broken: %s", mode, share, broken)
        self.mode, self.share, self.broken = mode, share, broken
        metrics.EXPERIMENT_BROKEN.labels(self.model_name).set(1 if broken else 0)

    def fail(self, candidate: ServedModel, err: BaseException) -> None:
        """The candidate failed on a request: stop using it until the experiment is set again (even to the same
        mode) or its candidate changes."""
        metrics.CANDIDATE_ERRORS.inc()
        log.warning("candidate version %s failed: %r; production answers alone", candidate.version, err)
        self._failed = (*self._declared, candidate.version)
        self._set(self.mode, self.share, f"candidate version {candidate.version} failed on a request: {err!r}"[:500])

    def variant_for(self, key: str) -> tuple[str, ServedModel | None]:
        """Who answers the caller with `key`: (`candidate`, the candidate) for its A/B share, else production."""
        candidate = self.candidate if self.mode == MODE_AB else None
        if candidate is not None and assign_variant(key, self.share) == CANDIDATE_VARIANT:
            return CANDIDATE_VARIANT, candidate
        return PRODUCTION_VARIANT, None

    def info(self, production: ServedModel | None) -> dict[str, Any]:
        """The experiment as `/health` and `/model` show it."""
        held = self.holder.current
        return {
            "mode": self.mode,
            "share": self.share if self.mode == MODE_AB else None,
            "candidate_version": held.version if held is not None and self.mode != MODE_OFF else None,
            "production_version": production.version if production is not None else None,
            "running": self.candidate is not None,
            "broken": self.broken,
        }


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """An answered request whose rows the candidate still has to predict."""

    request_id: str
    records: Sequence[Any]
    columns: dict[str, list]
    production_version: str
    answered: list[float]


class ShadowScorer:
    """Shadow predictions off the answer's path: `submit` queues an answered request (never blocks, never
    raises, and wakes nothing but an idle thread); a thread of its own sleeps `window` seconds after the first
    request queues, takes what queued meanwhile, has the candidate predict it in one call, and captures a
    shadow line per row. So a request costs a list append, and the thread takes the GIL once per window, not
    once per request.

    Best effort, and bounded: the thread works at most `max_busy` of the time (after a batch that took t
    seconds, it rests t * (1 / max_busy - 1)), and when the candidate falls behind by more than `max_rows` rows,
    the excess is not shadowed (counted in `predictor_shadow_dropped_rows`). So under light load every request
    is shadowed, and at saturation the answers keep at least 1 - max_busy of the CPU while memory stays flat.
    The thread keeps the process's CPU priority: a lowered one risks a priority inversion (requests waiting for
    the GIL behind a thread the kernel does not run). Shadow mode still costs single requests on one connection
    about 3.6x their p99 on 2 CPUs (scripts/bench_predictor.py --shadow), though the thread held the GIL in
    2.4 % of the samples py-spy took meanwhile: the cause is not found.
    """

    def __init__(
        self,
        experiment: Experiment,
        capture: PredictionCapture | None,
        max_rows: int = SHADOW_QUEUE_ROWS,
        window: float = SHADOW_WINDOW_SECONDS,
        max_busy: float = SHADOW_MAX_BUSY,
    ):
        self.experiment = experiment
        self.capture = capture
        self.max_rows = max_rows
        self.window = window
        self.rest = 1 / max_busy - 1
        self._jobs: collections.deque[ShadowJob] = collections.deque()
        self._queued = 0  # rows submitted and not yet taken
        self._lock = threading.Lock()
        self._waiting = threading.Event()  # set when the idle thread has work, or is to stop
        self._stopping = False
        self._stopped = threading.Event()  # cuts the thread's window and rest short when it is to stop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the scoring thread (in the worker process: after the fork). A request that arrives while the
        thread holds the GIL waits at most the switch interval for it: 0.5 ms here, not Python's 5 ms."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._stopping = False
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread once what is queued now is scored (at most `timeout` seconds)."""
        if self._thread is not None:
            with self._lock:
                self._stopping = True
            self._stopped.set()
            self._waiting.set()
            self._thread.join(timeout)
            self._thread = None

    def submit(self, job: ShadowJob) -> None:
        rows = len(job.records)
        with self._lock:
            if self._thread is None or self._stopping or self._queued + rows > self.max_rows:
                metrics.SHADOW_DROPPED.inc(rows)
                return
            self._queued += rows
            self._jobs.append(job)
            first = len(self._jobs) == 1
        if first:
            self._waiting.set()

    def _take(self) -> tuple[list[ShadowJob], bool]:
        """What queued, up to SHADOW_BATCH_ROWS rows (a job over that alone), and whether the thread is to
        stop. Nothing, after a wake-up that found the queue already taken or a stop."""
        jobs, rows = [], 0
        with self._lock:
            while self._jobs and (not jobs or rows + len(self._jobs[0].records) <= SHADOW_BATCH_ROWS):
                job = self._jobs.popleft()
                jobs.append(job)
                rows += len(job.records)
            self._queued -= rows
            if not self._jobs:
                self._waiting.clear()  # under the lock: a submit after this sees an empty queue and sets it
            return jobs, self._stopping and not self._jobs

    def _run(self) -> None:
        while True:
            self._waiting.wait()
            self._stopped.wait(self.window)  # what queues meanwhile is predicted in the same call
            jobs, stop = self._take()
            if jobs:
                started = time.monotonic()
                try:
                    self.score(jobs)
                except Exception:  # noqa: BLE001 - the thread must outlive any one batch
                    log.exception("shadow scoring failed")
                    metrics.SHADOW_DROPPED.inc(sum(len(job.records) for job in jobs))
                self._stopped.wait((time.monotonic() - started) * self.rest)
            if stop:
                return

    def score(self, jobs: list[ShadowJob]) -> None:
        """Have the candidate predict `jobs`' rows in one call, and capture one shadow line per row."""
        count = sum(len(job.records) for job in jobs)
        candidate = self.experiment.candidate if self.experiment.mode == MODE_SHADOW else None
        if candidate is None or self.capture is None:
            metrics.SHADOW_DROPPED.inc(count)
            return
        columns = {name: [v for job in jobs for v in job.columns[name]] for name in jobs[0].columns}
        started = time.perf_counter()
        try:
            predictions = candidate.predict(columns).tolist()
        except Exception as err:  # noqa: BLE001 - any failure of the candidate: production is unaffected
            self.experiment.fail(candidate, err)
            metrics.SHADOW_DROPPED.inc(count)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        lines, start = [], 0
        for job in jobs:
            end = start + len(job.records)
            lines.append(
                prediction_log_lines(
                    job.request_id,
                    candidate.name,
                    candidate.version,
                    job.records,
                    predictions[start:end],
                    latency_ms,
                    variant=CANDIDATE_VARIANT,
                    shadow_of=(job.production_version, job.answered),
                )
            )
            start = end
        try:
            self.capture.log(b"".join(lines), count)
        except CaptureUnavailable as err:
            log.warning("shadow predictions not captured: %s", err)
            metrics.SHADOW_DROPPED.inc(count)
            return
        metrics.SHADOW_ROWS.inc(count)
