"""DNS rebinding protection on the running stack: every HTTP service refuses a request whose Host header is a name
that is not its own (what a browser sends when a hostile page has pointed its own name at 127.0.0.1), and still
answers the browser on localhost, the other containers by service name, and its healthcheck.

Each service checks with its own means: the predictor, Evidently and the Airflow API server with
`mlops_sandbox.hostcheck` (400), MLflow with `--allowed-hosts` (403), JupyterLab with
`ServerApp.allow_remote_access=False` (403).
"""

from __future__ import annotations

import json
import subprocess
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.stack

HOSTILE = "evil.example"
# service -> (a path that answers without a login, the status a foreign Host gets)
CHECKED = {
    "predictor": ("/health", 400),
    # MLflow's /health and /version answer any Host (they tell a page nothing): ask the API
    "mlflow": ("/ajax-api/2.0/mlflow/experiments/search?max_results=1", 403),
    "airflow-apiserver": ("/api/v2/monitor/health", 400),
    "evidently": ("/api/version", 400),
    "jupyter": ("/api", 403),
}
# where the other containers reach each service (compose service name and container port)
IN_THE_NETWORK = {
    "predictor": "http://predictor:8000",
    "mlflow": "http://mlflow:5000",
    "airflow-apiserver": "http://airflow-apiserver:8080",
    "evidently": "http://evidently:8000",
    "jupyter": "http://jupyter:8888",
}


def _host_url(settings, service: str) -> str:
    return {
        "predictor": settings.predictor_url,
        "mlflow": settings.mlflow_tracking_uri,
        "airflow-apiserver": settings.airflow_url,
        "evidently": settings.evidently_url,
        "jupyter": settings.jupyter_url,
    }[service]


@pytest.mark.parametrize("service", sorted(CHECKED))
def test_a_foreign_host_is_refused_and_the_browsers_host_still_answers(settings, service):
    path, refused = CHECKED[service]
    url = _host_url(settings, service) + path
    port = urlsplit(url).port
    answered = requests.get(url, timeout=30, allow_redirects=False)  # Host: localhost:PORT, as the browser sends
    assert answered.status_code == 200, (url, answered.status_code, answered.text[:300])
    by_address = requests.get(url, headers={"Host": f"127.0.0.1:{port}"}, timeout=30, allow_redirects=False)
    assert by_address.status_code == 200, (url, by_address.status_code)
    for host in (HOSTILE, f"{HOSTILE}:{port}", f"localhost.{HOSTILE}:{port}"):
        resp = requests.get(url, headers={"Host": host}, timeout=30, allow_redirects=False)
        assert resp.status_code == refused, (service, host, resp.status_code, resp.text[:300])


# --- cross-site request forgery ---------------------------------------------------------------------------
# service -> a path that changes something when POSTed (MLflow refuses with its own CORS blocking middleware)
FORGED = {
    "predictor": "/predict",
    "airflow-apiserver": "/auth/token",
    "evidently": "/api/projects",
    "mlflow": "/api/2.0/mlflow/experiments/create",
}


@pytest.mark.parametrize("service", sorted(FORGED))
def test_a_cross_site_post_is_refused_and_the_services_own_pages_are_not(settings, service):
    """What a hostile page's form or fetch sends: the right Host (localhost), a body a browser sends without a
    CORS preflight (text/plain), and the page's own site in Origin."""
    url = _host_url(settings, service) + FORGED[service]
    body = json.dumps({"forged": True})  # invalid everywhere: the service's own page changes nothing either
    for origin in (f"http://{HOSTILE}", "http://203.0.113.7"):  # a page served by name, or from an address
        forged = requests.post(url, data=body, headers={"Origin": origin, "Content-Type": "text/plain"}, timeout=30)
        assert forged.status_code == 403, (service, origin, forged.status_code, forged.text[:300])
    own = requests.post(url, data=body, headers={"Origin": _host_url(settings, service)}, timeout=30)
    assert own.status_code != 403, (service, own.status_code, own.text[:300])


# Run inside the predictor's container: each service by its compose name, then the same with a foreign Host.
ASK_BY_NAME = """
import json, sys, urllib.error, urllib.request

def status(url, host=None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code

print(json.dumps({url: [status(url), status(url, sys.argv[1])] for url in json.loads(sys.argv[2])}))
"""


def test_the_containers_reach_each_service_by_its_compose_name(compose):
    urls = {service: IN_THE_NETWORK[service] + path for service, (path, _) in CHECKED.items()}
    urls["airflow-apiserver execution API"] = "http://airflow-apiserver:8080/execution/health"
    out = compose("exec", "-T", "predictor", "python", "-c", ASK_BY_NAME, HOSTILE, json.dumps(list(urls.values())))
    answers = json.loads(out.stdout.strip().splitlines()[-1])
    for service, url in urls.items():
        by_name, foreign = answers[url]
        assert by_name == 200, (service, url, by_name)
        assert 400 <= foreign < 500, (service, url, foreign)


# --- default secrets off loopback ----------------------------------------------------------------------------
def test_the_stack_refuses_to_start_off_loopback_on_a_default_secret(compose):
    """What `BIND_ADDRESS=0.0.0.0 docker compose up` runs first, and every service waits for: it fails, naming
    each secret to set; with every secret set it passes (and on loopback the defaults pass)."""
    from mlops_sandbox.preflight import DEFAULT_SECRETS, random_secrets

    refused = compose("run", "--rm", "--no-deps", "-e", "BIND_ADDRESS=0.0.0.0", "preflight", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refusing to start" in refused.stderr and "make secrets" in refused.stderr
    assert all(name in refused.stderr for name in DEFAULT_SECRETS)

    chosen = [arg for name, value in random_secrets().items() for arg in ("-e", f"{name}={value}")]
    allowed = compose("run", "--rm", "--no-deps", "-e", "BIND_ADDRESS=0.0.0.0", *chosen, "preflight", check=False)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert compose("run", "--rm", "--no-deps", "preflight", check=False).returncode == 0


# --- least privilege -----------------------------------------------------------------------------------------
CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "SETGID": 6, "SETUID": 7}
# service -> (the uid its main process runs as, the capabilities it may still hold: None = Docker's default set)
PRIVILEGES = {
    "mlflow": (1000, ()),
    "predictor": (1000, ()),
    "evidently": (1000, ()),
    "jupyter": (None, ()),  # the owner of notebooks/ (JUPYTER_UID), as the stack was started: checked below
    "airflow-apiserver": (50000, ()),
    "airflow-dag-processor": (50000, ()),
    "minio": (0, ()),  # the image's user, owning /data: root with no capability
    "postgres": (None, ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")),  # the entrypoint's, to own PGDATA
    "airflow-scheduler": (0, None),  # the Docker socket; writes logs the airflow user owns
}


def _status(compose, service: str) -> dict[str, str]:
    out = compose("exec", "-T", service, "cat", "/proc/1/status").stdout
    return {key: value.strip() for key, _, value in (line.partition(":") for line in out.splitlines())}


@pytest.mark.parametrize("service", sorted(PRIVILEGES))
def test_each_service_runs_with_least_privilege(compose, service):
    """Seen from inside the container: the main process's user, its capability bounding set (what it or any
    child could ever hold), and no privilege gain through setuid binaries."""
    uid, allowed = PRIVILEGES[service]
    status = _status(compose, service)
    assert status["NoNewPrivs"] == "1"
    if uid is not None:
        assert int(status["Uid"].split()[0]) == uid
    if allowed is not None:
        assert int(status["CapBnd"], 16) == sum(1 << CAP_BITS[name] for name in allowed)
    if service == "jupyter":  # the user the stack was started with, not root
        (container,) = compose("ps", "-q", "jupyter").stdout.split()
        configured = subprocess.run(
            ["docker", "inspect", "--format", "{{.Config.User}}", container], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert int(status["Uid"].split()[0]) == int(configured.split(":")[0]) != 0, configured
    if service == "postgres":  # the server itself runs as postgres, holding none
        assert int(status["Uid"].split()[0]) != 0 and int(status["CapEff"], 16) == 0


def test_the_one_shot_services_ran_locked_down_too(compose):
    for service in ("preflight", "minio-init", "airflow-init"):
        ids = compose("ps", "-a", "-q", service).stdout.split()
        assert ids, service
        inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, check=True).stdout)
        for container in inspected:
            assert container["HostConfig"]["CapDrop"] == ["ALL"], service
            assert "no-new-privileges:true" in container["HostConfig"]["SecurityOpt"], service
