import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from botocore.exceptions import EndpointConnectionError
from s3_stand_in import FakeS3

from mlops_sandbox import registry
from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import (
    PRODUCTION,
    SERVING_AB_SHARE_TAG,
    SERVING_HISTORY_TAG,
    SERVING_MODE_TAG,
    STAGING,
    experiment_key,
    run_key,
)
from mlops_sandbox.experiment import declared_mode
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


# --- serving experiments and the online evidence for promotion ----------------------------------------------
SETTINGS = Settings(_env_file=None, experiment_min_labelled=200)
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    """One SQLite registry for the module (creating its tables takes seconds); each test uses its own model."""
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
        yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def model(mlflow_db, monkeypatch, request):
    """A registered model of three versions on the SQLite registry, which the registry module's calls reach."""
    monkeypatch.setattr(registry, "_client", lambda settings: mlflow_db)
    name = request.node.name.replace("_", "-")[:60]
    mlflow_db.create_registered_model(name)
    for _ in range(3):
        mlflow_db.create_model_version(name, source="file:///nowhere", tags={"scenario": "house_prices"})
    return name


def comparison(verdict: str, labelled: int, candidate: str = "2") -> dict:
    """A comparison object as the monitor writes it."""
    return {
        "mode": "shadow",
        "variants": {},
        "comparison": {"labelled": labelled, "difference": -1.5, "low": -2.0, "high": -1.0, "method": "paired"},
        "min_labelled": 200,
        "verdict": verdict,
        "summary": f"candidate v{candidate} RMSE 10.0 vs production v1 11.5 on {labelled} labelled rows: {verdict}.",
        "candidate_version": candidate,
        "production_version": "1",
        "computed_at": "2026-05-01T12:00:00+00:00",
    }


def use_s3(monkeypatch, objects: dict[str, dict]) -> None:
    encoded = {key: json.dumps(value).encode() for key, value in objects.items()}
    monkeypatch.setattr("mlops_sandbox.storage.s3_client", lambda settings=None: FakeS3(encoded))


@pytest.mark.parametrize(
    ("mode", "share", "message"),
    [
        ("canary", None, "unknown serving mode"),
        ("ab", None, "needs the candidate's share"),
        ("ab", 0.0, "outside"),
        ("ab", 0.6, "outside"),
        ("ab", float("nan"), "outside"),
        ("shadow", 0.2, "applies to 'ab' only"),
    ],
)
def test_set_experiment_refuses_bad_modes_and_shares(mode, share, message):
    with pytest.raises(ValueError, match=message):
        registry.set_experiment(mode, "alice", "try it", share, settings=SETTINGS)


def test_set_experiment_needs_who_and_why():
    with pytest.raises(ValueError, match="who"):
        registry.set_experiment("shadow", " ", "try it", settings=SETTINGS)


def test_an_experiment_needs_production_and_a_different_staging_candidate(model, mlflow_db):
    with pytest.raises(ValueError, match="promote one to production first"):
        registry.set_experiment("shadow", "alice", "try it", name=model, settings=SETTINGS)
    mlflow_db.set_registered_model_alias(model, PRODUCTION, "1")
    with pytest.raises(ValueError, match="promote a candidate to staging first"):
        registry.set_experiment("ab", "alice", "try it", 0.1, name=model, settings=SETTINGS)
    mlflow_db.set_registered_model_alias(model, STAGING, "1")
    with pytest.raises(ValueError, match="both version 1.*promote a different candidate"):
        registry.set_experiment("shadow", "alice", "try it", name=model, settings=SETTINGS)
    assert SERVING_MODE_TAG not in mlflow_db.get_registered_model(model).tags
    # off needs neither
    assert registry.set_experiment("off", "alice", "nothing to try", name=model, settings=SETTINGS)["mode"] == "off"


def test_set_experiment_writes_the_mode_who_why_and_history(model, mlflow_db):
    mlflow_db.set_registered_model_alias(model, PRODUCTION, "1")
    mlflow_db.set_registered_model_alias(model, STAGING, "2")
    assert registry.get_experiment(model, SETTINGS)["mode"] == "off"  # no tag yet

    state = registry.set_experiment("ab", "alice", "v2 on a tenth of callers", 0.1, name=model, settings=SETTINGS)
    assert state == registry.get_experiment(model, SETTINGS)
    assert state | {"set_at": None} == {
        "model_name": model,
        "mode": "ab",
        "share": 0.1,
        "candidate_version": "2",
        "production_version": "1",
        "set_by": "alice",
        "set_at": None,
        "reason": "v2 on a tenth of callers",
    }
    tags = mlflow_db.get_registered_model(model).tags
    assert (tags[SERVING_MODE_TAG], tags[SERVING_AB_SHARE_TAG]) == ("ab", "0.1")
    assert tags["serving_mode.set_at"] == state["set_at"] and state["set_at"].endswith("+00:00")

    registry.set_experiment("shadow", "bob", "pairs, not groups", name=model, settings=SETTINGS)
    state = registry.set_experiment("off", "bob", "enough seen", name=model, settings=SETTINGS)
    assert (state["mode"], state["share"], state["set_by"]) == ("off", 0.0, "bob")
    tags = mlflow_db.get_registered_model(model).tags
    assert tags[SERVING_AB_SHARE_TAG] == "0"
    history = json.loads(tags[SERVING_HISTORY_TAG])
    assert [(h["mode"], h["share"], h["by"]) for h in history] == [
        ("ab", 0.1, "alice"),
        ("shadow", 0.0, "bob"),
        ("off", 0.0, "bob"),
    ]
    assert history[0] | {"at": None} == {
        "mode": "ab",
        "share": 0.1,
        "candidate_version": "2",
        "production_version": "1",
        "by": "alice",
        "at": None,
        "reason": "v2 on a tenth of callers",
    }

    mlflow_db.set_registered_model_tag(model, SERVING_MODE_TAG, "canary")  # unknown: read as off
    assert registry.get_experiment(model, SETTINGS)["mode"] == "off"
    # an A/B share out of bounds (a tag edited by hand): off, as the prediction service reads it
    mlflow_db.set_registered_model_tag(model, SERVING_MODE_TAG, "ab")
    mlflow_db.set_registered_model_tag(model, SERVING_AB_SHARE_TAG, "0.9")
    assert (
        registry.get_experiment(model, SETTINGS)["mode"],
        declared_mode({SERVING_MODE_TAG: "ab", SERVING_AB_SHARE_TAG: "0.9"})[:2],
    ) == ("off", ("off", 0.0))


def test_the_history_keeps_the_newest_changes_that_fit_a_tag():
    entry = {"mode": "shadow", "share": 0.0, "by": "alice", "reason": "x" * 400}
    history = None
    for i in range(40):
        history = registry._history_tag(history, entry | {"at": str(i)})
    kept = json.loads(history)
    assert len(history) <= registry.MAX_TAG_CHARS and 1 < len(kept) < 40
    assert kept[-1]["at"] == "39" and [int(e["at"]) for e in kept] == list(range(40 - len(kept), 40))
    assert json.loads(registry._history_tag("not json", entry)) == [entry]


def test_latest_comparison_is_the_newest_object_of_that_candidate(monkeypatch):
    use_s3(
        monkeypatch,
        {
            experiment_key("house_prices", "2", T0): comparison("inconclusive", 50),
            experiment_key("house_prices", "2", T0.replace(hour=13)): comparison("better", 300),
            experiment_key("house_prices", "3", T0.replace(hour=14)): comparison("worse", 900, "3"),
        },
    )
    assert registry.latest_comparison(SETTINGS, "house_prices", "2")["verdict"] == "better"
    assert registry.latest_comparison(SETTINGS, "house_prices", 4) is None
    assert registry.latest_comparison(SETTINGS, "delivery_delay", "2") is None


def test_online_comparison_check():
    none = registry.online_comparison_check(None, "2", 200)
    assert none.passed and none.detail == "no online experiment compared version 2 with production"

    worse = registry.online_comparison_check(comparison("worse", 500), "2", 200)
    assert not worse.passed
    assert "RMSE 10.0 vs production v1 11.5 on 500 labelled rows" in worse.detail
    assert "500 labelled, minimum 200" in worse.detail and "worse" in worse.detail

    few = registry.online_comparison_check(comparison("better", 120), "2", 200)
    assert not few.passed and "too few labelled" in few.detail and "120 labelled, minimum 200" in few.detail

    better = registry.online_comparison_check(comparison("better", 200), "2", 200)
    assert better.passed and better.name == "online_comparison" and "200 labelled, minimum 200" in better.detail
    assert registry.online_comparison_check(comparison("inconclusive", 250), "2", 200).passed


def production_checks(monkeypatch, mlflow_db, model) -> list:
    """The production checks of version 2 (staged, no lineage: no offline comparison), without a logged model."""
    monkeypatch.setattr("mlflow.models.get_model_info", lambda uri: SimpleNamespace(signature=None))
    mlflow_db.set_registered_model_alias(model, STAGING, "2")
    return registry.compliance_checks(SETTINGS, model, "2", PRODUCTION, Thresholds(), mlflow_db)


def test_promotion_to_production_checks_the_online_comparison_of_the_versions_scenario(model, mlflow_db, monkeypatch):
    use_s3(monkeypatch, {})
    (online,) = [c for c in production_checks(monkeypatch, mlflow_db, model) if c.name == "online_comparison"]
    assert online.passed and "no online experiment" in online.detail

    mlflow_db.set_model_version_tag(model, "2", "scenario", "delivery_delay")
    use_s3(monkeypatch, {experiment_key("delivery_delay", "2", T0): comparison("worse", 400)})
    (online,) = [c for c in production_checks(monkeypatch, mlflow_db, model) if c.name == "online_comparison"]
    assert not online.passed and "400 labelled, minimum 200" in online.detail
    staging = registry.compliance_checks(SETTINGS, model, "2", STAGING, Thresholds(), mlflow_db)
    assert "online_comparison" not in {c.name for c in staging}


def test_an_unreachable_bucket_fails_the_online_check_with_the_error(model, mlflow_db, monkeypatch):
    class DownS3(FakeS3):
        def paginate(self, Bucket, Prefix):  # noqa: N803
            raise EndpointConnectionError(endpoint_url="http://minio:9000")

    monkeypatch.setattr("mlops_sandbox.storage.s3_client", lambda settings=None: DownS3({}))
    (online,) = [c for c in production_checks(monkeypatch, mlflow_db, model) if c.name == "online_comparison"]
    assert not online.passed and "http://minio:9000" in online.detail


def test_promote_records_the_online_comparison_when_promoted_and_when_refused(model, mlflow_db, monkeypatch):
    evidence = "candidate v2 RMSE 10.0 vs production v1 11.5 on 300 labelled rows: better; 300 labelled, minimum 200"
    checks = [
        CheckResult("signature", True, "present"),
        CheckResult("online_comparison", True, evidence),
    ]
    monkeypatch.setattr(registry, "_checks_and_evidence", lambda *args: (checks, evidence))
    registry.promote("2", PRODUCTION, "alice", "better online", model, settings=SETTINGS)
    tags = mlflow_db.get_model_version(model, "2").tags
    assert tags["production.online_comparison"] == evidence
    assert {c["name"] for c in json.loads(tags["production.checks"])} == {"signature", "online_comparison"}

    refused = [
        CheckResult("signature", True, "present"),
        CheckResult("online_comparison", False, "worse"),
    ]
    monkeypatch.setattr(registry, "_checks_and_evidence", lambda *args: (refused, "worse"))
    with pytest.raises(PromotionRefused) as err:
        registry.promote("3", PRODUCTION, "alice", "try", model, settings=SETTINGS)
    assert err.value.checks == refused and err.value.failed == refused[1:]
    tags = mlflow_db.get_model_version(model, "3").tags
    assert (
        tags["production.online_comparison"] == "worse"
        and "online_comparison: worse" in tags["production.refused_because"]
    )


def test_a_retrained_pipeline_run_forgets_the_runs_of_earlier_attempts_unless_registered(mlflow_db):
    from mlops_sandbox.pipeline import _forget_earlier_runs

    experiment = mlflow_db.create_experiment("retrained-pipeline-run")
    killed, registered, other_pipeline_run, newest = (
        mlflow_db.create_run(experiment, tags={"pipeline_run_id": run}).info.run_id
        for run in ("manual__1", "manual__1", "manual__2", "manual__1")
    )
    mlflow_db.create_registered_model("retrained-pipeline-run")
    mlflow_db.create_model_version("retrained-pipeline-run", source="file:///nowhere", run_id=registered)

    assert _forget_earlier_runs(mlflow_db, experiment, "manual__1", keep=newest) == [killed]
    left = {r.info.run_id for r in mlflow_db.search_runs([experiment])}
    assert left == {registered, other_pipeline_run, newest}


def test_the_automatic_model_card_never_replaces_one_a_person_wrote(model, mlflow_db):
    settings = Settings(_env_file=None)
    assert registry.write_model_card_unless_written("1", "automatic", "auto-retrain-policy", model, settings)
    assert mlflow_db.get_model_version(model, "1").description == "automatic"
    registry.set_model_card("2", "Written by Ada: trained on March data.", "ada", name=model, settings=settings)
    assert not registry.write_model_card_unless_written("2", "automatic", "auto-retrain-policy", model, settings)
    card = mlflow_db.get_model_version(model, "2")
    assert card.description == "Written by Ada: trained on March data." and card.tags["model_card.by"] == "ada"
