"""How every worker process learns of a new production version: a registry poll, and a signal file.

Each uvicorn worker holds its own model. `/reload` in one worker touches `RELOAD_SIGNAL`; every worker's
poller sees the file's mtime change within a second and refreshes too, without waiting for the next poll.
"""

import asyncio
import logging
import os
import time

from mlops_sandbox.serve.experiment import Experiment, ShadowScorer
from mlops_sandbox.serve.model import ProductionModel

log = logging.getLogger(__name__)

RELOAD_SIGNAL = "/tmp/mlops-sandbox-reload"  # touched by /reload so that every worker reloads


def signal_mtime() -> float:
    """When the reload signal was last touched; 0.0 before the first `/reload`."""
    try:
        return os.stat(RELOAD_SIGNAL).st_mtime
    except FileNotFoundError:
        return 0.0


def signal_reload() -> None:
    """Ask every worker to look the production alias up now."""
    with open(RELOAD_SIGNAL, "a"):
        os.utime(RELOAD_SIGNAL)


async def poll_registry(
    production: ProductionModel,
    poll_seconds: float,
    experiment: Experiment | None = None,
    shadow: ShadowScorer | None = None,
) -> None:
    """Refresh `production` (then the `experiment` beside it, and the `shadow` scorer process it needs) every
    `poll_seconds`, and at once when the reload signal moves. Runs until cancelled."""
    seen_signal, next_poll = signal_mtime(), 0.0
    while True:
        signal = signal_mtime()
        if time.monotonic() >= next_poll or signal != seen_signal:
            seen_signal, next_poll = signal, time.monotonic() + poll_seconds
            try:
                await asyncio.to_thread(production.refresh)
                if experiment is not None:
                    await asyncio.to_thread(experiment.refresh, production.current)
                if shadow is not None:
                    shadow.sync()  # here, in the event loop's thread: it may fork
            except Exception:  # noqa: BLE001 - the poller must outlive any single failure
                log.exception("registry poll failed")
        await asyncio.sleep(1.0)
