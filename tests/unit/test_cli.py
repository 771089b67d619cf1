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
