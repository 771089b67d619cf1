"""Serving experiments, without I/O: which callers an A/B experiment sends to the candidate (the `staging`
version), and how the candidate's captured predictions compare with production's once actuals are known.

Two designs, named by the registered model's serving mode (`contracts.SERVING_MODES`):

- `shadow`: production answers every caller and the candidate predicts the same rows beside it, so each
  labelled row gives a pair of errors on the same input. The comparison is paired: one bootstrap resamples
  the pairs, which cancels the rows' own difficulty and needs far fewer rows than two separate groups.
- `ab`: a sticky share of callers is answered by the candidate and the rest by production. The groups see
  different rows, so each is resampled on its own.

The caller joins prediction-log lines with their actuals into one frame; `compare` returns a JSON-ready verdict.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from mlops_sandbox.contracts import (
    CANDIDATE_VARIANT,
    MAX_AB_SHARE,
    MODE_AB,
    MODE_OFF,
    MODE_SHADOW,
    PRODUCTION_VARIANT,
    SERVING_AB_SHARE_TAG,
    SERVING_MODE_TAG,
    SERVING_MODES,
)

VERDICTS = ("better", "worse", "inconclusive", "not_enough_data")
COMPARABLE_MODES = (MODE_SHADOW, MODE_AB)

_BOOTSTRAP_CELLS = 4_000_000  # resampled values held at once: bounds memory on large windows


# --- assignment --------------------------------------------------------------------------------------------
def bucket(key: str) -> float:
    """A caller key's place in [0, 1), the same in every process and after every restart.

    Args:
        key: what identifies the caller (a user or client id); its UTF-8 bytes are hashed.

    Returns:
        The first 8 bytes of the key's BLAKE2b digest as a big-endian unsigned integer, divided by 2**64. Python's
        `hash()` is salted per process, so it would move callers between variants on each restart.
    """
    digest = hashlib.blake2b(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_variant(key: str, share: float) -> str:
    """The variant that answers caller `key` when the candidate gets `share` of callers.

    Sticky (a key always gets the same answer at a given share) and monotone (a key on the candidate at
    share 0.1 stays on it at 0.2), so raising the share only moves production callers to the candidate.

    Args:
        key: the caller's key, see `bucket`.
        share: the candidate's share of callers, in [0, MAX_AB_SHARE].

    Returns:
        CANDIDATE_VARIANT when `bucket(key) < share`, else PRODUCTION_VARIANT.

    Raises:
        ValueError: when `share` is outside [0, MAX_AB_SHARE] (or not a number).
    """
    if not 0 <= share <= MAX_AB_SHARE:  # NaN fails this too
        raise ValueError(f"A/B share {share!r} is outside [0, {MAX_AB_SHARE}]")
    return CANDIDATE_VARIANT if bucket(key) < share else PRODUCTION_VARIANT


# --- comparison --------------------------------------------------------------------------------------------
def declared_mode(tags: dict[str, str]) -> tuple[str, float, str | None]:
    """The mode and share that a registered model's tags declare, and what is wrong with them (None: nothing).
    A mode or share that cannot be read declares no experiment. The one reading of those tags: the prediction
    service runs what it returns, and the registry (`registry.get_experiment`) reports it."""
    mode = tags.get(SERVING_MODE_TAG) or MODE_OFF
    if mode not in SERVING_MODES:
        return MODE_OFF, 0.0, f"unknown {SERVING_MODE_TAG} {mode!r} (one of {', '.join(SERVING_MODES)})"
    if mode != MODE_AB:
        return mode, 0.0, None
    try:
        share = float(tags.get(SERVING_AB_SHARE_TAG) or "nan")
    except ValueError:
        share = float("nan")
    if not 0 < share <= MAX_AB_SHARE:
        return MODE_OFF, 0.0, f"{SERVING_AB_SHARE_TAG} must be above 0 and at most {MAX_AB_SHARE}"
    return mode, share, None


def compare(
    rows: pd.DataFrame,
    mode: str,
    min_labelled: int,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """The candidate against production on captured predictions joined with their actuals.

    Args:
        rows: one row per prediction-log line, with columns `request_id`, `row`, `variant`, `shadow`,
            `model_version`, `prediction`, `actual` (NaN until labelled), `latency_ms`, and on shadow lines
            `production_prediction` and `production_version`. A missing `variant` reads as production, a
            missing `shadow` as False (logs from before experiments), other missing columns as empty.
        mode: MODE_SHADOW (paired comparison of shadow lines) or MODE_AB (two independent groups).
        min_labelled: fewer labelled pairs (shadow), or labelled rows in the smaller group (ab): no verdict.
        confidence: the bootstrap interval's coverage.
        resamples: bootstrap resamples.
        seed: seeds `np.random.default_rng`, so the same rows give the same interval.

    Returns:
        A JSON-ready dict (plain numbers, None where a figure is unknown): `mode`, `variants` (per variant:
        `versions`, `rows`, `labelled`, `mae`, `rmse`, `latency_ms_p50`, `latency_ms_p95`), `comparison`
        (candidate minus production MAE and RMSE with their intervals), `min_labelled`, `verdict` (one of
        VERDICTS) and a one-sentence `summary`. In shadow mode the variants' `labelled`, `mae` and `rmse` are
        over the labelled pairs, so they agree with the difference; `rows` and latency come from production's
        answered lines and the candidate's shadow lines.

    Raises:
        ValueError: for a mode other than shadow or ab (MODE_OFF has nothing to compare), a confidence
            outside (0, 1), or fewer than one resample.
    """
    if mode == MODE_OFF:
        raise ValueError(f"serving mode {MODE_OFF!r} runs no experiment, so nothing to compare; use {COMPARABLE_MODES}")
    if mode not in COMPARABLE_MODES:
        raise ValueError(f"unknown serving mode {mode!r}; comparable: {COMPARABLE_MODES}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r} is outside (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples!r}")

    frame = _normalise(rows)
    answered = frame[~frame["shadow"]]
    production_lines = answered[answered["variant"] == PRODUCTION_VARIANT]
    rng = np.random.default_rng(seed)

    if mode == MODE_SHADOW:
        shadow_lines = frame[frame["shadow"] & (frame["variant"] == CANDIDATE_VARIANT)]
        pairs = shadow_lines.dropna(subset=["actual", "prediction", "production_prediction"])
        actual = pairs["actual"].to_numpy(float)
        candidate_errors = pairs["prediction"].to_numpy(float) - actual
        production_errors = pairs["production_prediction"].to_numpy(float) - actual
        production_versions = [*production_lines["model_version"], *shadow_lines["production_version"]]
        variants = {
            PRODUCTION_VARIANT: _variant(production_lines, production_versions, production_errors),
            CANDIDATE_VARIANT: _variant(shadow_lines, shadow_lines["model_version"], candidate_errors),
        }
        labelled = len(pairs)
        intervals = _paired_bootstrap(candidate_errors, production_errors, confidence, resamples, rng)
        method = f"paired bootstrap over {labelled} labelled request rows"
        basis = f"{labelled} paired labelled rows"
    else:
        candidate_lines = answered[answered["variant"] == CANDIDATE_VARIANT]
        candidate_errors = _errors(candidate_lines)
        production_errors = _errors(production_lines)
        variants = {
            PRODUCTION_VARIANT: _variant(production_lines, production_lines["model_version"], production_errors),
            CANDIDATE_VARIANT: _variant(candidate_lines, candidate_lines["model_version"], candidate_errors),
        }
        n_c, n_p = len(candidate_errors), len(production_errors)
        labelled = min(n_c, n_p)
        intervals = _independent_bootstrap(candidate_errors, production_errors, confidence, resamples, rng)
        method = f"bootstrap of two independent groups ({n_c} candidate, {n_p} production labelled rows)"
        basis = f"{n_c} candidate and {n_p} production labelled rows"

    difference, low, high, rmse_difference, rmse_low, rmse_high = intervals
    verdict = _verdict(labelled, min_labelled, low, high)
    comparison = {
        "metric": "mae",
        "labelled": labelled,
        "difference": difference,
        "low": low,
        "high": high,
        "rmse_difference": rmse_difference,
        "rmse_low": rmse_low,
        "rmse_high": rmse_high,
        "confidence": float(confidence),
        "method": method,
    }
    return {
        "mode": mode,
        "variants": variants,
        "comparison": comparison,
        "min_labelled": int(min_labelled),
        "verdict": verdict,
        "summary": _summary(variants, comparison, basis, min_labelled, verdict),
    }


def _normalise(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with every column `compare` reads, of the type it reads it as, and each request row once."""
    frame = rows.copy()
    identified = {"request_id", "row"} <= set(frame.columns)
    defaults = {
        "request_id": None,
        "row": 0,
        "variant": PRODUCTION_VARIANT,
        "shadow": False,
        "model_version": None,
        "prediction": np.nan,
        "actual": np.nan,
        "latency_ms": np.nan,
        "production_prediction": np.nan,
        "production_version": None,
    }
    for column, default in defaults.items():
        if column not in frame:
            frame[column] = default
    frame["variant"] = frame["variant"].where(frame["variant"].notna(), PRODUCTION_VARIANT).astype(str)
    frame["shadow"] = frame["shadow"].map(lambda v: False if pd.isna(v) else bool(v)).astype(bool)
    for column in ("prediction", "actual", "latency_ms", "production_prediction"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    if identified and frame["request_id"].notna().all():
        # a line uploaded twice (a retried upload) is one prediction, not two
        frame = frame.drop_duplicates(subset=["request_id", "row", "variant", "shadow"], keep="last")
    return frame


def _errors(lines: pd.DataFrame) -> np.ndarray:
    """Prediction minus actual on the labelled lines."""
    labelled = lines.dropna(subset=["actual", "prediction"])
    return labelled["prediction"].to_numpy(float) - labelled["actual"].to_numpy(float)


def _variant(lines: pd.DataFrame, versions, errors: np.ndarray) -> dict:
    """One variant's figures: versions seen, volume, error on its labelled rows, latency per request."""
    if lines["request_id"].notna().all():
        latencies = lines.drop_duplicates(subset=["request_id"])["latency_ms"]
    else:
        latencies = lines["latency_ms"]
    latencies = latencies.dropna().to_numpy(float)
    return {
        "versions": sorted({str(v) for v in versions if not pd.isna(v)}),
        "rows": int(len(lines)),
        "labelled": int(len(errors)),
        "mae": _number(np.mean(np.abs(errors))) if len(errors) else None,
        "rmse": _number(np.sqrt(np.mean(errors**2))) if len(errors) else None,
        "latency_ms_p50": _number(np.percentile(latencies, 50)) if len(latencies) else None,
        "latency_ms_p95": _number(np.percentile(latencies, 95)) if len(latencies) else None,
    }


def _chunks(resamples: int, width: int):
    """Resample counts whose index matrices (count x width) stay under `_BOOTSTRAP_CELLS` cells each."""
    step = max(1, _BOOTSTRAP_CELLS // max(width, 1))
    for start in range(0, resamples, step):
        yield min(step, resamples - start)


def _paired_bootstrap(candidate: np.ndarray, production: np.ndarray, confidence, resamples, rng) -> tuple:
    """MAE and RMSE differences (candidate minus production) on paired errors, each with its interval.

    Every resample draws request rows with replacement and keeps both models' errors on the drawn rows.
    """
    n = len(candidate)
    if n == 0:
        return (None,) * 6
    absolute = np.abs(candidate) - np.abs(production)
    squared_c, squared_p = candidate**2, production**2
    mae, rmse = [], []
    for size in _chunks(resamples, n):
        idx = rng.integers(0, n, size=(size, n))
        mae.append(absolute[idx].mean(axis=1))
        rmse.append(np.sqrt(squared_c[idx].mean(axis=1)) - np.sqrt(squared_p[idx].mean(axis=1)))
    mae_difference = np.mean(np.abs(candidate)) - np.mean(np.abs(production))
    rmse_difference = np.sqrt(np.mean(squared_c)) - np.sqrt(np.mean(squared_p))
    return (
        *_estimate(mae_difference, np.concatenate(mae), confidence),
        *_estimate(rmse_difference, np.concatenate(rmse), confidence),
    )


def _independent_bootstrap(candidate: np.ndarray, production: np.ndarray, confidence, resamples, rng) -> tuple:
    """MAE and RMSE differences (candidate minus production) of two groups, each group resampled on its own."""
    if len(candidate) == 0 or len(production) == 0:
        return (None,) * 6

    def resampled(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(errors)
        absolute, squared = np.abs(errors), errors**2
        mae, rmse = [], []
        for size in _chunks(resamples, n):
            idx = rng.integers(0, n, size=(size, n))
            mae.append(absolute[idx].mean(axis=1))
            rmse.append(np.sqrt(squared[idx].mean(axis=1)))
        return np.concatenate(mae), np.concatenate(rmse)

    candidate_mae, candidate_rmse = resampled(candidate)
    production_mae, production_rmse = resampled(production)
    mae_difference = np.mean(np.abs(candidate)) - np.mean(np.abs(production))
    rmse_difference = np.sqrt(np.mean(candidate**2)) - np.sqrt(np.mean(production**2))
    return (
        *_estimate(mae_difference, candidate_mae - production_mae, confidence),
        *_estimate(rmse_difference, candidate_rmse - production_rmse, confidence),
    )


def _estimate(point: float, resampled: np.ndarray, confidence: float) -> tuple:
    """The point difference and the percentile interval of its resampled values."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return _number(point), _number(low), _number(high)


def _verdict(labelled: int, min_labelled: int, low: float | None, high: float | None) -> str:
    """better when the whole MAE interval is below zero, worse when above, else inconclusive."""
    if labelled < max(min_labelled, 1) or low is None or high is None:
        return "not_enough_data"
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "inconclusive"


def _summary(variants: dict, comparison: dict, basis: str, min_labelled: int, verdict: str) -> str:
    """One sentence a person reads in an alert or a log line."""
    candidate_mae = variants[CANDIDATE_VARIANT]["mae"]
    production_mae = variants[PRODUCTION_VARIANT]["mae"]
    if comparison["difference"] is None:
        return f"no labelled rows to compare yet ({basis}, {min_labelled} needed): {verdict}"
    level = f"{comparison['confidence'] * 100:g}%"
    sentence = (
        f"candidate MAE {_text(candidate_mae)} vs production {_text(production_mae)} on {basis}: "
        f"difference {_text(comparison['difference'])} "
        f"({level} interval {_text(comparison['low'])} to {_text(comparison['high'])})"
    )
    if verdict == "not_enough_data":
        return f"{sentence}; {min_labelled} labelled rows needed: {verdict}"
    return f"{sentence}: {verdict}"


def _number(value) -> float | None:
    """A plain float for JSON; None for NaN or infinity."""
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value: float | None) -> str:
    """A figure as a sentence shows it: 4 significant digits, thousands separated when large."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
