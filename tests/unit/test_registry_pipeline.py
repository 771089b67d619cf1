import pytest

from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import run_key
from mlops_sandbox.pipeline import MAX_TAG_CHARS, lineage_tags
from mlops_sandbox.registry import CheckResult, PromotionRefused, Thresholds
from mlops_sandbox.versioning import DataVersion

pytestmark = pytest.mark.unit

DATA = DataVersion("ab" + "c" * 30, 123, "features.parquet", "s3://dvc-remote/house_prices")


def test_run_ids_become_safe_keys():
    assert run_key("manual__2026-11-23T23:59:00.123+00:00") == "manual__2026-11-23T23-59-00.123-00-00"
    with pytest.raises(ValueError):
        run_key("::")


def test_dvc_pointer_round_trips_through_tags_and_names_the_remote_object():
    assert DataVersion.from_tags(DATA.tags()) == DATA
    assert DATA.object_key == f"house_prices/files/md5/ab/{'c' * 30}"
    with pytest.raises(ValueError, match="no DVC data version"):
        DataVersion.from_tags({"dvc_data_version": "x"})


def test_lineage_tags_stay_within_mlflow_limits():
    keys = [f"house_prices/date=2026-01-01/batch-{i:05d}.csv" for i in range(500)]
    tags = lineage_tags(keys, DATA, "run-1", "house_prices")
    assert len(tags["raw_batch_keys"]) <= MAX_TAG_CHARS + 60
    assert tags["raw_batch_keys"].endswith("(+more; see lineage/raw_keys.json)")
    assert tags["raw_batch_count"] == "500" and tags["dvc_data_version"] == DATA.md5


def test_refusal_names_every_failed_check():
    failed = [CheckResult("model_card", False, "no model card"), CheckResult("metric:test_r2", False, "0.1 < 0.6")]
    err = PromotionRefused("house-prices", "4", "staging", failed)
    assert "model_card: no model card" in str(err) and "metric:test_r2" in str(err) and "version 4" in str(err)


def test_thresholds_come_from_settings_and_can_be_overridden():
    settings = Settings(_env_file=None, promotion_min_r2=0.7, promotion_tolerance=0.05)
    assert Thresholds.from_settings(settings) == Thresholds(min_r2=0.7, max_mape=0.25, production_tolerance=0.05)
    assert Thresholds.from_settings(settings, min_r2=0.9).min_r2 == 0.9


def test_model_name_follows_the_scenario_unless_set():
    assert Settings(_env_file=None).model_name == "house-prices"
    assert Settings(_env_file=None, scenario="delivery_delay").model_name == "delivery-delay"
    named = Settings(_env_file=None, MODEL_NAME="houses")
    assert named.model_name == "houses" and named.model_name_for("delivery_delay") == "delivery-delay"
