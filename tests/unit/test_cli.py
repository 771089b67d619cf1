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
