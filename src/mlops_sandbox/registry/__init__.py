"""Human-in-the-loop promotion (seed steps 4-7) with MLflow 3 registry aliases.

The seeds' stages None -> Staging -> Production are the aliases `staging` and `production`. Every move
runs compliance checks and is refused, with the reasons named, if one fails. Each move records who, when
and why as version tags, and production keeps its history so that a rollback is one call.

Serving experiments (`set_experiment`) put the `staging` candidate beside production on live traffic, in
shadow or as an A/B split; the mode is a registered-model tag that the prediction service reads. The monitor
compares the two online and writes its verdict to the monitoring bucket (`contracts.experiment_key`). When a
comparison exists for a version, moving it to production requires the verdict to rest on enough labelled
requests (`EXPERIMENT_MIN_LABELLED`) and not to say "worse" (the `online_comparison` check).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.contracts import (
    ALIASES,
    MAX_AB_SHARE,
    MODE_AB,
    MODE_OFF,
    PRODUCTION,
    SERVING_AB_SHARE_TAG,
    SERVING_HISTORY_TAG,
    SERVING_MODE_TAG,
    SERVING_MODES,
    STAGING,
    experiments_prefix,
)

LINEAGE_TAGS = ("dvc_data_version", "dvc_data_size", "dvc_data_path", "dvc_remote", "raw_batch_keys")
MIN_MODEL_CARD_CHARS = 20
MAX_TAG_CHARS = 4500  # MLflow keeps tag values up to 5000 characters
ONLINE_COMPARISON = "online_comparison"  # the production check, and the version tag `production.online_comparison`
SERVING_MODE_BY_TAG = f"{SERVING_MODE_TAG}.set_by"
SERVING_MODE_AT_TAG = f"{SERVING_MODE_TAG}.set_at"
SERVING_MODE_REASON_TAG = f"{SERVING_MODE_TAG}.reason"
MAX_HISTORY_REASON_CHARS = 500  # a reason in the history, so that one long reason leaves room for others


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
    """A move refused by its compliance checks; `failed` names each reason, `checks` holds every check run."""

    def __init__(
        self, name: str, version: str, alias: str, failed: list[CheckResult], checks: list[CheckResult] | None = None
    ):
        self.failed = failed
        self.checks = checks if checks is not None else failed  # every check run, passed ones too
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


def latest_comparison(settings: Settings, scenario: str, candidate_version: str | int, s3=None) -> dict | None:
    """The newest online comparison of candidate `candidate_version` with production, as the monitor wrote it
    (`contracts.experiment_key`), or None when no experiment has compared that version yet.

    Args:
        settings: names the monitoring bucket and reaches S3.
        scenario: the scenario whose experiments to look in.
        candidate_version: the version that was the candidate (`staging`) of the experiment.
        s3: a boto3 S3 client (default: `storage.s3_client(settings)`).

    Raises:
        botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError: S3 did not answer or refused.
    """
    from mlops_sandbox.storage import get_json, list_keys, s3_client

    s3 = s3 or s3_client(settings)
    prefix = experiments_prefix(scenario, str(candidate_version))
    keys = [k for k in list_keys(s3, settings.monitoring_bucket, prefix) if k.endswith(".json")]
    return get_json(s3, settings.monitoring_bucket, keys[-1]) if keys else None  # keys sort by time


def online_comparison_check(comparison: dict | None, version: str | int, min_labelled: int) -> CheckResult:
    """Whether the online evidence lets `version` into production.

    Args:
        comparison: the newest comparison of `version` with production (`latest_comparison`), or None.
        version: the candidate version.
        min_labelled: the labelled requests the comparison needs (`EXPERIMENT_MIN_LABELLED`).

    Returns:
        A passed check when no experiment compared the version (promotion goes on offline evidence alone);
        otherwise passed only if the comparison rests on at least `min_labelled` labelled requests and its
        verdict is not "worse". The detail is the monitor's summary with the labelled count and the minimum.
    """
    if comparison is None:
        return CheckResult(ONLINE_COMPARISON, True, f"no online experiment compared version {version} with production")
    figures = comparison.get("comparison") or {}
    labelled = int(figures.get("labelled") or 0)
    verdict = comparison.get("verdict")
    summary = str(comparison.get("summary") or f"verdict {verdict}").strip().rstrip(".")
    detail = f"{summary}; {labelled} labelled, minimum {min_labelled}"
    if verdict == "worse":
        return CheckResult(ONLINE_COMPARISON, False, f"worse than production online: {detail}")
    if labelled < min_labelled:
        return CheckResult(
            ONLINE_COMPARISON, False, f"too few labelled requests (let the experiment run longer): {detail}"
        )
    return CheckResult(ONLINE_COMPARISON, True, detail)


def online_evidence(settings: Settings, version: str, scenario: str) -> tuple[CheckResult, dict | None]:
    """The `online_comparison` check of candidate `version` in `scenario` now, and the newest comparison it
    rests on (`latest_comparison`; None when there is none, or when S3 could not be read: the check, failed,
    says so)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        comparison = latest_comparison(settings, scenario, version)
    except (BotoCoreError, ClientError, ValueError) as err:  # ValueError: an object that is not JSON
        detail = f"could not read the online comparisons of {scenario} in {settings.monitoring_bucket}: {err}"
        return CheckResult(ONLINE_COMPARISON, False, detail), None
    return online_comparison_check(comparison, version, settings.experiment_min_labelled), comparison


def _online_comparison(settings: Settings, version: str, tags: dict) -> tuple[CheckResult, str | None]:
    """The `online_comparison` check of a version (its tags name its scenario), and the evidence to record on
    it: the check's detail when a comparison exists, else None."""
    check, comparison = online_evidence(settings, version, tags.get("scenario", settings.scenario))
    return check, (check.detail if comparison is not None else None)


def compliance_checks(
    settings: Settings, name: str, version: str, alias: str, thresholds: Thresholds, client=None
) -> list[CheckResult]:
    """Every check for moving `version` to `alias`; see the module docstring."""
    return _checks_and_evidence(settings, name, version, alias, thresholds, client)[0]


def _checks_and_evidence(
    settings: Settings, name: str, version: str, alias: str, thresholds: Thresholds, client=None
) -> tuple[list[CheckResult], str | None]:
    """`compliance_checks`, and the online comparison to record on the version (None when there is none)."""
    import mlflow

    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}; use one of {ALIASES}")
    client = client or _client(settings)
    mv = client.get_model_version(name, version)
    checks: list[CheckResult] = []
    evidence = None

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
        online, evidence = _online_comparison(settings, str(version), mv.tags)
        checks.append(online)
    return checks, evidence


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

    Records `<alias>.promoted_by/at/reason` and the checks on the version. Moving production ends a running
    shadow or A/B experiment (recorded in its history) and records the version it replaced, for `rollback`.
    Promoted or refused, the online comparison the decision rested on is recorded too
    (`production.online_comparison`) when an experiment compared the version with production.
    """
    settings = settings or get_settings()
    name = name or settings.model_name
    version = str(version)
    if not actor.strip() or not reason.strip():
        raise ValueError("a promotion needs who (actor) and why (reason)")
    thresholds = thresholds or Thresholds.from_settings(settings)
    client = _client(settings)
    checks, evidence = _checks_and_evidence(settings, name, version, alias, thresholds, client)
    if evidence is not None:
        client.set_model_version_tag(name, version, f"{alias}.{ONLINE_COMPARISON}", evidence[:MAX_TAG_CHARS])
    failed = [c for c in checks if not c.passed]
    if failed:
        client.set_model_version_tag(name, version, f"{alias}.refused_at", _now())
        client.set_model_version_tag(
            name,
            version,
            f"{alias}.refused_because",
            "; ".join(f"{c.name}: {c.detail}" for c in failed)[:MAX_TAG_CHARS],
        )
        raise PromotionRefused(name, version, alias, failed, checks)
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
        client.set_model_version_tag(name, version, f"{alias}.{key}", value[:MAX_TAG_CHARS])
    if alias == PRODUCTION and get_experiment(name, settings, client)["mode"] != MODE_OFF:
        # the candidate it compared is production now (or another version won): the experiment is over
        set_experiment(
            MODE_OFF, actor, f"version {version} promoted to production: {reason}", name=name, settings=settings
        )
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


def write_model_card_unless_written(
    version: str | int, text: str, actor: str, name: str | None = None, settings: Settings | None = None
) -> bool:
    """`set_model_card`, unless the version already has a card (a person's): that one is kept. Returns whether
    `text` was written."""
    settings = settings or get_settings()
    name = name or settings.model_name
    if (_client(settings).get_model_version(name, str(version)).description or "").strip():
        return False
    set_model_card(version, text, actor, name=name, settings=settings)
    return True


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


def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        raise LookupError(f"no registered model {name!r}: {err.message}") from None


def get_experiment(name: str | None = None, settings: Settings | None = None, client=None) -> dict:
    """The serving experiment the registered model declares, with the versions it puts side by side.

    Returns:
        `{"model_name", "mode", "share", "candidate_version", "production_version", "set_by", "set_at",
        "reason"}`: `mode` is one of `contracts.SERVING_MODES` (`off` when unset, unknown, or `ab`
        with a share outside (0, 0.5]: as the prediction service reads them), `share` the candidate's share of
        callers (0.0 unless `ab`), `candidate_version` the `staging` version.

    Raises:
        LookupError: no registered model of that name.
    """
    settings = settings or get_settings()
    name = name or settings.model_name
    client = client or _client(settings)
    from mlops_sandbox.experiment import declared_mode

    tags = _registered_model(client, name).tags or {}
    mode, share, _ = declared_mode(tags)  # what the prediction service runs
    return {
        "model_name": name,
        "mode": mode,
        "share": share,
        "candidate_version": alias_version(client, name, STAGING),
        "production_version": alias_version(client, name, PRODUCTION),
        "set_by": tags.get(SERVING_MODE_BY_TAG),
        "set_at": tags.get(SERVING_MODE_AT_TAG),
        "reason": tags.get(SERVING_MODE_REASON_TAG),
    }


def _history_tag(previous: str | None, entry: dict) -> str:
    """The history with `entry` appended, as JSON, keeping as many of the newest entries as fit a tag."""
    try:
        history = json.loads(previous) if previous else []
    except ValueError:
        history = []
    if not isinstance(history, list):
        history = []
    history.append(entry)
    while len(history) > 1 and len(json.dumps(history)) > MAX_TAG_CHARS:
        history.pop(0)
    return json.dumps(history)


def set_experiment(
    mode: str,
    actor: str,
    reason: str,
    share: float | None = None,
    name: str | None = None,
    settings: Settings | None = None,
) -> dict:
    """Declare the serving experiment: the `staging` candidate in shadow beside production, answering a share
    of callers (A/B), or off. The prediction service reads it from the registered model's tags.

    Args:
        mode: one of `contracts.SERVING_MODES`.
        actor: who decides.
        reason: why.
        share: `ab` only, and required there: the candidate's share of callers, in (0, MAX_AB_SHARE].
        name: the registered model (default: the configured scenario's).
        settings: default `get_settings()`.

    Returns:
        The new state, as `get_experiment` returns it. The change is also appended to the model's
        `serving_mode.history` tag (the newest entries that fit in 4,500 characters).

    Raises:
        ValueError: an unknown mode, a missing or out-of-range share, no actor or reason, or (shadow, ab) no
            production version or no `staging` candidate other than it.
        LookupError: no registered model of that name.
    """
    if mode not in SERVING_MODES:
        raise ValueError(f"unknown serving mode {mode!r}; use one of {SERVING_MODES}")
    if mode == MODE_AB:
        if share is None:
            raise ValueError(f"an A/B experiment needs the candidate's share of callers, in (0, {MAX_AB_SHARE}]")
        if not 0 < share <= MAX_AB_SHARE:  # NaN fails this too
            raise ValueError(f"A/B share {share!r} is outside (0, {MAX_AB_SHARE}]")
    elif share:
        raise ValueError(f"a share of callers applies to '{MODE_AB}' only, not to '{mode}'")
    if not actor.strip() or not reason.strip():
        raise ValueError("a change of serving mode needs who (actor) and why (reason)")
    settings = settings or get_settings()
    name = name or settings.model_name
    client = _client(settings)
    model = _registered_model(client, name)
    candidate = alias_version(client, name, STAGING)
    production = alias_version(client, name, PRODUCTION)
    if mode != MODE_OFF:
        if production is None:
            raise ValueError(f"{name} has no production version to compare with: promote one to production first")
        if candidate is None:
            raise ValueError(f"{name} has no candidate: promote a candidate to staging first")
        if candidate == production:
            raise ValueError(
                f"staging and production are both version {production} of {name}: "
                "promote a different candidate to staging first"
            )
    share = float(share) if mode == MODE_AB else 0.0
    now = _now()
    entry = {
        "mode": mode,
        "share": share,
        "candidate_version": candidate,
        "production_version": production,
        "by": actor,
        "at": now,
        "reason": reason[:MAX_HISTORY_REASON_CHARS],
    }
    history = _history_tag((model.tags or {}).get(SERVING_HISTORY_TAG), entry)
    # the mode last: the service acts on it, so it changes once the share it goes with is written
    for key, value in {
        SERVING_AB_SHARE_TAG: str(share) if mode == MODE_AB else "0",
        SERVING_MODE_BY_TAG: actor,
        SERVING_MODE_AT_TAG: now,
        SERVING_MODE_REASON_TAG: reason,
        SERVING_HISTORY_TAG: history,
        SERVING_MODE_TAG: mode,
    }.items():
        client.set_registered_model_tag(name, key, value[:MAX_TAG_CHARS])
    return get_experiment(name, settings, client)
