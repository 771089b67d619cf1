"""Prediction capture (seed step 10): every request and prediction, to the prediction-logs bucket.

Off the request path: `log()` appends to an in-memory buffer, and a background thread writes it out every
`batch_records` records or `flush_seconds`, as JSON Lines partitioned by scenario, date and hour. When the
S3 server is unreachable, batches go to a spool folder on disk and are uploaded later, oldest first; `close()`
(called on SIGTERM, through the app's shutdown) flushes what is left. Memory stays bounded: past
`max_buffer` records, the request path spools to disk itself rather than grow. Nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from mlops_sandbox.contracts import PREDICTIONS, PredictionLogRecord, log_key, to_jsonl

log = logging.getLogger(__name__)

Upload = Callable[[str, bytes], None]  # (key, body) -> None; raises when the upload failed


class PredictionCapture:
    def __init__(
        self,
        upload: Upload,
        spool_dir: Path,
        scenario: str,
        batch_records: int = 1000,
        flush_seconds: float = 5.0,
        max_buffer: int = 20_000,
        retry_seconds: float = 5.0,
    ):
        if batch_records < 1 or max_buffer < batch_records:
            raise ValueError("need 1 <= batch_records <= max_buffer")
        self.upload = upload
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.scenario = scenario
        self.batch_records = batch_records
        self.flush_seconds = flush_seconds
        self.max_buffer = max_buffer
        self.retry_seconds = retry_seconds
        self._buffer: list[PredictionLogRecord] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_retry = 0.0
        self._worker = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._thread: threading.Thread | None = None
        self.stats = {"logged": 0, "uploaded": 0, "spooled": 0, "respooled_uploads": 0}

    # --- the request path -------------------------------------------------------------------------
    def log(self, rows: list[PredictionLogRecord]) -> None:
        """Queue rows for capture. Never blocks on the network."""
        with self._lock:
            self._buffer.extend(rows)
            self.stats["logged"] += len(rows)
            size = len(self._buffer)
            overflow = self._take() if size > self.max_buffer else None
        if overflow:
            self._spool(overflow)  # the writer cannot keep up: disk, not memory
        elif size >= self.batch_records:
            self._wake.set()

    # --- the writer -------------------------------------------------------------------------------
    def start(self) -> None:
        self._recover_claims()
        self._thread = threading.Thread(target=self._run, name="prediction-capture", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 20.0) -> None:
        """Stop the writer and flush everything: to S3 if it answers, else to the spool."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
                if time.monotonic() >= self._next_retry:
                    self.upload_spool()
            except Exception:  # noqa: BLE001 - the writer must outlive any single failure
                log.exception("prediction capture flush failed")

    def _take(self) -> list[PredictionLogRecord]:
        rows, self._buffer = self._buffer, []
        return rows

    def flush(self) -> None:
        with self._lock:
            rows = self._take()
        if not rows:
            return
        for key, body in self._batches(rows):
            if time.monotonic() >= self._next_retry and self._try_upload(key, body):
                self.stats["uploaded"] += body.count(b"\n")
            else:
                self._write_spool(key, body)

    def _batches(self, rows: list[PredictionLogRecord]) -> list[tuple[str, bytes]]:
        by_hour: dict[str, list[PredictionLogRecord]] = defaultdict(list)
        for row in rows:
            by_hour[row["timestamp"][:13]].append(row)
        out = []
        for _, group in sorted(by_hour.items()):
            when = datetime.fromisoformat(group[0]["timestamp"])
            # unique without shared state: the request path and the writer both make batches
            unique = f"{self._worker}-{uuid.uuid4().hex[:12]}"
            out.append((log_key(self.scenario, PREDICTIONS, when, unique), to_jsonl(group)))
        return out

    def _try_upload(self, key: str, body: bytes) -> bool:
        try:
            self.upload(key, body)
            return True
        except Exception as err:  # noqa: BLE001 - S3 down: spool, retry later
            log.warning("prediction-log upload failed (%s); spooling to %s", err, self.spool_dir)
            self._next_retry = time.monotonic() + self.retry_seconds
            return False

    # --- the spool --------------------------------------------------------------------------------
    def _spool(self, rows: list[PredictionLogRecord]) -> None:
        for key, body in self._batches(rows):
            self._write_spool(key, body)

    def _write_spool(self, key: str, body: bytes) -> None:
        name = key.replace("/", "__")
        tmp = self.spool_dir / f".{name}.tmp"
        tmp.write_bytes(body)
        os.replace(tmp, self.spool_dir / name)  # atomic: a reader never sees half a file
        self.stats["spooled"] += body.count(b"\n")

    def spooled_files(self) -> list[Path]:
        return sorted(p for p in self.spool_dir.iterdir() if p.name.endswith(".jsonl"))

    def upload_spool(self) -> int:
        """Upload spooled batches, oldest first; stop at the first failure. Returns how many went up."""
        done = 0
        for path in self.spooled_files():
            claimed = path.with_name(f"{path.name}.claimed-{self._worker}")
            try:
                os.rename(path, claimed)  # another worker may be uploading the same spool
            except FileNotFoundError:
                continue
            if not self._try_upload(path.name.replace("__", "/"), claimed.read_bytes()):
                os.rename(claimed, path)
                break
            self.stats["respooled_uploads"] += 1
            claimed.unlink()
            done += 1
        return done

    def _recover_claims(self, older_than: float = 120.0) -> None:
        """Claims left by a worker that died mid-upload go back to the spool."""
        now = time.time()
        for path in self.spool_dir.glob("*.jsonl.claimed-*"):
            if now - path.stat().st_mtime > older_than:
                os.replace(path, path.with_name(path.name.split(".claimed-")[0]))
