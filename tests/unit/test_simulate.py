from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from mlops_sandbox import catalog
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import Drift, batch_key, batch_times, generate_batch, parse_drift

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("scenario", sorted(catalog.SECTORS))
def test_same_seed_and_clock_give_the_same_rows(scenario):
    a = generate_batch(scenario, 42, T0, 200)
    assert a.equals(generate_batch(scenario, 42, T0, 200))
    assert not a.equals(generate_batch(scenario, 43, T0, 200))
    assert not a.equals(generate_batch(scenario, 42, T0 + timedelta(hours=1), 200))


@pytest.mark.parametrize("scenario", sorted(catalog.SECTORS))
def test_batches_follow_their_schema(scenario):
    schema = get_schema(scenario)
    frame = generate_batch(scenario, 1, T0, 1000)
    assert list(frame.columns) == ["record_id", "event_time", *schema.feature_names, schema.target.name]
    assert frame["record_id"].is_unique
    for column in schema.features:
        values = frame[column.name]
        if column.kind == "category":
            assert set(values) <= set(column.categories)
        else:
            assert values.between(column.minimum, column.maximum).all(), column.name


def test_covariate_drift_shifts_features_from_its_start_only():
    drift = Drift("covariate", T0 + timedelta(hours=2), 1.0)
    before = generate_batch("house_prices", 5, T0 + timedelta(hours=1), 2000, [drift])
    after = generate_batch("house_prices", 5, T0 + timedelta(hours=2), 2000, [drift])
    baseline = generate_batch("house_prices", 5, T0 + timedelta(hours=1), 2000)
    assert before.equals(baseline)
    assert after["area"].median() > 1.3 * before["area"].median()
    assert (after["airconditioning"] == "yes").mean() > (before["airconditioning"] == "yes").mean() + 0.2


def test_concept_drift_changes_prices_of_the_same_houses():
    when = T0 + timedelta(hours=3)
    plain = generate_batch("house_prices", 5, when, 2000)
    drifted = generate_batch("house_prices", 5, when, 2000, [Drift("concept", T0, 1.0)])
    features = [c for c in plain.columns if c != "price"]
    assert plain[features].equals(drifted[features])
    ratio = drifted["price"] / plain["price"]
    assert ratio.std() > 0.1  # not a constant rescale: the relationship itself changed


def test_quality_drift_injects_missing_out_of_range_and_unknown_values():
    frame = generate_batch("house_prices", 5, T0, 3000, [Drift("quality", T0, 1.0)])
    schema = get_schema("house_prices")
    assert frame[schema.feature_names].isna().any(axis=1).sum() > 0
    assert (frame[schema.categorical_features] == "unknown").any(axis=1).sum() > 0
    numeric = frame[schema.numeric_features].astype(float)
    low = (numeric < [schema.column(c).minimum for c in schema.numeric_features]).any(axis=1)
    high = (numeric > [schema.column(c).maximum for c in schema.numeric_features]).any(axis=1)
    assert (low | high).sum() > 0


def test_mlp_friendly_target_is_non_linear_in_area():
    frame = generate_batch("house_prices", 3, T0, 5000)
    slope_small = np.polyfit(frame.query("area < 4000")["area"], frame.query("area < 4000")["price"], 1)[0]
    slope_large = np.polyfit(frame.query("area > 8000")["area"], frame.query("area > 8000")["price"], 1)[0]
    assert slope_small != pytest.approx(slope_large, rel=0.2)


def test_drift_specs_parse_and_bad_ones_are_refused():
    drift = parse_drift("concept,2026-01-02T00:00Z,0.7")
    assert drift == Drift("concept", datetime(2026, 1, 2, tzinfo=UTC), 0.7)
    for bad in ["concept,2026-01-02", "weather,2026-01-02T00:00Z,1", "covariate,2026-01-02T00:00Z,-1"]:
        with pytest.raises(ValueError):
            parse_drift(bad)


def test_clock_and_keys():
    times = batch_times(T0, timedelta(minutes=30), 3)
    assert times[-1] == T0 + timedelta(hours=1)
    assert batch_key("house_prices", times[1]) == "house_prices/date=2026-01-01/batch-20260101T003000Z.csv"
    with pytest.raises(ValueError):
        generate_batch("no_such_sector", 1, T0, 10)
    with pytest.raises(ValueError):
        generate_batch("house_prices", 1, datetime(2026, 1, 1), 10)  # naive time


def test_next_clock_comes_after_the_newest_batch_in_the_bucket():
    from mlops_sandbox.simulate import next_clock

    class Bucket:
        def __init__(self, keys):
            self.keys = keys

        def get_paginator(self, _):
            return self

        def paginate(self, Bucket, Prefix):  # noqa: N803 - boto3's names
            yield {"Contents": [{"Key": k} for k in self.keys if k.startswith(Prefix)]}

    keys = [batch_key("house_prices", T0 + timedelta(hours=h)) for h in (5, 1, 30)]
    assert next_clock(Bucket(keys), "raw", "house_prices", T0) == T0 + timedelta(hours=31)
    later = T0 + timedelta(days=10)
    assert next_clock(Bucket(keys), "raw", "house_prices", later) == later
    assert next_clock(Bucket([]), "raw", "house_prices", T0) == T0


class PutBucket:
    """list + put over a dict of objects."""

    def __init__(self, keys=()):
        self.objects = {k: b"" for k in keys}

    def get_paginator(self, _):
        return self

    def paginate(self, Bucket, Prefix):  # noqa: N803 - boto3's names
        yield {"Contents": [{"Key": k} for k in sorted(self.objects) if k.startswith(Prefix)]}

    def put_object(self, Bucket, Key, Body, ContentType):  # noqa: N803
        self.objects[Key] = Body


def test_land_batches_next_places_new_batches_after_the_newest_and_never_overwrites():
    from mlops_sandbox.simulate import land_batches

    far = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=30)
    bucket = PutBucket([batch_key("house_prices", far)])
    keys = land_batches(bucket, "raw", "house_prices", 3, 5, start="next")
    assert keys == [batch_key("house_prices", far + timedelta(hours=h)) for h in (1, 2, 3)]
    assert len(bucket.objects) == 4
    again = land_batches(bucket, "raw", "house_prices", 2, 5, start="next")
    assert again[0] == batch_key("house_prices", far + timedelta(hours=4)) and len(bucket.objects) == 6


def test_land_batches_refuses_a_start_that_is_neither_a_time_nor_next():
    from mlops_sandbox.simulate import land_batches

    with pytest.raises(ValueError, match="'next'"):
        land_batches(PutBucket(), "raw", "house_prices", 1, 5, start="tomorrow")
    with pytest.raises(ValueError, match="at least 1"):
        land_batches(PutBucket(), "raw", "house_prices", 0, 5)
