import pytest

from mlops_sandbox.config import Settings

pytestmark = pytest.mark.unit


def test_host_urls_follow_the_published_ports(monkeypatch):
    monkeypatch.setenv("MLFLOW_PORT", "5151")
    monkeypatch.setenv("MINIO_API_PORT", "9100")
    settings = Settings(_env_file=None)
    assert settings.mlflow_tracking_uri == "http://localhost:5151"
    assert settings.s3_endpoint_url == "http://localhost:9100"


def test_compose_overrides_urls_with_service_names(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://minio:9000")
    settings = Settings(_env_file=None)
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.s3_endpoint_url == "http://minio:9000"


def test_s3_keys_fall_back_to_the_minio_root_login(monkeypatch):
    monkeypatch.setenv("MINIO_ROOT_USER", "alice")
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", "alice-secret")
    settings = Settings(_env_file=None)
    assert (settings.s3_access_key_id, settings.s3_secret_access_key) == ("alice", "alice-secret")
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "bob")
    assert Settings(_env_file=None).s3_access_key_id == "bob"


def test_env_file_is_read(tmp_path):
    env = tmp_path / ".env"
    env.write_text("RAW_DATA_BUCKET=my-raw\nAIRFLOW_PORT=18080\n")
    settings = Settings(_env_file=env)
    assert settings.buckets["raw_data"] == "my-raw"
    assert settings.airflow_url == "http://localhost:18080"


def test_buckets_cover_every_role():
    assert set(Settings(_env_file=None).buckets) == {
        "raw_data",
        "dvc",
        "mlflow_artifacts",
        "prediction_logs",
        "monitoring",
        "pipeline",
    }


def test_experiment_min_labelled_is_a_knob_with_one_default_everywhere(monkeypatch):
    from pathlib import Path

    assert Settings(_env_file=None).experiment_min_labelled == 200
    monkeypatch.setenv("EXPERIMENT_MIN_LABELLED", "50")
    assert Settings(_env_file=None).experiment_min_labelled == 50
    root = Path(__file__).resolve().parents[2]
    assert "\nEXPERIMENT_MIN_LABELLED=200\n" in (root / ".env.example").read_text()
    assert "\nEXPERIMENT_MIN_LABELLED=200\n" in (root / "deploy/base/settings/settings.env").read_text()
    assert "EXPERIMENT_MIN_LABELLED: ${EXPERIMENT_MIN_LABELLED:-200}" in (root / "compose.yaml").read_text()
