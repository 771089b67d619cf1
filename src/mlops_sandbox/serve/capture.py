"""Prediction capture (seed step 10): every answered prediction, to the prediction-logs bucket, none lost.

Durable before the answer. `log()` appends the request's log lines to this worker's open segment, a JSON Lines
file on the spool volume, with one `write()` before the service answers. Once `write()` has returned, the
lines are in the kernel's page cache: they survive the loss of the process (SIGKILL, an OOM kill, a crash),
though not the loss of the machine's power (there is no fsync per request; see the README).

A shipper thread in each worker closes its open segment every `segment_records` lines or `segment_seconds`,
uploads closed segments to S3 (one object per hour of records, under a key named after the segment, so that
uploading the same segment twice writes the same objects) and deletes a segment only after every upload
succeeded. While S3 is away, closed segments wait on disk: that is the spool.

Every worker holds an exclusive `flock` on its open segment, which the kernel releases when the process dies,
however it dies. A shipper that can take the lock of another worker's open segment knows that worker is dead,
and ships the segment (its last line is dropped if it is torn: a torn line was never answered). The spool is
shared by the workers of one service and survives a restart. A worker's shadow scorer process writes its shadow
lines there the same way, through a `writer` of its own, and the workers' shippers ship its segments.

Faults are answered, never hidden: when the spool is over `max_spool_bytes`, or the disk is full or not
writable, `log()` raises `CaptureUnavailable` and the service answers 503 instead of a prediction it could not
keep. A torn write is cut back off the segment first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from mlops_sandbox.contracts import PREDICTIONS, log_key
from mlops_sandbox.serve import metrics

log = logging.getLogger(__name__)

Upload = Callable[[str, bytes], None]  # (key, body) -> None; raises when the upload failed

OPEN, CLOSED = "open-", "closed-"  # segment file name prefixes: being written by a live worker, or ready to ship
NEW = ".new-"  # a segment being created: not yet locked, so no shipper looks at it
RETRIED = ".retried.jsonl"  # a closed segment whose upload failed once: counted as spooled
STALE_SECONDS = 60.0  # a hidden file this old, that nobody holds, was left half-made by a dead worker


class CaptureUnavailable(Exception):
    """A prediction's capture could not be made durable (spool full, disk full or read-only): answer 503."""


STAMP = b'"timestamp":"'  # how a line's time starts: the first such bytes in it (a string value escapes its quotes)


def _stamp(data: bytes, start: int) -> str | None:
    """The timestamp of the line that starts at `start` in `data`, or None if it has none."""
    end = data.find(b"\n", start)
    at = data.find(STAMP, start, len(data) if end < 0 else end)
    if at < 0:
        return None
    at += len(STAMP)
    close = data.find(b'"', at)
    try:
        stamp = data[at:close].decode()
        datetime.fromisoformat(stamp)
        return stamp
    except ValueError:  # no closing quote, not UTF-8, not a time
        return None


class PredictionCapture:
    def __init__(
        self,
        upload: Upload,
        spool_dir: Path,
        scenario: str,
        segment_records: int = 1000,
        segment_seconds: float = 5.0,
        max_spool_bytes: int = 1 << 30,
        retry_seconds: float = 5.0,
    ):
        if segment_records < 1 or segment_seconds <= 0 or max_spool_bytes < 1:
            raise ValueError("need segment_records >= 1, segment_seconds > 0 and max_spool_bytes >= 1")
        self.upload = upload
        self.spool_dir = Path(spool_dir)
        self.scenario = scenario
        self.segment_records = segment_records
        self.segment_seconds = segment_seconds
        self.max_spool_bytes = max_spool_bytes
        self.retry_seconds = retry_seconds
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_retry = 0.0
        self._seq = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = self._lines = 0
        self._opened = 0.0
        self._spool_bytes = 0  # the whole spool (every worker's files), as last measured, plus own writes since
        self._counted = True  # in the metrics (a `writer` is not: its worker counts what it reports)
        self.stats = {"captured": 0, "uploaded": 0, "spooled": 0, "lost": 0, "torn": 0}

    # --- the request path -------------------------------------------------------------------------
    def log(self, lines: bytes, count: int) -> None:
        """Make `count` JSON lines (`lines`, each ending in a newline) durable, or raise CaptureUnavailable."""
        with self._lock:
            if self._spool_bytes + len(lines) > self.max_spool_bytes:
                self._refused("spool_full")
                raise CaptureUnavailable(
                    f"the capture spool is full ({self._spool_bytes} of {self.max_spool_bytes} bytes, "
                    "CAPTURE_SPOOL_MAX_BYTES): the prediction-logs bucket has not taken uploads for a while"
                )
            try:
                if self._fd is None:
                    self._open_segment()
                _write_all(self._fd, lines)
            except OSError as err:
                self._undo_torn_write()
                self._refused("disk_full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "unwritable")
                raise CaptureUnavailable(
                    f"the capture spool {self.spool_dir} cannot be written: {err.strerror}"
                ) from err
            self._size += len(lines)
            self._lines += count
            self._spool_bytes += len(lines)
            self.stats["captured"] += count
            full = self._lines >= self.segment_records
        if self._counted:
            metrics.CAPTURED.inc(count)
        if full:
            self._wake.set()

    def _refused(self, reason: str) -> None:
        if self._counted:
            metrics.CAPTURE_REFUSED.labels(reason).inc()

    # --- a writer of a process forked from a worker -------------------------------------------------
    def writer(self) -> PredictionCapture:
        """Another writer into this spool, for a process forked from this worker (the shadow scorer), made in
        that process: segments of its own, under its own name and lock, which the workers' shippers ship (and
        adopt if it dies). It has no shipper: it closes its segments with `keep_up`, and its last one with
        `close_segment`. It touches no metric (a lock of the worker's may have been held at the fork): its
        worker counts what it reports."""
        writer = PredictionCapture(
            self.upload,
            self.spool_dir,
            self.scenario,
            self.segment_records,
            self.segment_seconds,
            self.max_spool_bytes,
            self.retry_seconds,
        )
        writer._counted = False
        writer._measure_spool()
        return writer

    def keep_up(self) -> float | None:
        """For a `writer`: close the open segment if it is full or old enough, measure the spool again (the
        workers write to it too), and return the seconds until the open segment is old enough (None: none)."""
        self.rotate()
        self._measure_spool()
        with self._lock:
            if self._fd is None or not self._lines:
                return None
            return max(0.0, self._opened + self.segment_seconds - time.monotonic())

    def close_segment(self) -> None:
        """Close the open segment now, so that a shipper ships it."""
        with self._lock:
            self._close_segment()

    def _open_segment(self) -> None:
        self._seq += 1
        name = f"{time.time_ns():020d}-{self.worker}-{self._seq}.jsonl"
        new = self.spool_dir / f"{NEW}{name}"
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        try:
            # held until this process closes it, or dies. Blocking: another worker's shipper may hold it for a
            # moment, while it checks whether this hidden file is a stale leftover (it is not: it is new).
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(new, self.spool_dir / f"{OPEN}{name}")
        except OSError:
            os.close(fd)
            new.unlink(missing_ok=True)
            raise
        self._fd, self._path = fd, self.spool_dir / f"{OPEN}{name}"
        self._size = self._lines = 0
        self._opened = time.monotonic()

    def _undo_torn_write(self) -> None:
        """Cut a partly written request off the segment, so that no line of an unanswered request is shipped."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            log.exception("could not cut a torn write off %s; closing it", self._path)
            self._close_segment()

    # --- the shipper ------------------------------------------------------------------------------
    def start(self) -> None:
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # made in a gunicorn master, started in a worker
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._measure_spool()
        self._thread = threading.Thread(target=self._run, name="prediction-capture", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 20.0) -> None:
        """Close the open segment and ship what is on disk; what S3 does not take stays in the spool."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self._close_segment()
        self.ship()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.rotate()
                self.ship()
            except Exception:  # noqa: BLE001 - the shipper must outlive any single failure
                log.exception("prediction capture shipping failed")

    def rotate(self, force: bool = False) -> None:
        """Close the open segment when it is full or old enough (or `force`), so that it can be shipped."""
        with self._lock:
            due = self._lines >= self.segment_records or time.monotonic() - self._opened >= self.segment_seconds
            if self._fd is not None and self._lines and (due or force):
                self._close_segment()

    def _close_segment(self) -> None:
        if self._fd is None:
            return
        path, fd = self._path, self._fd
        self._fd = self._path = None
        try:
            if self._lines:
                os.rename(path, path.with_name(path.name.replace(OPEN, CLOSED, 1)))
            else:
                path.unlink()
        finally:
            os.close(fd)  # releases the lock

    def ship(self) -> int:
        """Adopt the open segments of dead workers, then upload closed segments, oldest first, until one fails.

        Returns how many segments went up. Runs in any worker; a segment is shipped by one at a time.
        """
        self._adopt_orphans()
        done = 0
        if time.monotonic() >= self._next_retry:
            for path in self._segments(CLOSED):
                shipped = self._ship_segment(path)
                if shipped is False:
                    self._count_spooled()
                    break
                done += shipped is True
        self._measure_spool()
        return done

    def _segments(self, prefix: str) -> list[Path]:
        try:
            return sorted(p for p in self.spool_dir.iterdir() if p.name.startswith(prefix))
        except FileNotFoundError:
            return []

    def _adopt_orphans(self) -> None:
        """Close what dead workers left open, remove what they left half-made, and adopt older spool files."""
        for path in self._segments(OPEN):
            if path == self._path:
                continue
            with _locked(path) as fd:
                if fd is not None:  # its writer is dead: nobody else holds the lock of an open segment
                    log.warning("shipping %s, left open by a worker that is gone", path.name)
                    with contextlib.suppress(FileNotFoundError):  # another worker was first
                        os.rename(path, path.with_name(path.name.replace(OPEN, CLOSED, 1)))
        for path in self._segments("."):
            # a segment being created (empty, not yet locked), or a version-1 temp file: never answered
            with _locked(path) as fd:
                if fd is not None and time.time() - os.fstat(fd).st_mtime > STALE_SECONDS:
                    log.warning("removing %s, left half-made by a worker that is gone", path.name)
                    path.unlink(missing_ok=True)
        for path in self._segments(""):
            name = path.name.split(".claimed-")[0]  # version 1 of this service spooled whole batches, named
            if name.endswith(".jsonl") and not name.startswith((OPEN, CLOSED, ".")):  # after their keys: ship them
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, path.with_name(f"{CLOSED}{0:020d}-v1-{name.removesuffix('.jsonl')}.jsonl"))

    def _ship_segment(self, path: Path) -> bool | None:
        """True: uploaded and deleted. False: an upload failed (stop for now). None: another worker has it."""
        with _locked(path) as fd:
            if fd is None or os.fstat(fd).st_nlink == 0:
                return None
            for key, body, count in self._objects(path.read_bytes(), path):
                try:
                    self.upload(key, body)
                except Exception as err:  # noqa: BLE001 - S3 away: the segment waits in the spool
                    log.warning("prediction-log upload failed (%s); %s waits in %s", err, path.name, self.spool_dir)
                    self._next_retry = time.monotonic() + self.retry_seconds
                    return False
                self.stats["uploaded"] += count
                metrics.UPLOADED.inc(count)
            path.unlink()
            return True

    def _count_spooled(self) -> None:
        """Count the rows that now wait for S3 (each segment once: it is marked `.retried`)."""
        for path in self._segments(CLOSED):
            if path.name.endswith(RETRIED):
                continue
            with _locked(path) as fd:
                if fd is None:
                    continue
                count = path.read_bytes().count(b"\n")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, path.with_name(path.name.removesuffix(".jsonl") + RETRIED))
            self.stats["spooled"] += count
            metrics.SPOOLED.inc(count)

    def _objects(self, data: bytes, path: Path) -> list[tuple[str, bytes, int]]:
        """One object per hour of records, keyed by the segment: the same segment always gives the same keys.

        A last line without its newline is a write cut short, whose answer was never sent: it is dropped. A
        segment within one hour (nearly all: they close every few seconds) is uploaded as it is, unsplit.
        """
        segment_id = path.name.removeprefix(CLOSED).removesuffix(RETRIED).removesuffix(".jsonl")
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.stats["torn"] += 1
            log.warning("%s ends in a torn line (%d bytes), never answered: dropped", path.name, len(data) - end)
        data = data[:end]
        if not data:
            return []
        first, last = _stamp(data, 0), _stamp(data, data.rfind(b"\n", 0, end - 1) + 1)
        if first is not None and last is not None and first[:13] == last[:13]:
            return [(self._key(first, segment_id), data, data.count(b"\n"))]
        by_hour: dict[str, list[bytes]] = defaultdict(list)
        stamps: dict[str, str] = {}
        for line in data.split(b"\n")[:-1]:
            stamp = _stamp(line, 0)
            if stamp is None:
                self.stats["lost"] += 1
                metrics.LOST.inc()
                log.error("a captured line has no timestamp and is lost: %r", line[:200])
                continue
            by_hour[stamp[:13]].append(line)
            stamps.setdefault(stamp[:13], stamp)
        return [
            (self._key(stamps[hour], segment_id), b"\n".join(group) + b"\n", len(group))
            for hour, group in sorted(by_hour.items())
        ]

    def _key(self, stamp: str, segment_id: str) -> str:
        return log_key(self.scenario, PREDICTIONS, datetime.fromisoformat(stamp), segment_id)

    def _measure_spool(self) -> None:
        """What the spool holds now, every worker's files: the size the request path checks against its cap."""
        total = waiting = 0
        try:
            with os.scandir(self.spool_dir) as entries:
                for entry in entries:
                    try:
                        size = entry.stat().st_size
                    except FileNotFoundError:
                        continue
                    total += size
                    waiting += entry.name.startswith(CLOSED)
        except FileNotFoundError:
            pass
        with self._lock:
            self._spool_bytes = total
        if self._counted:
            metrics.SPOOL_BYTES.set(total)
            metrics.SPOOL_SEGMENTS.set(waiting)

    def spool_bytes(self) -> int:
        return self._spool_bytes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _locked:
    """`with _locked(path) as fd`: fd is an open descriptor holding the file's exclusive lock, or None when
    another process holds it (or the file is gone)."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        self.fd = fd
        return fd

    def __exit__(self, *_) -> None:
        if self.fd is not None:
            os.close(self.fd)
