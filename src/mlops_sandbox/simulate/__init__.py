"""Simulated industry data (seed step 22): seeded, reproducible batches over a simulated clock, with drift.

The same seed and clock always give the same rows: each batch draws from a generator seeded with
`(seed, batch time)`, so batches can be regenerated one at a time and in any order.
"""

from mlops_sandbox.simulate.generator import (
    DRIFT_KINDS,
    Drift,
    batch_key,
    batch_times,
    generate_batch,
    land_batches,
    next_clock,
    parse_drift,
    publish_batch,
)

__all__ = [
    "DRIFT_KINDS",
    "Drift",
    "batch_key",
    "batch_times",
    "generate_batch",
    "land_batches",
    "next_clock",
    "parse_drift",
    "publish_batch",
]
