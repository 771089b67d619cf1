"""The shadow or A/B experiment a worker runs beside production, as the registry declares it.

The registered model's tags say the mode (`serving_mode`: off | shadow | ab) and, in `ab` mode, the candidate's
share of callers (`serving_ab_share`); the candidate is the version with the `staging` alias. Every worker reads
them at each registry poll, so every worker and every restart agrees (`mlops-sandbox model experiment` sets
them).

- shadow: production answers every request. After the answer, the candidate predicts the same rows in a
  process of its own at the lowest CPU priority (`ShadowScorer`), and its predictions are captured as shadow
  lines beside production's.
- ab: a caller whose key (`X-Client-ID`, else the request id) hashes below the share is answered by the
  candidate (`mlops_sandbox.experiment.assign_variant`: sticky and the same in every worker).

The candidate never costs a caller an answer: if it cannot be loaded, or fails on a request, production answers,
and the experiment is marked broken (in `/health`, `/model` and `predictor_experiment_broken`) until the
experiment or its candidate changes.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import msgspec

from mlops_sandbox.contracts import (
    CANDIDATE_VARIANT,
    MODE_AB,
    MODE_OFF,
    MODE_SHADOW,
    PRODUCTION_VARIANT,
    SERVING_MODE_TAG,
    STAGING,
    shadow_log_lines,
)
from mlops_sandbox.experiment import assign_variant, declared_mode
from mlops_sandbox.schema import Schema
from mlops_sandbox.serve import metrics
from mlops_sandbox.serve.capture import CaptureUnavailable, PredictionCapture
from mlops_sandbox.serve.model import ProductionModel, ServedModel

log = logging.getLogger(__name__)

SHADOW_MESSAGE_ROWS = 128  # a request's rows go to the scorer process in messages of at most this many
SHADOW_MESSAGE_BYTES = 256 * 1024  # the largest message the scorer process reads (a larger one is not shadowed)
SHADOW_QUEUE_BYTES = 1024 * 1024  # the jobs socket's send buffer (the kernel may cap it): a full one drops rows
SHADOW_QUEUE_ROWS = 20_000  # rows the scorer process keeps waiting for spare CPU; more are not shadowed
SHADOW_SPARE_CPU = 0.1  # the share of the machine's CPU that must be idle (its own work counted as used) to score
SHADOW_SPARE_SECONDS = 1.0  # over how long it must have been idle (not a moment: a saturated machine has those)
SHADOW_BATCH_ROWS = 2_000  # the scorer predicts at most this many queued rows before it looks for more
SHADOW_WINDOW_SECONDS = 0.05  # what queued in this time is predicted together
SHADOW_SLICE_SECONDS = 0.0005  # the scorer process holds a CPU at most about this long, then sleeps (`_Slices`)
SHADOW_GAP_SECONDS = 0.0001  # how long it sleeps then
SHADOW_CALL_ROWS = 16  # but it predicts at least this many rows in a call (if they wait): a call has its own cost
STOP_SECONDS = 5.0  # how long a stopping scorer process may take to score what it has, before it is killed


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
    production_version: str
    answered: list[float]


_HEAD = struct.Struct("!cQ")  # a result from the scorer process: its kind and how many rows it is about
_CAPTURED, _UNCAPTURED, _FAILED = b"C", b"U", b"F"  # rows captured; not captured, or the candidate failed (why)


class _Scorer:
    """A scorer process for one candidate, as its worker sees it: the pid, the two channels, and the thread
    that reads its results."""

    def __init__(self, pid: int, candidate: ServedModel, jobs: socket.socket, results: Connection):
        self.pid, self.candidate, self.jobs, self.results = pid, candidate, jobs, results
        self.reader: threading.Thread | None = None
        self.stopping = False
        self.sent = 0  # rows sent to it (written by the worker's event loop thread only)
        self.full_until = 0.0  # its socket was full: until then, requests are not even encoded for it
        self.done = 0  # rows it reported on (written by the results thread only)

    def alive(self) -> bool:
        return self.reader is not None and self.reader.is_alive()


class _Remote(Exception):
    """A failure reported by the scorer process: its repr as that process wrote it."""

    def __repr__(self) -> str:
        return str(self.args[0])


class ShadowScorer:
    """Shadow predictions off the answer's CPU: a scorer process forked from the worker for each candidate (it
    shares the loaded model's pages) at the lowest CPU priority there is (SCHED_IDLE, else nice 19), which
    scores only while the machine has CPU to spare (`SpareCpu`).

    - `submit` (once the answer is made and captured, before it is sent) encodes the request's records,
      production's version and predictions as msgpack (in C), and sends them to the process on a socket, one
      message per SHADOW_MESSAGE_ROWS rows, without blocking: when the process is behind and the socket is
      full, the rest is not shadowed (counted in `predictor_shadow_dropped_rows`), and nothing is encoded for
      it for a `window`. So under light load every request is shadowed; at saturation the answers keep the
      CPU and the rows wait (or, past SHADOW_QUEUE_ROWS, are dropped), while memory stays flat.
    - The process waits `window` seconds after work arrives, keeps at most SHADOW_QUEUE_ROWS rows, and when the
      machine has had CPU to spare over the last SHADOW_SPARE_SECONDS (`SpareCpu`), has the candidate predict
      up to SHADOW_BATCH_ROWS rows, in calls of about half a millisecond with a short sleep after each
      (`_Slices`), and captures the shadow lines itself, in segments of its own in the worker's capture spool
      (`PredictionCapture.writer`), which the workers' shippers ship. So the lines
      never go back through the worker, whose event loop answers the requests: it only learns, on a pipe, how
      many rows were captured (a thread of its own, blocked on the pipe in between, counts them). A candidate
      that fails is reported back, and the experiment is marked broken (so is one whose process exits with an
      error). Rows sent and never reported on are counted as dropped.
    - `sync` (after each registry poll: a request never forks) starts the process for the candidate in shadow,
      and ends one whose candidate is gone: closing its socket, it scores what it has and exits. A worker that
      dies, however, closes the socket too.
    """

    def __init__(
        self,
        experiment: Experiment,
        capture: PredictionCapture | None,
        features: Sequence[str],
        window: float = SHADOW_WINDOW_SECONDS,
    ):
        self.experiment = experiment
        self.capture = capture
        self.features = list(features)
        self.window = window
        self._scorer: _Scorer | None = None
        self._ending: list[_Scorer] = []  # scorers told to end, which may still be scoring what they had
        self._running = False
        self._encode = msgspec.msgpack.Encoder().encode

    def start(self) -> None:
        """Shadow from now on (in the worker process: after the fork); the scorer process starts now, or with the
        first registry poll that finds a candidate in shadow."""
        self._running = True
        self.sync()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop shadowing once the scorer processes have scored what they have (at most `timeout` seconds,
        then they are killed)."""
        self._running = False
        scorer, self._scorer = self._scorer, None
        if scorer is not None:
            self._end(scorer)
        deadline = time.monotonic() + timeout
        for ending in self._ending:
            if ending.reader is not None:
                ending.reader.join(max(0.0, deadline - time.monotonic()))
        for ending in self._ending:
            if ending.alive():
                log.warning("shadow scorer process %s did not stop in %ss: killed", ending.pid, timeout)
                with contextlib.suppress(ProcessLookupError):  # it has just ended
                    os.kill(ending.pid, signal.SIGKILL)
                ending.reader.join(1.0)
        self._ending.clear()

    def _shadowed(self) -> ServedModel | None:
        return self.experiment.candidate if self._running and self.experiment.mode == MODE_SHADOW else None

    def sync(self) -> None:
        """Run a scorer process for the candidate to shadow now, and none for any other."""
        candidate, scorer = self._shadowed(), self._scorer
        if scorer is not None and scorer.candidate is candidate and scorer.alive():
            return
        if scorer is not None:
            self._scorer = None
            self._end(scorer)
        if candidate is not None:
            try:
                self._scorer = self._fork(candidate)
            except OSError as err:  # no process, pipe or socket to be had now: the next poll tries again
                log.warning("shadow scorer process not started: %s", err)

    def submit(self, job: ShadowJob) -> None:
        """Send an answered request to the scorer process, if it runs for the candidate in shadow now (the
        registry poll starts one: a request never forks); never blocks on it, never raises."""
        rows = len(job.records)
        sent, scorer = 0, self._scorer
        if scorer is not None and scorer.candidate is self._shadowed() and time.monotonic() >= scorer.full_until:
            jobs = scorer.jobs
            try:
                for start in range(0, rows, SHADOW_MESSAGE_ROWS):
                    end = min(rows, start + SHADOW_MESSAGE_ROWS)
                    part = (job.request_id, job.production_version, start, job.answered[start:end])
                    message = self._encode((*part, job.records[start:end]))
                    if len(message) > SHADOW_MESSAGE_BYTES:
                        log.warning("shadow job of %s bytes not sent: over %s", len(message), SHADOW_MESSAGE_BYTES)
                        break
                    jobs.send(message)
                    scorer.sent += end - sent
                    sent = end
            except BlockingIOError:  # the process is behind: leave it be for a while
                scorer.full_until = time.monotonic() + self.window
            except OSError as err:  # the process is gone, or a message too large for the socket
                log.debug("shadow job not sent: %s", err)
            except Exception:  # noqa: BLE001 - records msgpack cannot encode: shadowing never costs an answer
                log.exception("shadow job not sent")
        if sent < rows:
            metrics.SHADOW_DROPPED.inc(rows - sent)

    def _fork(self, candidate: ServedModel) -> _Scorer:
        jobs, their_jobs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            jobs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SHADOW_QUEUE_BYTES)
            results, their_results = Pipe(duplex=False)
        except OSError:
            jobs.close()
            their_jobs.close()
            raise
        try:
            pid = os.fork()
        except OSError:
            for end in (jobs, their_jobs, results, their_results):
                end.close()
            raise
        if pid == 0:  # the scorer process: it never returns
            code = 1
            try:
                _become_scorer(keep={their_jobs.fileno(), their_results.fileno()})
                writer = None if self.capture is None else self.capture.writer()
                try:
                    _score(their_jobs, their_results, candidate, self.features, self.window, writer)
                finally:
                    if writer is not None:  # its last segment, for a shipper (one adopts it anyway, once it exits)
                        writer.close_segment()
                code = 0
            except BrokenPipeError:  # its worker is gone (killed): nobody is left to count its lines
                code = 0
            except BaseException:  # noqa: BLE001 - reported by the exit code
                log.exception("the shadow scorer process failed")
            finally:
                os._exit(code)
        their_jobs.close()
        their_results.close()
        jobs.setblocking(False)
        scorer = _Scorer(pid, candidate, jobs, results)
        scorer.reader = threading.Thread(target=self._read, args=(scorer,), name="shadow-results", daemon=True)
        scorer.reader.start()
        log.info("shadow scorer process %s started for candidate version %s", pid, candidate.version)
        return scorer

    def _end(self, scorer: _Scorer) -> None:
        """Close the scorer's jobs: it scores what it has, and exits; its results thread counts what it reports,
        and reaps it."""
        scorer.stopping = True
        scorer.jobs.close()
        self._ending = [s for s in self._ending if s.alive()] + [scorer]

    def _read(self, scorer: _Scorer) -> None:
        """The results thread: count what the scorer process reports (captured, not, or failed) until it exits,
        then reap it."""
        try:
            while True:
                try:
                    message = scorer.results.recv_bytes()
                except (EOFError, OSError):
                    break
                kind, count = _HEAD.unpack_from(message)
                payload = message[_HEAD.size :]
                scorer.done += count
                if kind == _CAPTURED:
                    metrics.CAPTURED.inc(count)
                    metrics.SHADOW_ROWS.inc(count)
                elif kind == _UNCAPTURED:
                    log.warning("shadow predictions not captured: %s", payload.decode())
                    metrics.SHADOW_DROPPED.inc(count)
                else:
                    metrics.SHADOW_DROPPED.inc(count)
                    if not scorer.stopping:  # an ended scorer's candidate is no longer the experiment's
                        self.experiment.fail(scorer.candidate, _Remote(payload.decode()))
        finally:
            scorer.results.close()
            metrics.SHADOW_DROPPED.inc(max(0, scorer.sent - scorer.done))  # killed, or died, with rows queued
            try:
                code = os.waitstatus_to_exitcode(os.waitpid(scorer.pid, 0)[1])
            except ChildProcessError:  # reaped already, by whoever waits for any child
                code = 0
            if code < 0:  # killed (the OOM killer, a person): not the candidate's failure; the next poll forks again
                log.warning("shadow scorer process %s was killed by signal %s", scorer.pid, -code)
            elif code != 0 and not scorer.stopping:
                self.experiment.fail(scorer.candidate, _Remote(f"its shadow scorer process ended with code {code}"))


def _become_scorer(keep: set[int]) -> None:
    """Make this fork of a worker a scorer process: the lowest CPU priority; none of the worker's files (its
    capture segment's lock, its sockets) held open; no signal handler of the worker's. Objects it inherited are
    never collected here (their finalizers are the worker's business)."""
    gc.freeze()
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(signum, signal.SIG_IGN)  # a terminal's ^C, or gunicorn's signals: its worker decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a group's SIGTERM too: it ends when its worker closes its jobs
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def _score(
    jobs: socket.socket,
    results: Connection,
    candidate: ServedModel,
    features: list[str],
    window: float,
    capture: PredictionCapture | None,
) -> None:
    """The scorer process's loop, until its worker closes the jobs socket: take what arrives while fewer than
    SHADOW_QUEUE_ROWS rows wait (then the socket fills, and the worker drops what it cannot send); every
    `window` seconds, if the machine has had CPU to spare (`SpareCpu`), predict up to SHADOW_BATCH_ROWS of it,
    capture the shadow lines (`capture`, a `PredictionCapture.writer`), and tell the worker how many (or the
    failure): `_score_some`. Once the socket is closed, what is left is scored at once. It never works for more
    than a slice without a sleep (`_Slices`)."""
    buffer = bytearray(SHADOW_MESSAGE_BYTES)
    view = memoryview(buffer)
    decode = msgspec.msgpack.Decoder().decode
    queue: collections.deque[list] = collections.deque()
    queued, ended, spare, slices = 0, False, SpareCpu(), _Slices()
    due = None  # seconds until the capture's open segment is old enough to close (None: none open)
    hangup = select.poll()
    hangup.register(jobs, select.POLLIN)  # POLLHUP is always reported
    while True:
        flags, idle = (socket.MSG_DONTWAIT if queue else 0), not queue
        if idle and not ended and due is not None and not hangup.poll(int(due * 1000) + 1):
            due = capture.keep_up()  # nothing came while the open segment aged: close it, to be shipped
            continue
        while not ended and queued < SHADOW_QUEUE_ROWS:  # take what arrived; wait only with nothing else to do
            try:
                size = jobs.recv_into(buffer, 0, flags)
            except BlockingIOError:
                break
            if flags == 0:  # it waited for this message: it slept
                slices.rest()
            flags = socket.MSG_DONTWAIT
            if not size:
                ended = True
                break
            queue.append(decode(view[:size]))
            queued += len(queue[-1][4])
            slices.pause()
        if not ended and queued >= SHADOW_QUEUE_ROWS and any(e & select.POLLHUP for _, e in hangup.poll(0)):
            ended = True  # its worker is gone or done: what is still in the socket is not scored (it counts it)
        if idle and queue:
            spare.reset()  # how busy the machine was while nothing waited says nothing
        if not queue:
            if ended:
                return
            continue
        if not ended:
            time.sleep(window)  # what arrives meanwhile is predicted with it
            slices.rest()
            if not spare.enough():
                continue
        queued -= _score_some(queue, results, candidate, features, capture, slices)
        if capture is not None:
            due = capture.keep_up()


def _score_some(
    queue: collections.deque[list],
    results: Connection,
    candidate: ServedModel,
    features: list[str],
    capture: PredictionCapture | None,
    slices: _Slices,
) -> int:
    """Predict up to SHADOW_BATCH_ROWS queued rows, in calls of a slice each (`slices`), capture their shadow
    lines, and tell the worker (one message for what was captured, and one for a call that was not, which ends
    the round); the rows taken from `queue`."""
    taken = captured = 0
    while queue and taken < SHADOW_BATCH_ROWS:
        batch, rows, most = [], 0, min(slices.rows(), SHADOW_BATCH_ROWS - taken)
        while queue and rows < most:
            part, take = queue[0], most - rows
            if len(part[4]) > take:  # the rest of a request's rows stays first in line, from its next row on
                request_id, version, first, answered, records = part
                queue[0] = [request_id, version, first + take, answered[take:], records[take:]]
                part = [request_id, version, first, answered[:take], records[:take]]
            else:
                queue.popleft()
            batch.append(part)
            rows += len(part[4])
        taken += rows
        started = time.thread_time()
        result = _shadow_result(batch, rows, candidate, features, capture)
        slices.took(rows, time.thread_time() - started)
        if result[:1] != _CAPTURED:  # not captured, or the candidate failed: said once, and the rest waits
            results.send_bytes(result)
            break
        captured += rows
    if captured:
        results.send_bytes(_HEAD.pack(_CAPTURED, captured))
    return taken


class _Slices:
    """Keeps the scorer process off a CPU for more than about SHADOW_SLICE_SECONDS at a time: it sleeps for
    SHADOW_GAP_SECONDS once it has run that long, and predicts as many rows in one call as fit in a slice (by the
    CPU time per row its last call took: its own CPU time, since the workers preempt it at will, and a call
    timed by the clock would shrink to a row at a time under load), but at least SHADOW_CALL_ROWS: a candidate
    whose calls cost more than a slice whatever their size is still called on a few rows at a time.

    SCHED_IDLE makes it give its CPU up at once only to the tasks of its own cgroup (the workers: since Linux
    6.12 the policy is relative to the cgroup). A task of another cgroup that wakes on its CPU (the caller, a proxy in
    front of the service, the object store, a sidecar) waits for the scheduler's next tick, up to 4 ms at
    HZ=250, and the kernel sends waking tasks to such a CPU as to an idle one. A scorer that sleeps every slice
    bounds that wait by the slice.
    """

    def __init__(self, slice_seconds: float = SHADOW_SLICE_SECONDS, gap_seconds: float = SHADOW_GAP_SECONDS):
        self.slice, self.gap = slice_seconds, gap_seconds
        self.per_row = slice_seconds / SHADOW_CALL_ROWS  # nothing is known of the candidate yet
        self.since = time.thread_time()

    def rows(self) -> int:
        """How many rows to predict in the next call."""
        return max(SHADOW_CALL_ROWS, min(SHADOW_BATCH_ROWS, int(self.slice / self.per_row)))

    def took(self, rows: int, seconds: float) -> None:
        """A call predicted `rows` in `seconds`: learn the time per row, and sleep if the slice is spent."""
        if rows:
            self.per_row = max(seconds / rows, 1e-7)
        self.pause()

    def pause(self) -> None:
        """Sleep for the gap if this process has worked a slice since it last slept."""
        if time.thread_time() - self.since >= self.slice:
            time.sleep(self.gap)
            self.since = time.thread_time()

    def rest(self) -> None:
        """It is about to wait anyway (for work, or a window): its slice starts anew after."""
        self.since = time.thread_time()


class SpareCpu:
    """Whether the machine has had CPU to spare over the last `seconds` (SHADOW_SPARE_SECONDS): at least
    SHADOW_SPARE_CPU of its CPU time idle; in a cgroup with a CPU limit (`cpu.max`), at least that share of the
    limit unused, and none of it throttled.

    - The scorer's own CPU time counts as used: SCHED_IDLE yields only to the processes of its own cgroup (the
      workers), not to those of other containers or of the host (a load generator, a proxy, the callers), so
      what it used may have been theirs.
    - Over `seconds`, not since the last look: a saturated machine is idle in a few moments (one 50 ms window
      in 25, measured at 16 connections), and each such moment let the scorer predict a whole batch of what had
      waited, with the CPU the answers needed. Measured this way, a saturated machine never has CPU to spare,
      and the scorer catches up once the load is over (or drops what it cannot keep waiting).
    """

    CGROUP = "/sys/fs/cgroup"  # cgroup v2, as a container sees its own

    def __init__(self, seconds: float = SHADOW_SPARE_SECONDS) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.span = seconds * self.ticks
        self.limit = _cpu_limit(self.CGROUP)  # CPUs, or None
        self.reset()

    def reset(self) -> None:
        """Look from now on (when work arrives after an idle spell): no CPU to spare until `seconds` have
        passed."""
        self.looks: collections.deque[_CpuTimes] = collections.deque([self._read()])

    def _read(self) -> _CpuTimes:
        try:
            with open("/proc/stat", "rb") as f:
                times = [int(v) for v in f.readline().split()[1:9]]
            total, idle = sum(times), times[3] + times[4]
        except (OSError, ValueError, IndexError):
            total = idle = 0
        stat = {}
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"{self.CGROUP}/cpu.stat", "rb") as f:
            stat = {k: int(v) for k, v in (line.split() for line in f)}
        return _CpuTimes(
            total=total,
            idle=idle,
            throttled=stat.get(b"nr_throttled", 0),
            used=stat.get(b"usage_usec", 0) / 1e6 * self.ticks,
            when=time.monotonic() * self.ticks,
        )

    def enough(self) -> bool:
        now, looks = self._read(), self.looks
        looks.append(now)
        while len(looks) > 2 and now.when - looks[1].when >= self.span:
            looks.popleft()  # the oldest look at least `seconds` ago is the one compared with
        last = looks[0]
        if now.when - last.when < self.span or now.throttled != last.throttled:
            return False
        if self.limit is not None:  # the cgroup's share of its limit, meanwhile
            used = (now.used - last.used) / (now.when - last.when)
            if (self.limit - used) / self.limit < SHADOW_SPARE_CPU:
                return False
        if now.total <= last.total:  # no /proc/stat, or no tick since: nothing says the machine is busy
            return True
        return (now.idle - last.idle) / (now.total - last.total) >= SHADOW_SPARE_CPU


class _CpuTimes(NamedTuple):
    """What `SpareCpu` reads, all in clock ticks (or a count)."""

    total: int  # the machine's CPU time (/proc/stat)
    idle: int  # of which idle or waiting for I/O
    throttled: int  # the times the cgroup was throttled (cpu.stat nr_throttled)
    used: float  # the cgroup's CPU time (cpu.stat usage_usec)
    when: float  # the monotonic clock


def _cpu_limit(cgroup: str) -> float | None:
    """The CPUs that `cpu.max` allows this cgroup, or None: no limit (or no cgroup v2)."""
    try:
        with open(f"{cgroup}/cpu.max") as f:
            quota, period = f.read().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _shadow_result(
    batch: list, rows: int, candidate: ServedModel, features: list[str], capture: PredictionCapture | None
) -> bytes:
    """Predict a batch of (request id, production version, first row, production's predictions, records) parts
    with the candidate, capture its shadow lines, and say so to the worker: a result message of how many rows
    were captured, or were not (and why), or of the candidate's failure."""
    try:
        lines = _shadow_lines(batch, candidate, features)
    except Exception as err:  # noqa: BLE001 - any failure of the candidate: production is unaffected
        return _HEAD.pack(_FAILED, rows) + repr(err).encode()
    if capture is None:
        return _HEAD.pack(_UNCAPTURED, rows) + b"the capture is off"
    try:
        capture.log(lines, rows)
    except CaptureUnavailable as err:
        return _HEAD.pack(_UNCAPTURED, rows) + str(err).encode()
    return _HEAD.pack(_CAPTURED, rows)


def _shadow_lines(batch: list, candidate: ServedModel, features: list[str]) -> bytes:
    """The candidate's shadow lines for a batch of parts (see `_shadow_result`)."""
    started = time.perf_counter()
    columns = {name: [record[name] for part in batch for record in part[4]] for name in features}
    predictions = candidate.predict(columns).tolist()
    latency_ms = (time.perf_counter() - started) * 1000
    return shadow_log_lines(batch, candidate.name, candidate.version, predictions, latency_ms)
