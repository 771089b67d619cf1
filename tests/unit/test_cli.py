import json

import pytest

from mlops_sandbox import cli
from mlops_sandbox.health import Check

pytestmark = pytest.mark.unit


def test_check_stack_exit_code_follows_the_checks(monkeypatch, capsys):
    monkeypatch.setattr("mlops_sandbox.health.check_stack", lambda: [Check("mlflow", True, "HTTP 200")])
    assert cli.main(["check-stack"]) == 0
    monkeypatch.setattr(
        "mlops_sandbox.health.check_stack",
        lambda: [Check("mlflow", True, "HTTP 200"), Check("bucket:raw_data", False, "raw-data is missing")],
    )
    assert cli.main(["check-stack"]) == 1
    assert "FAIL bucket:raw_data" in capsys.readouterr().out


def test_unknown_command_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])


def test_trigger_refuses_params_that_are_not_a_json_object(capsys):
    assert cli.main(["trigger", "training_pipeline", "--conf", "[1, 2]"]) == 2
    assert "JSON object" in capsys.readouterr().err
    assert cli.main(["trigger", "training_pipeline", "--conf", "{not json"]) == 2


def test_challenge_takes_a_start_or_since_alert_not_both(capsys):
    assert cli.main(["challenge", "--since-alert", "--start", "2026-01-01T00:00Z"]) == 2
    assert "not both" in capsys.readouterr().err


def test_simulate_start_next_needs_the_bucket(tmp_path, capsys):
    assert cli.main(["simulate", "--start", "next", "--out", str(tmp_path)]) == 2
    assert "--start next" in capsys.readouterr().err


def _summary_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("{")]


def test_summary_line_is_also_the_pod_xcom_when_the_xcom_folder_exists(tmp_path, monkeypatch, capsys):
    batches = ["simulate", "--out", str(tmp_path), "--rows", "3", "--start", "2026-01-01T00:00Z"]
    monkeypatch.setattr(cli, "XCOM_DIR", tmp_path / "absent")
    assert cli.main(batches) == 0
    assert not (tmp_path / "absent").exists()  # outside a pod: stdout only
    capsys.readouterr()

    xcom_dir = tmp_path / "xcom"
    xcom_dir.mkdir()
    monkeypatch.setattr(cli, "XCOM_DIR", xcom_dir)
    assert cli.main(batches) == 0
    line = _summary_lines(capsys.readouterr().out)[-1]
    # KubernetesPodOperator json.loads return.json: the XCom is DockerOperator's, the printed line as a str
    assert json.loads((xcom_dir / "return.json").read_text()) == line
    assert json.loads(line)["rows_per_batch"] == 3


def test_monitor_leaves_its_summary_as_xcom_also_when_it_fails_on_decay(tmp_path, monkeypatch, capsys):
    status = {
        "window_start": "2026-01-01T00:00:00+00:00",
        "window_end": "2026-01-01T00:05:00+00:00",
        "decay": True,
        "reasons": ["drift: 60% of features drifted (limit 50%)"],
        "figures": {"rows": 40, "labelled_rows": 0, "drift_share": 0.6, "mae": None},
        "quarantined_files": [],
    }
    monkeypatch.setattr("mlops_sandbox.monitor.steps.run_window", lambda *args: status)
    monkeypatch.setattr(cli, "XCOM_DIR", tmp_path)
    assert cli.main(["monitor", "--fail-on-decay"]) == 3
    out = capsys.readouterr()
    assert "DECAY: drift: 60%" in out.err
    summary = json.loads(json.loads((tmp_path / "return.json").read_text()))
    assert summary["decay"] is True and summary["drift_share"] == 0.6
    assert json.dumps(summary) == _summary_lines(out.out)[-1]


def test_model_experiment_sets_the_mode_and_prints_the_state(monkeypatch, capsys):
    calls = []

    def set_experiment(mode, actor, reason, share=None, name=None, settings=None):
        calls.append((mode, actor, reason, share, name))
        return {"model_name": name or "house-prices", "mode": mode, "share": share or 0.0, "candidate_version": "2"}

    monkeypatch.setattr("mlops_sandbox.registry.set_experiment", set_experiment)
    monkeypatch.setattr(
        "mlops_sandbox.registry.get_experiment", lambda name=None, settings=None: {"mode": "ab", "share": 0.1}
    )
    assert cli.main(["model", "experiment", "ab", "--share", "0.1", "--by", "alice", "--reason", "try v2"]) == 0
    assert json.loads(_summary_lines(capsys.readouterr().out)[-1])["mode"] == "ab"
    assert cli.main(["model", "--name", "houses", "experiment", "shadow", "--by", "bob", "--reason", "pairs"]) == 0
    assert cli.main(["model", "experiment", "off", "--by", "bob", "--reason", "done"]) == 0
    assert calls == [
        ("ab", "alice", "try v2", 0.1, None),
        ("shadow", "bob", "pairs", None, "houses"),
        ("off", "bob", "done", None, None),
    ]
    capsys.readouterr()
    assert cli.main(["model", "experiment", "status"]) == 0
    assert json.loads(_summary_lines(capsys.readouterr().out)[-1]) == {"mode": "ab", "share": 0.1}


def test_model_experiment_refuses_a_share_out_of_range(capsys):
    assert cli.main(["model", "experiment", "ab", "--share", "0.9", "--by", "alice", "--reason", "x"]) == 2
    assert "outside (0, 0.5]" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ab without --share
        cli.main(["model", "experiment", "ab", "--by", "alice", "--reason", "x"])


def test_a_refused_promotion_prints_every_check_with_its_figures(monkeypatch, capsys):
    from mlops_sandbox.registry import CheckResult, PromotionRefused

    checks = [
        CheckResult("staged_first", True, "holds 'staging'"),
        CheckResult(
            "online_comparison", False, "worse than production online: RMSE 12 vs 10; 400 labelled, minimum 200"
        ),
    ]

    def promote(*args, **kwargs):
        raise PromotionRefused("house-prices", "2", "production", checks[1:], checks)

    monkeypatch.setattr("mlops_sandbox.registry.promote", promote)
    assert cli.main(["model", "promote", "2", "--to", "production", "--by", "alice", "--reason", "x"]) == 1
    err = capsys.readouterr().err
    assert "  ok   staged_first: holds 'staging'" in err
    assert "  FAIL online_comparison: worse than production online: RMSE 12 vs 10; 400 labelled, minimum 200" in err


VERSIONS = [
    {"version": "2", "aliases": ["production"], "model_type": "mlp", "test_mae": 512345.678, "test_r2": 0.8123},
    {"version": "1", "aliases": [], "model_type": "linear", "test_mae": 601234.5, "test_r2": None},
]


def _on_a_terminal(monkeypatch, yes: bool) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: yes)


def test_a_person_at_a_terminal_reads_a_table_and_scripts_read_json_lines(monkeypatch, capsys):
    monkeypatch.setattr("mlops_sandbox.registry.list_versions", lambda name=None: VERSIONS)
    _on_a_terminal(monkeypatch, True)
    assert cli.main(["model", "list"]) == 0
    header, newest, oldest = capsys.readouterr().out.splitlines()
    assert header.split() == ["version", "aliases", "model_type", "test_mae", "test_r2"]
    assert newest.split() == ["2", "production", "mlp", "512,346", "0.8123"]
    assert oldest.split() == ["1", "-", "linear", "601,234", "-"]
    for argv in (["model", "list", "--json"], ["--json", "model", "list"]):
        assert cli.main(argv) == 0
        assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == VERSIONS
    _on_a_terminal(monkeypatch, False)  # piped, or a pipeline step's container: JSON, as before
    assert cli.main(["model", "list"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == VERSIONS


def test_a_summary_for_a_person_aligns_fields_and_nests_objects(monkeypatch, capsys):
    summary = {"window_start": "2026-01-01T00:00:00+00:00", "decay": False, "rows": 80, "mae": 6.2e5,
               "reasons": [], "windows": [{"rows": 50, "decay": True}, {"rows": 30, "decay": False}]}  # fmt: skip
    monkeypatch.setattr("mlops_sandbox.monitor.steps.run_window", lambda *a, **k: None)
    monkeypatch.setattr("mlops_sandbox.monitor.steps.window_summary", lambda status: summary)
    _on_a_terminal(monkeypatch, True)
    assert cli.main(["monitor"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "window_start  2026-01-01T00:00:00+00:00",
        "decay         no",
        "rows          80",
        "mae           620,000",
        "reasons       -",
        "windows:",
        "  rows  decay",
        "  50    yes",
        "  30    no",
    ]
    assert cli.main(["monitor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == summary


def test_trigger_wait_shows_each_task_state_as_it_changes(monkeypatch, capsys):
    states = iter([{"ingest": "running"}, {"ingest": "running"}, {"ingest": "success", "train": "queued"}])
    last = {"ingest": "success", "train": "success"}

    class Airflow:
        def wait_for_dag(self, dag_id):
            pass

        def trigger(self, dag_id, conf):
            return "manual__1"

        def task_states(self, dag_id, run_id):
            return next(states, last)

        def wait(self, dag_id, run_id, timeout, progress=None):
            for _ in range(4):
                progress()
            return "success"

    monkeypatch.setattr("mlops_sandbox.airflow_api.AirflowAPI", Airflow)
    _on_a_terminal(monkeypatch, True)
    assert cli.main(["trigger", "training_pipeline", "--wait"]) == 0
    shown = [line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert shown[:4] == [["ingest", "running"], ["ingest", "success"], ["train", "queued"], ["train", "success"]]


def test_model_experiment_status_shows_the_newest_comparison_and_what_promotion_would_say(monkeypatch, capsys):
    from mlops_sandbox import registry

    declared = {"model_name": "house-prices", "mode": "shadow", "share": 0.0, "candidate_version": "3"}
    monkeypatch.setattr(registry, "get_experiment", lambda name=None, settings=None: dict(declared))
    comparison = {
        "until": "2026-10-01T01:00:00+00:00",
        "mode": "shadow",
        "verdict": "worse",
        "summary": "candidate MAE higher by 900 [400, 1400]",
        "comparison": {"labelled": 240, "difference": 900.0, "low": 400.0, "high": 1400.0},
    }
    asked = []

    def latest_comparison(settings, scenario, candidate_version, s3=None):
        asked.append((scenario, candidate_version))
        return comparison

    monkeypatch.setattr(registry, "latest_comparison", latest_comparison)
    assert cli.main(["model", "experiment", "status"]) == 0
    status = json.loads(_summary_lines(capsys.readouterr().out)[-1])
    assert asked == [("house_prices", "3")]
    assert status["comparison"]["verdict"] == "worse" and status["comparison"]["mae_difference"] == 900.0
    assert status["comparison"]["labelled"] == 240 and status["comparison"]["low"] == 400.0
    assert status["online_check"]["passed"] is False
    assert "worse than production online" in status["online_check"]["detail"]

    monkeypatch.setattr(registry, "latest_comparison", lambda *args, **kwargs: None)
    assert cli.main(["model", "experiment", "status"]) == 0
    status = json.loads(_summary_lines(capsys.readouterr().out)[-1])
    assert status["comparison"] is None and status["online_check"]["passed"] is True

    def unreadable(*args, **kwargs):
        raise ValueError("an object that is not JSON")

    monkeypatch.setattr(registry, "latest_comparison", unreadable)
    assert cli.main(["model", "experiment", "status"]) == 0  # the experiment's state still shows
    status = json.loads(_summary_lines(capsys.readouterr().out)[-1])
    assert status["mode"] == "shadow" and status["comparison"] is None and not status["online_check"]["passed"]
    assert "could not read the online comparisons of house_prices" in status["online_check"]["detail"]
