import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlops_sandbox.contracts import CANDIDATE_VARIANT, MAX_AB_SHARE, MODE_AB, MODE_OFF, MODE_SHADOW, PRODUCTION_VARIANT
from mlops_sandbox.experiment import VERDICTS, assign_variant, bucket, compare

pytestmark = pytest.mark.unit

KEYS = [f"caller-{i}" for i in range(10_000)]
HALF_NORMAL = math.sqrt(2 / math.pi)  # E|e| = sigma * sqrt(2/pi) for e ~ N(0, sigma)


# --- assignment --------------------------------------------------------------------------------------------
def test_bucket_is_blake2b_of_the_key_in_unit_interval():
    expected = int.from_bytes(hashlib.blake2b(b"client-42").digest()[:8], "big") / 2**64
    assert bucket("client-42") == expected
    assert all(0 <= bucket(k) < 1 for k in KEYS[:1000])
    assert bucket("é") == bucket("é")  # UTF-8, not the platform's encoding


def test_assignment_is_sticky_and_has_no_per_process_salt():
    keys = ["alice", "bob", "carol", "client-7", "ünïcode"]
    here = [bucket(k) for k in keys]
    assert [bucket(k) for k in keys] == here
    assert [assign_variant(k, 0.3) for k in keys] == [assign_variant(k, 0.3) for k in keys]
    code = (
        "import json, sys; from mlops_sandbox.experiment import bucket; "
        "print(json.dumps([bucket(k) for k in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}  # another process, another str hash: the buckets must not move
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(keys)], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == here


def test_assignment_is_monotone_in_share():
    shares = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
    on_candidate = [{k for k in KEYS if assign_variant(k, s) == CANDIDATE_VARIANT} for s in shares]
    assert on_candidate[0] == set()
    for smaller, larger in zip(on_candidate, on_candidate[1:], strict=False):
        assert smaller <= larger


@pytest.mark.parametrize("share", [-0.01, MAX_AB_SHARE + 0.01, 1.0, float("nan")])
def test_share_outside_bounds_is_refused(share):
    with pytest.raises(ValueError, match="share"):
        assign_variant("alice", share)


def test_share_bounds_are_allowed():
    assert assign_variant("alice", 0.0) == PRODUCTION_VARIANT
    assert assign_variant("alice", MAX_AB_SHARE) in (PRODUCTION_VARIANT, CANDIDATE_VARIANT)


@pytest.mark.parametrize("share", [0.05, 0.1, 0.3, 0.5])
def test_share_holds_within_binomial_bounds(share):
    n = len(KEYS)
    count = sum(assign_variant(k, share) == CANDIDATE_VARIANT for k in KEYS)
    sd = math.sqrt(n * share * (1 - share))
    assert abs(count - n * share) <= 5 * sd


# --- comparison --------------------------------------------------------------------------------------------
def shadow_frame(n, production_sd, candidate_sd, seed=1, labelled_share=1.0, shared_sd=0.0):
    """n answered production lines and their n shadow lines, errors N(0, sd) around the same actuals, plus an
    error both models make on the same row (its difficulty) of N(0, shared_sd)."""
    rng = np.random.default_rng(seed)
    actual = rng.normal(100, 20, n)
    shared = rng.normal(0, shared_sd, n)
    production = actual + shared + rng.normal(0, production_sd, n)
    candidate = actual + shared + rng.normal(0, candidate_sd, n)
    known = np.where(np.arange(n) < labelled_share * n, actual, np.nan)
    ids = [f"r{i}" for i in range(n)]
    answered = pd.DataFrame(
        {
            "request_id": ids,
            "row": 0,
            "variant": PRODUCTION_VARIANT,
            "shadow": False,
            "model_version": "3",
            "prediction": production,
            "actual": known,
            "latency_ms": rng.uniform(5, 15, n),
            "production_prediction": np.nan,
            "production_version": None,
        }
    )
    shadow = answered.assign(
        variant=CANDIDATE_VARIANT,
        shadow=True,
        model_version="4",
        prediction=candidate,
        latency_ms=rng.uniform(20, 30, n),
        production_prediction=production,
        production_version="3",
    )
    return pd.concat([answered, shadow], ignore_index=True)


def ab_frame(n, production_sd, candidate_sd, share=0.5, seed=2):
    """n answered lines, split between the variants by each caller's key; errors N(0, sd)."""
    rng = np.random.default_rng(seed)
    ids = [f"r{i}" for i in range(n)]
    variant = [assign_variant(f"caller-{i}", share) for i in range(n)]
    actual = rng.normal(100, 20, n)
    on_candidate = np.array(variant) == CANDIDATE_VARIANT
    error = np.where(on_candidate, rng.normal(0, candidate_sd, n), rng.normal(0, production_sd, n))
    return pd.DataFrame(
        {
            "request_id": ids,
            "row": 0,
            "variant": variant,
            "shadow": False,
            "model_version": np.where(on_candidate, "4", "3"),
            "prediction": actual + error,
            "actual": actual,
            "latency_ms": 10.0,
            "production_prediction": np.nan,
            "production_version": None,
        }
    )


def test_shadow_candidate_clearly_better():
    result = compare(shadow_frame(2000, production_sd=10, candidate_sd=5), MODE_SHADOW, min_labelled=100)
    comparison = result["comparison"]
    true_difference = (5 - 10) * HALF_NORMAL
    assert result["verdict"] == "better"
    assert comparison["low"] <= true_difference <= comparison["high"] < 0
    assert comparison["low"] <= comparison["difference"] <= comparison["high"]
    assert comparison["rmse_high"] < 0
    assert comparison["labelled"] == 2000
    assert comparison["method"] == "paired bootstrap over 2000 labelled request rows"
    production, candidate = result["variants"]["production"], result["variants"]["candidate"]
    assert production["versions"] == ["3"] and candidate["versions"] == ["4"]
    assert comparison["difference"] == pytest.approx(candidate["mae"] - production["mae"])
    assert 20 <= candidate["latency_ms_p50"] <= 30 and 5 <= production["latency_ms_p95"] <= 15
    assert "candidate MAE" in result["summary"] and "2000 paired labelled rows" in result["summary"]
    assert result["summary"].endswith(": better")


def test_pairing_cancels_the_rows_own_difficulty():
    frame = shadow_frame(1000, production_sd=5, candidate_sd=2, shared_sd=10)
    paired = compare(frame, MODE_SHADOW, min_labelled=10)["comparison"]
    as_groups = compare(frame.assign(shadow=False), MODE_AB, min_labelled=10)["comparison"]  # same rows, unpaired
    assert paired["difference"] == pytest.approx(as_groups["difference"])
    assert paired["high"] - paired["low"] < 0.6 * (as_groups["high"] - as_groups["low"])


def test_ab_candidate_worse():
    result = compare(ab_frame(4000, production_sd=10, candidate_sd=15), MODE_AB, min_labelled=100)
    comparison = result["comparison"]
    n_c, n_p = result["variants"]["candidate"]["labelled"], result["variants"]["production"]["labelled"]
    assert n_c + n_p == 4000 and comparison["labelled"] == min(n_c, n_p)
    assert result["verdict"] == "worse"
    assert 0 < comparison["low"] <= (15 - 10) * HALF_NORMAL <= comparison["high"]
    assert comparison["rmse_low"] > 0
    expected_method = f"bootstrap of two independent groups ({n_c} candidate, {n_p} production labelled rows)"
    assert comparison["method"] == expected_method


@pytest.mark.parametrize(
    "frame, mode",
    [(shadow_frame(1000, 10, 10, seed=3), MODE_SHADOW), (ab_frame(2000, 10, 10, seed=4), MODE_AB)],
    ids=["shadow", "ab"],
)
def test_equal_models_are_inconclusive(frame, mode):
    result = compare(frame, mode, min_labelled=100)
    assert result["verdict"] == "inconclusive"
    assert result["comparison"]["low"] < 0 < result["comparison"]["high"]


def test_too_few_labelled_rows_is_not_enough_data():
    result = compare(shadow_frame(50, production_sd=10, candidate_sd=1), MODE_SHADOW, min_labelled=51)
    assert result["verdict"] == "not_enough_data"
    assert result["comparison"]["labelled"] == 50
    assert result["comparison"]["difference"] < 0  # the figures are still reported
    assert result["summary"].endswith("not_enough_data")


def test_unlabelled_rows_count_in_volume_not_in_labelled():
    result = compare(shadow_frame(400, 10, 5, labelled_share=0.25), MODE_SHADOW, min_labelled=10)
    for variant in ("production", "candidate"):
        assert result["variants"][variant]["rows"] == 400
        assert result["variants"][variant]["labelled"] == 100
    assert result["comparison"]["labelled"] == 100

    frame = ab_frame(1000, 10, 10)
    frame.loc[frame.index[::2], "actual"] = np.nan
    result = compare(frame, MODE_AB, min_labelled=10)
    variants = result["variants"]
    assert variants["production"]["rows"] + variants["candidate"]["rows"] == 1000
    assert variants["production"]["labelled"] + variants["candidate"]["labelled"] == 500


def test_output_is_plain_json_without_nan():
    for result in (
        compare(shadow_frame(200, 10, 5), MODE_SHADOW, min_labelled=10),
        compare(ab_frame(200, 10, 5), MODE_AB, min_labelled=10),
        compare(shadow_frame(20, 10, 5, labelled_share=0), MODE_SHADOW, min_labelled=10),
    ):
        assert json.loads(json.dumps(result, allow_nan=False)) == result
        assert result["verdict"] in VERDICTS


def test_logs_from_before_experiments_read_as_production():
    frame = ab_frame(100, 10, 10).drop(columns=["variant", "shadow", "production_prediction", "production_version"])
    result = compare(frame, MODE_AB, min_labelled=10)
    assert result["variants"]["production"]["rows"] == 100
    assert result["variants"]["candidate"]["rows"] == 0
    assert result["variants"]["candidate"]["mae"] is None
    assert result["comparison"]["difference"] is None
    assert result["verdict"] == "not_enough_data"
    json.dumps(result, allow_nan=False)


def test_same_seed_same_interval():
    frame = ab_frame(500, 10, 12)
    assert compare(frame, MODE_AB, 10, seed=7) == compare(frame, MODE_AB, 10, seed=7)


@pytest.mark.parametrize("mode", [MODE_OFF, "canary", ""])
def test_modes_without_a_comparison_are_refused(mode):
    with pytest.raises(ValueError, match=repr(mode)):
        compare(shadow_frame(10, 10, 10), mode, min_labelled=1)
