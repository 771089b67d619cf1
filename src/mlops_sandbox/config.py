"""One settings object for the whole stack.

Field names are the `.env` keys (case-insensitive). Read from the host, the defaults point at the ports
compose publishes on 127.0.0.1; inside compose, the services override the URLs with service names
(`http://mlflow:5000`, `http://minio:9000`). Nothing runs at import time: call `get_settings()`.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the stack that library code needs, with the defaults compose uses."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Host ports, published on 127.0.0.1 (used to build the host-side URLs below).
    minio_api_port: int = 9000
    mlflow_port: int = 5050
    airflow_port: int = 8080
    predictor_port: int = 8000
    evidently_port: int = 8001
    jupyter_port: int = 8888

    # S3 (MinIO here; any S3 server works with these plain settings).
    s3_endpoint_url_override: str | None = Field(default=None, validation_alias="S3_ENDPOINT_URL")
    s3_access_key_id: str = Field(
        default="minioadmin", validation_alias=AliasChoices("S3_ACCESS_KEY_ID", "MINIO_ROOT_USER")
    )
    s3_secret_access_key: str = Field(
        default="minioadmin",
        validation_alias=AliasChoices("S3_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"),
    )
    s3_region: str = "us-east-1"
    s3_addressing_style: str = "path"

    raw_data_bucket: str = "raw-data"
    dvc_bucket: str = "dvc-remote"
    mlflow_artifacts_bucket: str = "mlflow-artifacts"
    prediction_logs_bucket: str = "prediction-logs"
    monitoring_bucket: str = "monitoring"
    pipeline_bucket: str = "pipeline"

    # MLflow.
    mlflow_tracking_uri_override: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    # The scenario the prediction service and monitoring work on, and its registered model's name
    # (by default the scenario's name with dashes: house_prices -> house-prices).
    scenario: str = "house_prices"
    model_name_override: str | None = Field(default=None, validation_alias="MODEL_NAME")

    # Promotion compliance thresholds (mlops_sandbox.registry).
    promotion_min_r2: float = 0.6
    promotion_max_mape: float | None = 0.25
    promotion_tolerance: float = 0.0
    # The labelled requests an online experiment (shadow or A/B) needs before promotion trusts its comparison.
    experiment_min_labelled: int = 200

    # Decay rule: read only by mlops_sandbox.monitor.checks.DecayRule.from_settings.
    decay_max_drift_share: float = 0.5
    decay_max_mae_increase: float = 0.25
    # Scheduled monitoring checks windows up to `now - lateness` only, so that predictions still on their way to
    # MinIO (the 5 s flush, a short outage) and prompt actuals are in their window when it is checked; and it
    # checks every window since the last one it checked (ticks missed while the stack was down or a run waited
    # on retraining), up to this many windows: an older gap is reported in the status as not monitored.
    monitoring_allowed_lateness_seconds: int = Field(default=90, ge=0)
    monitoring_max_catch_up_windows: int = Field(default=288, ge=1)
    # Actuals that come after their window was checked: scheduled monitoring checks such a window again, for
    # up to this many hours after its end (0: never). Later ones are not counted.
    monitoring_recheck_hours: int = Field(default=24, ge=0)
    # Opt-in: on decay the monitoring DAG retrains and promotes a challenger that beats the champion.
    auto_retrain: bool = False

    # Airflow (REST API clients: tests, scripts, the demo).
    airflow_url_override: str | None = Field(default=None, validation_alias="AIRFLOW_URL")
    airflow_admin_user: str = "admin"
    airflow_admin_password: str = "admin"

    # Prediction service.
    predictor_url_override: str | None = Field(default=None, validation_alias="PREDICTOR_URL")
    model_poll_seconds: float = 30.0
    predictor_reload_token: str = "mlops-sandbox-reload"
    predictor_max_batch: int = 10_000
    # A request body above this many bytes gets 413 before it is read or parsed.
    predictor_max_body_bytes: int = 8 * 2**20
    predictor_workers: int = 2  # the service's worker processes (uvicorn --workers); /health reports it
    # DNS rebinding protection (mlops_sandbox.hostcheck): the only Host names the service answers (any port; IP
    # addresses always), comma-separated; `.name` allows a name and every name under it.
    predictor_allowed_hosts: str = "localhost,predictor"
    # Prediction capture (mlops_sandbox.serve.capture).
    capture_enabled: bool = True
    # A spool segment is shipped after this many records: large enough that a stream of big batches does not
    # make one S3 upload per request (each costs the worker milliseconds of CPU).
    capture_batch_records: int = 10_000
    capture_flush_seconds: float = 5.0  # or after this many seconds
    capture_spool_max_bytes: int = 1 << 30  # past this, /predict answers 503 rather than capture nothing
    capture_spool_dir: str = "/data/spool"

    # Evidently UI.
    evidently_url_override: str | None = Field(default=None, validation_alias="EVIDENTLY_URL")
    # the Host names the UI answers (as predictor_allowed_hosts): `mlops-sandbox evidently-ui`
    evidently_allowed_hosts: str = "localhost,evidently"

    # JupyterLab.
    jupyter_token: str = "mlops-sandbox"

    # Timeouts and bounded retries of the calls to S3, so that a hung MinIO fails a step (which Airflow then
    # retries) instead of hanging it: every boto3 client of the library (storage.s3_client) and DVC's remote.
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    s3_max_attempts: int = Field(default=3, ge=1)  # per request, the first one included
    # Each `dvc push` / `dvc pull` (versioning.py) is killed after this many seconds, and tried this many times.
    dvc_timeout_seconds: float = Field(default=300.0, gt=0)
    dvc_attempts: int = Field(default=3, ge=1)
    # Each call to the Evidently UI server (monitoring's snapshots) times out after this many seconds a try, and
    # is tried this many times in all (monitor.steps.remote_workspace).
    evidently_timeout_seconds: float = Field(default=60.0, gt=0)
    evidently_attempts: int = Field(default=3, ge=1)

    @property
    def model_name(self) -> str:
        return self.model_name_for(self.scenario)

    def model_name_for(self, scenario: str) -> str:
        """The registered model of a scenario: MODEL_NAME for the configured scenario, else its own name."""
        if scenario == self.scenario and self.model_name_override:
            return self.model_name_override
        return scenario.replace("_", "-")

    @property
    def s3_endpoint_url(self) -> str:
        return self.s3_endpoint_url_override or f"http://localhost:{self.minio_api_port}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri_override or f"http://localhost:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return self.airflow_url_override or f"http://localhost:{self.airflow_port}"

    @property
    def predictor_url(self) -> str:
        return self.predictor_url_override or f"http://localhost:{self.predictor_port}"

    @property
    def evidently_url(self) -> str:
        return self.evidently_url_override or f"http://localhost:{self.evidently_port}"

    @property
    def jupyter_url(self) -> str:
        return f"http://localhost:{self.jupyter_port}"

    @property
    def buckets(self) -> dict[str, str]:
        """The buckets the stack needs, by role."""
        return {
            "raw_data": self.raw_data_bucket,
            "dvc": self.dvc_bucket,
            "mlflow_artifacts": self.mlflow_artifacts_bucket,
            "prediction_logs": self.prediction_logs_bucket,
            "monitoring": self.monitoring_bucket,
            "pipeline": self.pipeline_bucket,
        }


@lru_cache
def get_settings() -> Settings:
    """The settings, read once from the environment and `.env`."""
    return Settings()
