"""The whole loop, unattended, on the running stack (`make demo`): prints each step as it happens.

1. seed data  2. train and promote v1  3. traffic  4. drift injected  5. decay flagged  6. retrain
7. v2 beats v1 on fresh labelled data and is promoted  8. monitoring recovers

The world changes by concept drift: the same houses sell at different prices, so v1's errors grow while
the feature distributions stay put, and only a model trained on the new data recovers.

    python scripts/demo.py [--traffic-seconds 45] [--rate 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta

from mlops_sandbox import loop, registry
from mlops_sandbox.airflow_api import AirflowAPI
from mlops_sandbox.config import get_settings
from mlops_sandbox.retrain import challenge
from mlops_sandbox.simulate import Drift, land_batches, next_clock
from mlops_sandbox.storage import s3_client
from mlops_sandbox.traffic import run_traffic

SCENARIO = "house_prices"
T0 = time.monotonic()


def say(step: str, text: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f} s] {step:<22} {text}", flush=True)


def drifted_traffic(settings, s3, args, seed: int, drift: Drift):
    """One burst of requests from the changed market."""
    return run_traffic(
        settings, s3, SCENARIO, args.rate, args.traffic_seconds, seed=seed, actuals_delay=2, drifts=[drift]
    )


NEEDS_RESET = (
    "The demo tells its story from a stack without earlier models; run `make reset` (it deletes this stack's "
    "runs, models and data) and `make demo` again."
)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except registry.PromotionRefused as refused:
        # one line, not a traceback: the usual cause is a stack used before (its production model is not
        # the demo's v1, and the compliance checks judge the demo's versions against it)
        print(f"demo stopped: {refused}. {NEEDS_RESET}", file=sys.stderr)
        return 2


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traffic-seconds", type=int, default=45)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--batches", type=int, default=12, help="raw batches before, and again after, the drift")
    args = parser.parse_args(argv)
    settings = get_settings()
    s3 = s3_client(settings)
    airflow = AirflowAPI(settings)
    window = max(1, -(-args.traffic_seconds // 60))  # whole minutes covering one traffic burst
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # the demo's batches come after any already in the bucket, so each training run takes exactly them
    first = next_clock(s3, settings.raw_data_bucket, SCENARIO, now - timedelta(hours=2 * args.batches))
    drift_start = first + timedelta(hours=args.batches)
    concept = Drift("concept", drift_start, 1.0)

    for step in ("training_pipeline", "monitoring"):
        airflow.wait_for_dag(step)
    before = land_batches(s3, settings.raw_data_bucket, SCENARIO, args.batches, 400, 2024, first)
    say("1 seed data", f"{len(before)} batches of 400 houses in s3://{settings.raw_data_bucket}/{SCENARIO}/")

    v1 = loop.run_training(airflow, SCENARIO, "mlp", args.batches)
    loop.promote_to_production(
        settings, v1, "demo", "demo v1", "Demo v1: house-price MLP trained before the market changed."
    )
    loop.wait_until_serving(settings, v1)
    say("2 train, promote v1", f"version {v1} serves production")

    sent = run_traffic(settings, s3, SCENARIO, args.rate, args.traffic_seconds, seed=1, actuals_delay=2)
    healthy = loop.run_monitoring(airflow, SCENARIO, window)
    say(
        "3 traffic",
        f"{sent.answered} predictions; monitoring: decay={healthy['decay']}, "
        f"MAE {healthy['mae'] or 0:,.0f}, drift share {healthy['drift_share'] or 0:.0%}",
    )

    after = land_batches(s3, settings.raw_data_bucket, SCENARIO, args.batches, 400, 2025, drift_start, drifts=[concept])
    drifted_from = datetime.now(UTC)
    market_changed = Drift("concept", now - timedelta(days=1), 1.0)
    drifted = drifted_traffic(settings, s3, args, 2, market_changed)
    say("4 drift injected", f"concept drift: {len(after)} new batches and {drifted.answered} requests")

    decayed = loop.run_monitoring(airflow, SCENARIO, window)
    say("5 decay flagged", f"monitoring run {decayed['state']}: {'; '.join(decayed['reasons']) or 'no decay?'}")

    v2 = loop.run_training(airflow, SCENARIO, "mlp", args.batches)
    say("6 retrain", f"version {v2} trained on the newest {args.batches} batches")

    decision = challenge(settings, SCENARIO, drifted_from, datetime.now(UTC), challenger=v2)
    if decision["promoted"]:
        loop.wait_until_serving(settings, v2)
    say(
        "7 challenger vs champion",
        f"v{v2} MAE {decision.get('challenger_mae', 0):,.0f} vs v{decision['champion']} "
        f"MAE {decision.get('champion_mae', 0):,.0f} on {decision['fresh_rows']} fresh labelled requests: "
        f"{'promoted' if decision['promoted'] else 'kept the champion'}",
    )

    drifted_traffic(settings, s3, args, 3, market_changed)
    recovered = loop.run_monitoring(airflow, SCENARIO, window)
    say(
        "8 monitoring recovers",
        f"monitoring run {recovered['state']}: decay={recovered['decay']}, MAE {recovered['mae'] or 0:,.0f}",
    )
    ok = not healthy["decay"] and decayed["decay"] and decision["promoted"] and not recovered["decay"]
    print(
        json.dumps(
            {
                "ok": ok,
                "v1": v1,
                "v2": v2,
                "healthy": healthy,
                "decayed": decayed,
                "decision": decision,
                "recovered": recovered,
            },
            default=str,
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
