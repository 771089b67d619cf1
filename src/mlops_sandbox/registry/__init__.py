"""Human-in-the-loop promotion (seed steps 4-7) with MLflow 3 registry aliases.

The seeds' stages None -> Staging -> Production are the aliases `staging` and `production`. Every move
runs compliance checks and is refused, with the reasons named, if one fails. Each move records who, when
and why as version tags, and production keeps its history so that a rollback is one call.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.contracts import ALIASES, PRODUCTION, STAGING

LINEAGE_TAGS = ("dvc_data_version", "dvc_data_size", "dvc_data_path", "dvc_remote", "raw_batch_keys")
MIN_MODEL_CARD_CHARS = 20


@dataclass(frozen=True)
class Thresholds:
    """What a version's test metrics must clear, and how much worse than production it may be."""

    min_r2: float = 0.6
    max_mape: float | None = 0.25
    production_tolerance: float = 0.0  # candidate RMSE <= champion RMSE * (1 + tolerance)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> Thresholds:
        values = {
            "min_r2": settings.promotion_min_r2,
            "max_mape": settings.promotion_max_mape,
            "production_tolerance": settings.promotion_tolerance,
        }
        return cls(**(values | {k: v for k, v in overrides.items() if v is not None}))


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


class PromotionRefused(Exception):
    """A move refused by its compliance checks; `failed` names each reason."""

    def __init__(self, name: str, version: str, alias: str, failed: list[CheckResult]):
        self.failed = failed
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        super().__init__(f"refused to move {name} version {version} to '{alias}': {reasons}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _client(settings: Settings):
    from mlops_sandbox.tracking import use_tracking_server

    return use_tracking_server(settings)


def alias_version(client, name: str, alias: str) -> str | None:
    """The version holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def evaluate_versions_on_test_set(settings: Settings, name: str, candidate, champion_version: str) -> dict:
    """RMSE of the candidate and of the champion on the candidate's held-out test set (fetched via DVC)."""
    import mlflow
    import pandas as pd

    from mlops_sandbox.schema import get_schema
    from mlops_sandbox.train import evaluate
    from mlops_sandbox.train.models import model_input
    from mlops_sandbox.versioning import DataVersion, pull

    scenario = candidate.tags.get("scenario", settings.scenario)
    schema = get_schema(scenario)
    data_version = DataVersion.from_tags(candidate.tags)
    with tempfile.TemporaryDirectory() as tmp:
        table = pd.read_parquet(pull(data_version, settings, Path(tmp) / data_version.path))
    test = table[table["split"] == "test"]
    scores = {}
    for label, version in (("candidate", candidate.version), ("champion", champion_version)):
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        scores[label] = evaluate(lambda f, m=model: m.predict(model_input(f, schema)), test, schema)["rmse"]
    scores["test_rows"] = len(test)
    return scores


def compliance_checks(
    settings: Settings, name: str, version: str, alias: str, thresholds: Thresholds, client=None
) -> list[CheckResult]:
    """Every check for moving `version` to `alias`; see the module docstring."""
    import mlflow

    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}; use one of {ALIASES}")
    client = client or _client(settings)
    mv = client.get_model_version(name, version)
    checks: list[CheckResult] = []

    info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    checks.append(
        CheckResult(
            "signature",
            info.signature is not None,
            "present" if info.signature else "the model was logged without a signature",
        )
    )
    missing = [t for t in LINEAGE_TAGS if not mv.tags.get(t)]
    checks.append(
        CheckResult(
            "lineage",
            not missing,
            "DVC data version and raw batch keys present" if not missing else f"missing lineage tags {missing}",
        )
    )
    card = (mv.description or "").strip()
    checks.append(
        CheckResult(
            "model_card",
            len(card) >= MIN_MODEL_CARD_CHARS,
            f"{len(card)} characters"
            if len(card) >= MIN_MODEL_CARD_CHARS
            else f"no model card: set a description of at least {MIN_MODEL_CARD_CHARS} characters "
            f"(mlops-sandbox model describe {version} --text '...')",
        )
    )
    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    r2 = metrics.get("test_r2")
    checks.append(
        CheckResult(
            "metric:test_r2", r2 is not None and r2 >= thresholds.min_r2, f"test_r2={r2} (minimum {thresholds.min_r2})"
        )
    )
    if thresholds.max_mape is not None and "test_mape" in metrics:
        mape = metrics["test_mape"]
        checks.append(
            CheckResult(
                "metric:test_mape", mape <= thresholds.max_mape, f"test_mape={mape:.4f} (maximum {thresholds.max_mape})"
            )
        )
    if alias == PRODUCTION:
        staged = alias_version(client, name, STAGING)
        checks.append(
            CheckResult(
                "staged_first",
                staged == str(version),
                f"holds '{STAGING}'"
                if staged == str(version)
                else f"promote to staging first (staging is {staged or 'unset'})",
            )
        )
        champion = alias_version(client, name, PRODUCTION)
        if champion is not None and champion != str(version) and not missing:
            scores = evaluate_versions_on_test_set(settings, name, mv, champion)
            limit = scores["champion"] * (1 + thresholds.production_tolerance)
            checks.append(
                CheckResult(
                    "beats_production",
                    scores["candidate"] <= limit,
                    f"RMSE {scores['candidate']:.4g} vs production v{champion} {scores['champion']:.4g} "
                    f"on the same {scores['test_rows']} test rows",
                )
            )
    return checks


def promote(
    version: str | int,
    alias: str,
    actor: str,
    reason: str,
    name: str | None = None,
    thresholds: Thresholds | None = None,
    settings: Settings | None = None,
) -> list[CheckResult]:
    """Move `version` to `alias` if every compliance check passes; otherwise raise `PromotionRefused`.

    Records `<alias>.promoted_by/at/reason` and the checks on the version. Moving production also records
    the version it replaced, for `rollback`.
    """
    settings = settings or get_settings()
    name = name or settings.model_name
    version = str(version)
    if not actor.strip() or not reason.strip():
        raise ValueError("a promotion needs who (actor) and why (reason)")
    thresholds = thresholds or Thresholds.from_settings(settings)
    client = _client(settings)
    checks = compliance_checks(settings, name, version, alias, thresholds, client)
    failed = [c for c in checks if not c.passed]
    if failed:
        client.set_model_version_tag(name, version, f"{alias}.refused_at", _now())
        client.set_model_version_tag(
            name, version, f"{alias}.refused_because", "; ".join(f"{c.name}: {c.detail}" for c in failed)[:4500]
        )
        raise PromotionRefused(name, version, alias, failed)
    if alias == PRODUCTION:
        previous = alias_version(client, name, PRODUCTION)
        if previous is not None and previous != version:
            client.set_model_version_tag(name, version, "previous_production_version", previous)
    client.set_registered_model_alias(name, alias, version)
    for key, value in {
        "promoted_by": actor,
        "promoted_at": _now(),
        "reason": reason,
        "checks": json.dumps([asdict(c) for c in checks]),
    }.items():
        client.set_model_version_tag(name, version, f"{alias}.{key}", value[:4500])
    return checks


def rollback(actor: str, reason: str, name: str | None = None, settings: Settings | None = None) -> dict:
    """Give `production` back to the version it had before the current one. One call, no checks rerun
    (that version passed them when it was promoted)."""
    settings = settings or get_settings()
    name = name or settings.model_name
    client = _client(settings)
    current = alias_version(client, name, PRODUCTION)
    if current is None:
        raise ValueError(f"{name} has no production version to roll back")
    previous = client.get_model_version(name, current).tags.get("previous_production_version")
    if not previous:
        raise ValueError(f"{name} version {current} replaced no earlier production version: nothing to roll back to")
    client.set_registered_model_alias(name, PRODUCTION, previous)
    now = _now()
    for key, value in {"rolled_back_by": actor, "rolled_back_at": now, "rolled_back_reason": reason}.items():
        client.set_model_version_tag(name, current, f"{PRODUCTION}.{key}", value)
    for key, value in {
        "promoted_by": actor,
        "promoted_at": now,
        "reason": f"rollback from v{current}: {reason}",
    }.items():
        client.set_model_version_tag(name, previous, f"{PRODUCTION}.{key}", value)
    return {"model_name": name, "from_version": current, "to_version": previous}


def set_model_card(
    version: str | int, text: str, actor: str, name: str | None = None, settings: Settings | None = None
) -> None:
    """Write the version's model card (its registry description)."""
    settings = settings or get_settings()
    name = name or settings.model_name
    client = _client(settings)
    client.update_model_version(name, str(version), description=text)
    client.set_model_version_tag(name, str(version), "model_card.by", actor)


def list_versions(name: str | None = None, settings: Settings | None = None) -> list[dict]:
    """Every version with its aliases, key metrics and data version, newest first."""
    settings = settings or get_settings()
    name = name or settings.model_name
    client = _client(settings)
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return []
    # search results carry no aliases (MLflow fills them only on single-version reads): take the model's map
    aliases: dict[str, list[str]] = {}
    for alias, version in sorted(client.get_registered_model(name).aliases.items()):
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in versions:
        metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": aliases.get(str(mv.version), []),
                "model_type": mv.tags.get("model_type"),
                "test_rmse": metrics.get("test_rmse"),
                "test_r2": metrics.get("test_r2"),
                "data_version": mv.tags.get("dvc_data_version"),
                "has_model_card": bool((mv.description or "").strip()),
            }
        )
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)
