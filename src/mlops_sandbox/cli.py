"""`mlops-sandbox`: operator commands. Each subcommand calls one library function.

A command's result is printed for a person (aligned fields, tables) when its output is a terminal, and as
one JSON line otherwise, or with `--json`. Pipeline steps run with no terminal, so their last line is that
JSON summary, which Airflow's DockerOperator keeps as XCom. In a KubernetesPodOperator pod the same line also
goes to `/airflow/xcom/return.json`, so the XCom is the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlops_sandbox.config import get_settings

# KubernetesPodOperator (do_xcom_push=True) mounts this folder and pushes the JSON in `return.json` as XCom.
XCOM_DIR = Path("/airflow/xcom")
JSON_FLAG = "--json"
_json_output = True  # main() sets it: `--json`, or no terminal


def _for_people() -> bool:
    return not _json_output


def _print_summary(value) -> None:
    """Print `value` for a person, or as one JSON line (`--json`, or no terminal); in a pod with an XCom
    folder, also leave that line there.

    The line is written JSON-encoded as a string, so the XCom is the same `str` as DockerOperator's.
    """
    line = json.dumps(value, default=str)
    print(readable(value) if _for_people() else line)
    if XCOM_DIR.is_dir():
        (XCOM_DIR / "return.json").write_text(json.dumps(line))


def _cell(value) -> str:
    """One value as a person reads it in a field or a table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def _table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return lines


def readable(value, indent: str = "") -> str:
    """`value` (a command's JSON-able result) for a person: `field  value` lines, aligned; a nested object
    indented under its field; a list of objects as a table."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "\n".join(indent + line for line in _table(value))
    if not isinstance(value, dict):
        return indent + _cell(value)
    width = max((len(k) for k in value), default=0)
    lines = []
    for key, item in value.items():
        nested = (isinstance(item, dict) and item) or (
            isinstance(item, list) and item and all(isinstance(v, dict) for v in item)
        )
        if nested:
            lines += [f"{indent}{key}:", readable(item, indent + "  ")]
        else:
            lines.append(f"{indent}{key.ljust(width)}  {_cell(item)}")
    return "\n".join(lines)


def _emit(value) -> int:
    _print_summary(value)
    return 0


def _init_buckets(_: argparse.Namespace) -> int:
    from mlops_sandbox.storage import ensure_buckets

    return _emit(ensure_buckets(list(get_settings().buckets.values())))


def _check_stack(_: argparse.Namespace) -> int:
    from mlops_sandbox.health import check_stack

    checks = check_stack()
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<24} {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


def _duration(text: str) -> timedelta:
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise argparse.ArgumentTypeError(f"duration like 30m, 1h or 1d expected, got {text!r}")
    return timedelta(**{units[text[-1]]: int(text[:-1])})


def _time(text: str) -> datetime | None:
    from mlops_sandbox.simulate.generator import parse_time

    if not text.strip():
        return None  # empty: the default (lets a DAG pass an unset param as-is)
    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _drift(text: str):
    from mlops_sandbox.simulate import parse_drift

    if not text.strip():
        return None
    try:
        return parse_drift(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _start(text: str):
    return "next" if text.strip() == "next" else _time(text)


def _simulate(args: argparse.Namespace) -> int:
    from mlops_sandbox.contracts import key_time
    from mlops_sandbox.simulate import batch_times, generate_batch, land_batches
    from mlops_sandbox.storage import s3_client

    settings = get_settings()
    drifts = [d for d in args.drift if d]
    if args.out:
        if args.start == "next":
            raise ValueError("--start next needs the bucket; give a time with --out")
        start = args.start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        keys = []
        for when in batch_times(start, args.every, args.batches):
            path = f"{args.out}/{args.scenario}-{key_time(when)}.csv"
            generate_batch(args.scenario, args.seed, when, args.rows, drifts).to_csv(path, index=False)
            keys.append(path)
    else:
        keys = land_batches(
            s3_client(settings),
            settings.raw_data_bucket,
            args.scenario,
            args.batches,
            args.rows,
            args.seed,
            args.start,
            args.every,
            drifts,
        )
    return _emit({"scenario": args.scenario, "rows_per_batch": args.rows, "batches": keys})


def _traffic(args: argparse.Namespace) -> int:
    from mlops_sandbox.storage import s3_client
    from mlops_sandbox.traffic import run_traffic

    settings = get_settings()
    report = run_traffic(
        settings,
        s3_client(settings),
        args.scenario,
        args.rate,
        args.duration,
        args.seed,
        args.start,
        [d for d in args.drift if d],
        args.actuals_delay,
        clients=args.clients,
    )
    return _emit(report.as_dict())


def _monitor(args: argparse.Namespace) -> int:
    from mlops_sandbox.monitor.steps import catch_up, run_window, window_summary

    end = args.end or datetime.now(UTC)
    start = args.start or end - timedelta(minutes=5)
    if args.catch_up:
        if args.start is not None:
            raise ValueError(
                "--catch-up starts where the last checked window ended: give --end (or nothing), not --start"
            )
        summary = catch_up(get_settings(), args.scenario, end, args.window_minutes, args.lateness_seconds)
    else:
        summary = window_summary(run_window(get_settings(), args.scenario, start, end))
    if args.fail_on_decay and summary["decay"]:
        _print_summary(summary)
        print("DECAY: " + "; ".join(summary["reasons"]), file=sys.stderr)
        return 3
    return _emit(summary)


def _experiment_status(name: str | None) -> dict:
    """The serving experiment (`registry.get_experiment`), with the monitor's newest comparison of its candidate
    with production and whether promotion's online check would pass now (`registry.online_evidence`: when S3
    cannot be read, that check fails and says why; the experiment's state needs only MLflow)."""
    from mlops_sandbox import registry
    from mlops_sandbox.catalog import SECTORS
    from mlops_sandbox.workshop import comparison_rows

    settings = get_settings()
    status = registry.get_experiment(name)
    candidate = status.get("candidate_version")
    scenarios = [s for s in SECTORS if settings.model_name_for(s) == status.get("model_name")]
    if candidate is None or not scenarios:
        return status
    check, comparison = registry.online_evidence(settings, candidate, scenarios[0])  # as promotion checks it
    status["comparison"] = comparison_rows([comparison])[0] if comparison else None
    status["online_check"] = {"passed": check.passed, "detail": check.detail}
    return status


def _challenge(args: argparse.Namespace) -> int:
    from mlops_sandbox.retrain import challenge, last_alert
    from mlops_sandbox.simulate.generator import parse_time

    settings = get_settings()
    start = args.start
    if args.since_alert:
        if start is not None:
            raise ValueError("give --start or --since-alert, not both")
        start = parse_time(last_alert(settings, args.scenario)["window_start"])
    return _emit(challenge(settings, args.scenario, start, args.end, args.min_rows, args.challenger, args.by))


def _step(args: argparse.Namespace) -> int:
    from mlops_sandbox import pipeline

    settings = get_settings()
    steps = {
        "ingest": lambda: pipeline.ingest(settings, args.scenario, args.run_id, args.last_batches),
        "validate": lambda: pipeline.validate_step(settings, args.scenario, args.run_id),
        "preprocess": lambda: pipeline.preprocess_step(settings, args.scenario, args.run_id),
        "version-features": lambda: pipeline.version_features(settings, args.scenario, args.run_id),
        "train": lambda: pipeline.train(settings, args.scenario, args.run_id, args.model_type, args.epochs),
        "register": lambda: pipeline.register(settings, args.scenario, args.run_id),
    }
    return _emit(steps[args.step]())


def _model(args: argparse.Namespace) -> int:
    from mlops_sandbox import registry

    if args.action == "list":
        rows = registry.list_versions(args.name)
        if _for_people():
            print(readable(rows) if rows else "no registered version yet")
        for row in rows if not _for_people() else []:
            print(json.dumps(row))  # JSON Lines, one version each
        return 0
    if args.action == "describe":
        registry.set_model_card(args.version, args.text, args.by, args.name)
        return _emit({"version": args.version, "model_card": "set"})
    if args.action == "rollback":
        return _emit(registry.rollback(args.by, args.reason, args.name))
    if args.action == "experiment":
        if args.mode == "status":
            return _emit(_experiment_status(args.name))
        return _emit(registry.set_experiment(args.mode, args.by, args.reason, args.share, args.name))
    thresholds = registry.Thresholds.from_settings(get_settings(), min_r2=args.min_r2, max_mape=args.max_mape)
    try:
        checks = registry.promote(args.version, args.to, args.by, args.reason, args.name, thresholds)
    except registry.PromotionRefused as refused:
        print(f"REFUSED: {refused}", file=sys.stderr)
        for check in refused.checks:  # the passed ones too: the figures the decision rested on
            print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}", file=sys.stderr)
        return 1
    for check in checks:
        print(f"  ok   {check.name}: {check.detail}")
    return _emit({"version": str(args.version), "alias": args.to, "promoted": True})


def _workshop(args: argparse.Namespace) -> int:
    from mlops_sandbox import workshop

    if args.action == "list":
        for item in workshop.EXERCISES:
            notebook = f"  notebooks/{item.notebook}.ipynb" if item.notebook else ""
            print(f"{item.number}. {item.title}  (starts from: {item.starts_from}){notebook}")
        return 0
    return _emit(workshop.prepare(args.step, force=args.force, say=lambda text: print(text, flush=True)))


def _trigger(args: argparse.Namespace) -> int:
    from mlops_sandbox.airflow_api import AirflowAPI

    conf = json.loads(args.conf)
    if not isinstance(conf, dict):
        raise ValueError("--conf must be a JSON object of the DAG's params")
    airflow = AirflowAPI()
    airflow.wait_for_dag(args.dag_id)
    run_id = airflow.trigger(args.dag_id, conf)
    if not args.wait:
        return _emit({"dag_id": args.dag_id, "run_id": run_id, "state": "queued"})
    if _for_people():
        print(f"{args.dag_id} run {run_id}: waiting (Ctrl-C stops waiting, not the run)", flush=True)
    seen: dict[str, str] = {}

    def progress() -> None:
        """Each task's state as it changes."""
        for task, task_state in airflow.task_states(args.dag_id, run_id).items():
            if task_state and seen.get(task) != task_state:
                seen[task] = task_state
                print(f"  {datetime.now(UTC):%H:%M:%S}  {task:<24} {task_state}", flush=True)

    state = airflow.wait(args.dag_id, run_id, timeout=args.timeout, progress=progress if _for_people() else None)
    _emit({"dag_id": args.dag_id, "run_id": run_id, "state": state, "tasks": airflow.task_states(args.dag_id, run_id)})
    return 0 if state == "success" else 1


def _notebook(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlops_sandbox import notebooks

    if args.action == "strip":
        for path in args.paths:
            print(f"{'stripped' if notebooks.strip(path) else 'clean   '} {path}")
        return 0
    for path in args.paths:
        save_to = Path(args.save_to) / Path(path).name if args.save_to else None
        print(json.dumps(notebooks.execute(path, args.timeout, save_to)), flush=True)
    return 0


def _catalog(_: argparse.Namespace) -> int:
    from mlops_sandbox import catalog

    for name in sorted(catalog.SECTORS):
        sector = catalog.sector(name)
        print(f"sector      {name:<16} {sector.schema.description}  Drift: {sector.drift}.")
    for name in sorted(catalog.MODEL_TYPES):
        print(f"model type  {name:<16} {catalog.model_type(name).description}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Start the prediction service: an empty metrics folder for its workers, then gunicorn in this process,
    forking the workers from a preloaded app (`mlops_sandbox.serve.server`)."""
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/tmp/prometheus-multiproc"))
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counts of a previous run (a restarted container) start over
    metrics_dir.mkdir(parents=True)
    os.environ["PREDICTOR_ACCESS_LOG"] = "true" if args.access_log else "false"
    gunicorn = [sys.executable, "-m", "gunicorn", "mlops_sandbox.serve.app:preloaded()", "--preload"]
    options = ["--config", "python:mlops_sandbox.serve.server", "--worker-class", "mlops_sandbox.serve.server.Worker"]
    options += ["--bind", f"{args.host}:{args.port}", "--workers", str(args.workers)]
    if args.access_log:
        options += ["--access-logfile", "-"]
    # SIGTERM: 20 s for open requests and the capture's last upload (stop grace: 30 s); --timeout: a worker
    # whose event loop has not answered gunicorn's heartbeat for 60 s is replaced
    os.execv(sys.executable, [*gunicorn, *options, "--graceful-timeout", "20", "--timeout", "60"])


def _evidently_ui(args: argparse.Namespace) -> int:
    """The Evidently UI, as `evidently ui` serves it, answering only the Host names in EVIDENTLY_ALLOWED_HOSTS."""
    from mlops_sandbox.monitor import ui

    ui.serve(args.workspace, get_settings().evidently_allowed_hosts, args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mlops_sandbox import catalog
    from mlops_sandbox.contracts import ALIASES, MAX_AB_SHARE, MODE_AB, MODE_OFF, MODE_SHADOW

    parser = argparse.ArgumentParser(prog="mlops-sandbox", description="mlops-sandbox operator commands")
    parser.add_argument(
        JSON_FLAG,
        action="store_true",
        help="print results as one JSON line, as scripts want (the default when the output is not a terminal); "
        "it may come anywhere on the line",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def scenario_option(command: argparse.ArgumentParser) -> None:
        """--scenario, with the sectors registered in the catalog as its choices."""
        command.add_argument("--scenario", choices=sorted(catalog.SECTORS), default=catalog.DEFAULT_SECTOR)

    sub.add_parser("catalog", help="the registered sectors and model types").set_defaults(func=_catalog)
    serve = sub.add_parser("serve", help="the prediction service (uvicorn workers sharing one metrics folder)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=int(os.environ.get("PREDICTOR_WORKERS", "2")))
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("PREDICTOR_ACCESS_LOG", "false").lower() in {"1", "true", "yes"},
        help="log a line per request (default: PREDICTOR_ACCESS_LOG, else off)",
    )
    serve.set_defaults(func=_serve)
    dashboard = sub.add_parser(
        "evidently-ui", help="the Evidently UI (`evidently ui`), answering only EVIDENTLY_ALLOWED_HOSTS"
    )
    dashboard.add_argument("--host", default="0.0.0.0")
    dashboard.add_argument("--port", type=int, default=8000)
    dashboard.add_argument("--workspace", default="/data/evidently", help="the local workspace folder")
    dashboard.set_defaults(func=_evidently_ui)
    sub.add_parser("init-buckets", help="create the stack's S3 buckets (idempotent)").set_defaults(func=_init_buckets)
    sub.add_parser("check-stack", help="check that MinIO buckets and MLflow answer").set_defaults(func=_check_stack)

    sim = sub.add_parser("simulate", help="generate simulated industry batches into the raw-data bucket")
    scenario_option(sim)
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument(
        "--start",
        type=_start,
        help="simulated time of the first batch (ISO 8601; default: this hour; "
        "'next': the hour after the newest batch in the bucket)",
    )
    sim.add_argument("--every", type=_duration, default=timedelta(hours=1), help="clock step, e.g. 1h")
    sim.add_argument("--batches", type=int, default=1)
    sim.add_argument("--rows", type=int, default=500)
    sim.add_argument(
        "--drift",
        type=_drift,
        action="append",
        default=[],
        help="KIND,START,STRENGTH (KIND: covariate|concept|quality); repeatable",
    )
    sim.add_argument("--out", help="write CSV files to this folder instead of the bucket")
    sim.set_defaults(func=_simulate)

    traffic = sub.add_parser("traffic", help="send simulated requests to the predictor; publish actuals later")
    scenario_option(traffic)
    traffic.add_argument("--rate", type=float, default=10, help="requests per second")
    traffic.add_argument("--duration", type=float, default=60, help="seconds")
    traffic.add_argument("--seed", type=int, default=1000)
    traffic.add_argument("--start", type=_time, help="simulated clock start (one simulated minute per second)")
    traffic.add_argument("--drift", type=_drift, action="append", default=[], help="KIND,START,STRENGTH")
    traffic.add_argument(
        "--clients", type=int, default=0, help="callers to send X-Client-ID as (an A/B split is sticky per caller)"
    )
    traffic.add_argument("--actuals-delay", type=float, default=30, help="seconds until each outcome is known")
    traffic.set_defaults(func=_traffic)

    monitor = sub.add_parser("monitor", help="monitor one window of captured predictions with Evidently")
    scenario_option(monitor)
    monitor.add_argument("--start", type=_time, help="window start (default: end - 5 minutes)")
    monitor.add_argument("--end", type=_time, help="window end (default: now)")
    monitor.add_argument("--fail-on-decay", action="store_true", help="exit 3 when the window shows decay")
    monitor.add_argument(
        "--catch-up",
        action="store_true",
        help="as the schedule does: every window from the last checked one up to --end less the allowed lateness",
    )
    monitor.add_argument("--window-minutes", type=int, default=5, help="--catch-up: each window's length")
    monitor.add_argument(
        "--lateness-seconds",
        type=lambda text: int(text) if text.strip() else None,  # empty: the setting (as the DAG passes it)
        help="--catch-up: allowed lateness (default MONITORING_ALLOWED_LATENESS_SECONDS)",
    )
    monitor.set_defaults(func=_monitor)

    chal = sub.add_parser("challenge", help="challenger vs champion on fresh labelled data; promote if better")
    scenario_option(chal)
    chal.add_argument("--start", type=_time, help="fresh labelled requests from (default: end - 30 minutes)")
    chal.add_argument("--end", type=_time, help="... until (default: now)")
    chal.add_argument(
        "--since-alert", action="store_true", help="from the start of the newest window that flagged decay"
    )
    chal.add_argument("--by", default="auto-retrain-policy", help="who promotes, if the challenger wins")
    chal.add_argument("--min-rows", type=int, default=30)
    chal.add_argument("--challenger", help="version to challenge with (default: the newest)")
    chal.set_defaults(func=_challenge)

    step = sub.add_parser("pipeline", help="run one step of the training pipeline (the DAG's tasks)")
    step.add_argument("step", choices=["ingest", "validate", "preprocess", "version-features", "train", "register"])
    scenario_option(step)
    step.add_argument("--run-id", required=True, help="the pipeline run this step belongs to")
    step.add_argument("--last-batches", type=int, help="ingest: only the newest N raw batches")
    step.add_argument("--model-type", choices=sorted(catalog.MODEL_TYPES), default=catalog.DEFAULT_MODEL_TYPE)
    step.add_argument("--epochs", type=int, help="train: epochs, for the model types trained in epochs (mlp)")
    step.set_defaults(func=_step)

    model = sub.add_parser("model", help="the registered model: list, describe, promote, rollback, experiment")
    model.add_argument("--name", help="registered model name (default: the configured scenario's)")
    actions = model.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="versions with aliases and metrics")
    describe = actions.add_parser("describe", help="write a version's model card")
    describe.add_argument("version")
    describe.add_argument("--text", required=True)
    describe.add_argument("--by", required=True, help="who writes it")
    promote = actions.add_parser("promote", help="move a version to staging or production, after compliance checks")
    promote.add_argument("version")
    promote.add_argument("--to", choices=list(ALIASES), required=True)
    promote.add_argument("--by", required=True, help="who decides")
    promote.add_argument("--reason", required=True, help="why")
    promote.add_argument("--min-r2", type=float)
    promote.add_argument("--max-mape", type=float)
    rollback = actions.add_parser("rollback", help="give production back to the previous production version")
    rollback.add_argument("--by", required=True)
    rollback.add_argument("--reason", required=True)
    experiment = actions.add_parser(
        "experiment", help="put the staging candidate beside production on live traffic (shadow, A/B), or stop"
    )
    modes = experiment.add_subparsers(dest="mode", required=True)
    modes.add_parser(
        "status",
        help="the serving mode, the candidate and production versions, who set it, the monitor's newest comparison "
        "of the two and whether it would let the candidate into production",
    )
    for mode, text in (
        (MODE_SHADOW, "production answers every caller; the candidate predicts the same rows beside it"),
        (MODE_AB, "a share of callers is answered by the candidate, the rest by production"),
        (MODE_OFF, "production alone"),
    ):
        change = modes.add_parser(mode, help=text)
        if mode == MODE_AB:
            change.add_argument(
                "--share", type=float, required=True, help=f"the candidate's share of callers, in (0, {MAX_AB_SHARE}]"
            )
        change.add_argument("--by", required=True, help="who decides")
        change.add_argument("--reason", required=True, help="why")
    model.set_defaults(func=_model, share=None)

    shop = sub.add_parser("workshop", help="the workshop's exercises; prepare a fresh stack for one of them")
    shop_actions = shop.add_subparsers(dest="action", required=True)
    shop_actions.add_parser("list", help="the exercises and the state each starts from")
    prepare = shop_actions.add_parser(
        "prepare", help="bring a fresh stack to the start of exercise STEP (make skip-to STEP=N resets first)"
    )
    prepare.add_argument("step", type=int)
    prepare.add_argument("--force", action="store_true", help="even if the stack is not fresh")
    shop.set_defaults(func=_workshop)

    trigger = sub.add_parser("trigger", help="trigger an Airflow DAG run with params, and wait for it")
    trigger.add_argument("dag_id")
    trigger.add_argument("--conf", default="{}", help="the run's params as JSON, e.g. '{\"batches\": 12}'")
    trigger.add_argument("--wait", action="store_true", help="wait for the run; exit 1 if it fails")
    trigger.add_argument("--timeout", type=float, default=900, help="seconds to wait")
    trigger.set_defaults(func=_trigger)

    book = sub.add_parser("notebook", help="run notebooks headless, or strip their outputs")
    book.add_argument("action", choices=["run", "strip"])
    book.add_argument("paths", nargs="+")
    book.add_argument("--timeout", type=int, default=900, help="run: seconds one cell may take")
    book.add_argument("--save-to", help="run: keep the executed copies in this folder")
    book.set_defaults(func=_notebook)
    return parser


def main(argv: list[str] | None = None) -> int:
    global _json_output
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = JSON_FLAG in argv  # anywhere: `mlops-sandbox model list --json` as well as before the command
    argv = ([JSON_FLAG] if wants_json else []) + [a for a in argv if a != JSON_FLAG]
    args = build_parser().parse_args(argv)
    _json_output = args.json or not sys.stdout.isatty()
    try:
        return args.func(args)
    except (ValueError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
