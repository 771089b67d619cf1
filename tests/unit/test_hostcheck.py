"""DNS rebinding protection (`mlops_sandbox.hostcheck`): the services answer their own Host names only, and the
names the stack itself uses (the browser's localhost, the compose service names, the healthchecks) still pass."""

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient
from serving_stand_ins import DeclaredExperiment, FixedRegistry

from mlops_sandbox.config import Settings
from mlops_sandbox.hostcheck import AllowedHosts, HostCheck
from mlops_sandbox.serve.app import create_app
from mlops_sandbox.serve.schema import EXAMPLES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PREDICTOR = AllowedHosts("localhost,predictor")  # compose's PREDICTOR_ALLOWED_HOSTS
HOSTILE = [
    "evil.example",
    "evil.example:8000",
    "localhost.evil.example",
    "localhost.evil.example:8000",
    "predictor.evil.example:8000",
    "evil-localhost:8000",
    "127.0.0.1.evil.example",
    "notpredictor:8000",
]
MALFORMED = [None, "", "localhost:", "localhost:80x", "localhost:8000 evil.example", "a:b:c", "[::1", "[::1]8000"]


# --- the list of names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LocalHost:8000", "predictor", "predictor:8000"])
def test_the_listed_names_pass_with_and_without_a_port(host):
    assert PREDICTOR.allows(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "[::1]:8000", "[::1]", "10.244.0.17:8000"])
def test_an_ip_address_always_passes_no_dns_answer_can_stand_behind_it(host):
    # the test's second predictor (127.0.0.1:<port>), a kubelet probe or a Prometheus scrape (the pod's IP)
    assert PREDICTOR.allows(host)


@pytest.mark.parametrize("host", HOSTILE + MALFORMED)
def test_other_names_and_malformed_hosts_are_refused(host):
    assert not PREDICTOR.allows(host)


def test_a_leading_dot_allows_a_name_and_every_name_under_it_a_star_only_those_under_it():
    allowed = AllowedHosts(".predictor.ns.svc.cluster.local, *.example.com")
    assert allowed.allows("predictor.ns.svc.cluster.local:8000")
    assert allowed.allows("predictor-0.predictor.ns.svc.cluster.local:8000")
    assert allowed.allows("a.example.com") and allowed.allows("a.b.example.com:443")
    assert not allowed.allows("example.com") and not allowed.allows("badexample.com")
    assert not allowed.allows("xpredictor.ns.svc.cluster.local") and not allowed.allows("localhost")
    assert AllowedHosts("*").allows("evil.example")


@pytest.mark.parametrize("pattern", ["predictor:8000", "local*host", "*example.com", "*.ex*ample.com", "a/b"])
def test_a_pattern_that_would_never_match_as_meant_is_refused_at_start(pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        AllowedHosts(f"localhost,{pattern}")


# --- the ASGI middleware -------------------------------------------------------------------------------------


def _call(allowed: str, scope: dict, setting: str = "") -> tuple[list[dict], list[dict]]:
    """Run HostCheck (`allowed`) on one request; returns what the app behind it saw (scopes) and what was sent
    back."""
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(HostCheck(app, allowed, setting)(scope, receive, send))
    return reached, sent


def _http(*hosts: bytes) -> dict:
    return {"type": "http", "path": "/predict", "headers": [(b"host", h) for h in hosts] + [(b"accept", b"*/*")]}


def test_an_allowed_host_reaches_the_app_and_another_gets_400_naming_the_setting():
    reached, sent = _call("localhost,predictor", _http(b"predictor:8000"), "PREDICTOR_ALLOWED_HOSTS")
    assert len(reached) == 1 and sent[0]["status"] == 204
    reached, sent = _call("localhost,predictor", _http(b"evil.example:8000"), "PREDICTOR_ALLOWED_HOSTS")
    assert not reached
    assert sent[0]["status"] == 400 and (b"content-type", b"application/json") in sent[0]["headers"]
    assert "PREDICTOR_ALLOWED_HOSTS" in json.loads(sent[1]["body"])["detail"]


def test_a_request_without_a_host_or_with_two_is_refused():
    for scope in (_http(), _http(b"localhost", b"evil.example"), _http(b"localhost", b"localhost")):
        reached, sent = _call("localhost", scope)
        assert not reached and sent[0]["status"] == 400


def test_a_websocket_handshake_from_another_host_is_closed_before_it_is_accepted():
    reached, sent = _call("localhost", {"type": "websocket", "headers": [(b"host", b"evil.example")]})
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]


def _from(method: str, origin: bytes | None, host: bytes = b"localhost:8000") -> dict:
    headers = [(b"host", host)] + ([] if origin is None else [(b"origin", origin)])
    return {"type": "http", "method": method, "path": "/predict", "headers": headers}


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"https://evil.example:8000",
        b"null",
        b"http://localhost.evil.example",
        b"file://",
        b"http://203.0.113.7",  # a page served from an address: no DNS rebinding needed, but still another site
        b"https://[2001:db8::1]",
        b"http://192.168.1.50:8000",
    ],
)
def test_a_cross_site_post_is_refused_with_403_naming_the_setting(origin):
    """What a hostile page's form or fetch sends to a service on this machine: the right Host, its own Origin."""
    reached, sent = _call("localhost,predictor", _from("POST", origin), "PREDICTOR_ALLOWED_HOSTS")
    assert not reached and sent[0]["status"] == 403
    detail = json.loads(sent[1]["body"])["detail"]
    assert "Cross-site" in detail and "PREDICTOR_ALLOWED_HOSTS" in detail


@pytest.mark.parametrize(
    "method, origin",
    [
        ("POST", None),  # curl, requests, the other containers
        ("POST", b"http://localhost:8000"),  # the service's own Swagger UI
        ("POST", b"http://127.0.0.1:8000"),
        ("POST", b"http://predictor:8000"),
        ("PUT", b"http://localhost:3000"),  # a page of this machine's, on another port
        ("POST", b"http://[::1]:8000"),
        ("GET", b"http://evil.example"),  # reads: the Host check and the browser's same-origin rule cover them
        ("OPTIONS", b"http://evil.example"),
    ],
)
def test_requests_without_a_foreign_origin_and_reads_pass(method, origin):
    reached, sent = _call("localhost,predictor", _from(method, origin))
    assert len(reached) == 1 and sent[0]["status"] == 204


def test_a_page_on_the_address_the_request_was_sent_to_may_post():
    """The stack opened to a network (BIND_ADDRESS) and browsed by its address: the page and the request share it."""
    reached, sent = _call("localhost", _from("POST", b"http://192.168.1.50:8000", host=b"192.168.1.50:8000"))
    assert len(reached) == 1 and sent[0]["status"] == 204


def test_a_websocket_from_a_foreign_origin_is_closed_before_it_is_accepted():
    scope = {"type": "websocket", "headers": [(b"host", b"localhost:8000"), (b"origin", b"http://evil.example")]}
    reached, sent = _call("localhost", scope)
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]


def test_a_star_allows_every_host_and_origin():
    reached, _ = _call("*", _from("POST", b"http://evil.example", host=b"evil.example"))
    assert len(reached) == 1


def test_lifespan_passes_through():
    reached, _ = _call("localhost", {"type": "lifespan"})
    assert reached == [{"type": "lifespan"}]


def test_the_module_imports_the_standard_library_only():
    # The Airflow image installs the library without its dependencies, and its plugin imports this module.
    probe = "import sys, mlops_sandbox.hostcheck; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    outside = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names) - {"mlops_sandbox"}
    assert not {m for m in outside if not m.startswith("_")}, outside


# --- the prediction service ----------------------------------------------------------------------------------


@pytest.fixture
def predictor() -> TestClient:
    """The service as compose runs it (PREDICTOR_ALLOWED_HOSTS at its default), with a production model."""
    production = FixedRegistry("house-prices", "http://unused")
    production.refresh()
    settings = Settings(_env_file=None, model_poll_seconds=3600, capture_enabled=False)
    assert settings.predictor_allowed_hosts == "localhost,predictor"
    # no `with`: the lifespan (registry poller) does not run
    return TestClient(create_app(settings, production, None, DeclaredExperiment()), base_url="http://localhost:8000")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example:8000"])
def test_the_predictor_refuses_another_host_on_predict_and_health(predictor, host):
    refused = predictor.post("/predict", json=EXAMPLES["house_prices"], headers={"Host": host})
    assert refused.status_code == 400 and "predictions" not in refused.json()
    assert predictor.get("/health", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["localhost:8000", "predictor:8000", "127.0.0.1:8000", "localhost"])
def test_the_predictor_answers_the_browser_the_other_containers_and_the_healthcheck(predictor, host):
    answered = predictor.post("/predict", json=EXAMPLES["house_prices"], headers={"Host": host})
    assert answered.status_code == 200 and answered.json()["predictions"] == [5_500_000.0]
    assert predictor.get("/health", headers={"Host": host}).json()["model_loaded"] is True


def test_a_bad_predictor_allowed_hosts_fails_the_start_not_the_requests():
    settings = Settings(_env_file=None, capture_enabled=False, predictor_allowed_hosts="localhost,predictor:8000")
    with pytest.raises(ValueError, match="predictor:8000"):
        create_app(settings, FixedRegistry("house-prices", "http://unused"), None, DeclaredExperiment())


# --- the Evidently UI ----------------------------------------------------------------------------------------


def test_the_evidently_ui_answers_its_names_only(tmp_path):
    from mlops_sandbox.monitor import ui

    app = ui.create_app(str(tmp_path / "workspace"), Settings(_env_file=None).evidently_allowed_hosts)
    client = TestClient(app, base_url="http://localhost:8001")
    for host in ("localhost:8001", "evidently:8000", "127.0.0.1:8001"):
        version = client.get("/api/version", headers={"Host": host})
        assert version.status_code == 200 and version.json()["application"] == "Evidently UI", host
    for host in ("evil.example", "evil.example:8001"):
        assert client.get("/api/version", headers={"Host": host}).status_code == 400
        assert client.get("/api/projects", headers={"Host": host}).status_code == 400


# --- compose.yaml: every name the stack calls passes --------------------------------------------------------


def _compose() -> dict:
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", (ROOT / "compose.yaml").read_text())  # compose's defaults
    return yaml.safe_load(text)


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"[A-Z][A-Z0-9_]*=", line))


def test_compose_env_example_and_settings_have_one_default_per_list():
    services = _compose()["services"]
    env = _env_example()
    defaults = Settings(_env_file=None)
    assert services["predictor"]["environment"]["PREDICTOR_ALLOWED_HOSTS"] == env["PREDICTOR_ALLOWED_HOSTS"]
    assert env["PREDICTOR_ALLOWED_HOSTS"] == defaults.predictor_allowed_hosts
    assert services["evidently"]["environment"]["EVIDENTLY_ALLOWED_HOSTS"] == env["EVIDENTLY_ALLOWED_HOSTS"]
    assert env["EVIDENTLY_ALLOWED_HOSTS"] == defaults.evidently_allowed_hosts
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert services[name]["environment"]["AIRFLOW_ALLOWED_HOSTS"] == env["AIRFLOW_ALLOWED_HOSTS"]
    assert services["evidently"]["command"][:2] == ["mlops-sandbox", "evidently-ui"]


def test_every_url_the_stack_calls_and_every_healthcheck_passes_the_check_of_the_service_it_names():
    services = _compose()["services"]
    checks = {
        "predictor": AllowedHosts(services["predictor"]["environment"]["PREDICTOR_ALLOWED_HOSTS"]).allows,
        "evidently": AllowedHosts(services["evidently"]["environment"]["EVIDENTLY_ALLOWED_HOSTS"]).allows,
        "airflow-apiserver": AllowedHosts(services["airflow-apiserver"]["environment"]["AIRFLOW_ALLOWED_HOSTS"]).allows,
    }
    called = set()
    for name, service in services.items():
        environment = service.get("environment") or {}
        urls = [v for k, v in environment.items() if k.endswith(("_URL", "_URI")) and "://" in str(v)]
        test = service.get("healthcheck", {}).get("test", [])
        urls += re.findall(r"http://[\w.:-]+", " ".join(test))
        for url in urls:
            target = urlsplit(url).hostname
            target = name if target == "localhost" else target  # a healthcheck asks its own container
            if target in checks:
                assert checks[target](urlsplit(url).netloc), f"{name} calls {url}: {target} would refuse it"
                called.add(target)
    assert called == set(checks)
    # and from the host, the browser's Host: localhost:PORT
    for target, port in (("predictor", 8000), ("evidently", 8001), ("airflow-apiserver", 8080)):
        assert checks[target](f"localhost:{port}") and not checks[target]("evil.example")


def test_mlflow_and_jupyter_keep_their_own_checks_on():
    services = _compose()["services"]
    (hosts,) = [arg.split("=", 1)[1] for arg in services["mlflow"]["command"] if arg.startswith("--allowed-hosts=")]
    assert "*" not in hosts.split(",") and {"mlflow:*", "localhost:*"} <= set(hosts.split(","))
    jupyter = services["jupyter"]["command"]
    assert "--ServerApp.allow_remote_access=False" in jupyter
    assert {"--ServerApp.local_hostnames=localhost", "--ServerApp.local_hostnames=jupyter"} <= set(jupyter)
