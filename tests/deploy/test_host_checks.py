"""DNS rebinding protection on the cluster: every HTTP service answers only its own Host names, and every name
the stack itself uses passes: the Service names the pods call, the kubelet's probes (the pod's IP, or the Host
a probe names), and the production Ingress hosts.

Each check is the service's own: `mlops_sandbox.hostcheck` (predictor, Evidently, the Airflow API server through
its plugin), MLflow's `is_allowed_host_header`, and JupyterLab's rule (loopback addresses and `local_hostnames`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from conftest import DEPLOY, by_kind, containers, object_name, render, workloads

from mlops_sandbox.hostcheck import AllowedHosts

pytestmark = pytest.mark.deploy

NAMESPACE = "mlops-sandbox"
POD_IP = "10.244.0.17"  # what a kubelet probe or a Prometheus scrape sends as Host, with the port
HOSTILE = ("evil.example", "evil.example:8000", f"predictor.{NAMESPACE}.svc.evil.example", "localhost.evil.example")
# workload (and Service) -> the setting that lists the names it answers (None: they are in its command line)
CHECKED = {
    "predictor": "PREDICTOR_ALLOWED_HOSTS",
    "evidently": "EVIDENTLY_ALLOWED_HOSTS",
    "airflow-apiserver": "AIRFLOW_ALLOWED_HOSTS",
    "mlflow": "MLFLOW_SERVER_ALLOWED_HOSTS",
    "jupyter": None,
}


def env_value(rendered: list[dict], container: dict, key: str) -> str | None:
    """What the kubelet sets `key` to in `container`: its own `env` first, then the ConfigMaps it takes whole."""
    configmaps = by_kind(rendered, "ConfigMap")
    for env in container.get("env", []):
        if env["name"] == key:
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            return configmaps[ref["name"]]["data"][ref["key"]] if ref else env["value"]
    for source in reversed(container.get("envFrom", [])):  # a later source wins
        data = configmaps.get(source.get("configMapRef", {}).get("name"), {}).get("data", {})
        if key in data:
            return data[key]
    return None


def jupyter_allows(command: list[str]) -> Callable[..., bool]:
    """JupyterLab's own check (jupyter_server's `JupyterHandler.check_host`), with the flags of `command`."""
    assert "--ServerApp.allow_remote_access=False" in command, "Jupyter's Host check is off"
    names = {arg.split("=", 1)[1] for arg in command if arg.startswith("--ServerApp.local_hostnames=")}

    def allows(host: str, path: str = "/") -> bool:  # noqa: ARG001 - every path is checked
        name = re.match(r"^(.*?)(:\d+)?$", host).group(1).removeprefix("[").removesuffix("]")
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return name in names

    return allows


def host_check(rendered: list[dict], name: str) -> Callable[..., bool]:
    """The Host check of workload `name`, as its container is configured in `rendered`."""
    container = containers(workloads(rendered)[name], init=False)[0]
    if name == "jupyter":
        return jupyter_allows(container["command"])
    allowed = env_value(rendered, container, CHECKED[name])
    assert allowed, f"{object_name(workloads(rendered)[name])}: no {CHECKED[name]}"
    if name == "mlflow":
        from mlflow.server.security_utils import is_allowed_host_header, is_health_endpoint

        patterns = [p.strip() for p in allowed.split(",")]
        assert "*" not in patterns
        # /health and /version answer any Host (MLflow exempts them: they tell a page nothing)
        return lambda host, path="/": is_health_endpoint(path) or is_allowed_host_header(patterns, host)
    check = AllowedHosts(allowed)
    return lambda host, path="/": check.allows(host)  # every path is checked


def checked_workloads(rendered: list[dict]) -> list[str]:
    return [name for name in CHECKED if name in workloads(rendered)]


def test_every_http_service_answers_its_service_names_and_refuses_others(rendered):
    services = by_kind(rendered, "Service")
    for name in checked_workloads(rendered):
        allows = host_check(rendered, name)
        (port,) = [p["port"] for p in services[name]["spec"]["ports"]]
        for host in (f"{name}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"):
            assert allows(host), f"{name} refuses Host {host}"
        if name != "mlflow":  # MLflow's list names the Service only (the URL its clients have)
            for qualified in (
                f"{name}.{NAMESPACE}",
                f"{name}.{NAMESPACE}.svc",
                f"{name}.{NAMESPACE}.svc.cluster.local",
            ):
                assert allows(f"{qualified}:{port}"), f"{name} refuses Host {qualified}:{port}"
        for host in HOSTILE:
            assert not allows(host), f"{name} answers Host {host}"
    # the Evidently UI runs behind the library's check, not as a bare `evidently ui`
    evidently = containers(workloads(rendered)["evidently"], init=False)[0]
    assert evidently["command"][:2] == ["mlops-sandbox", "evidently-ui"]


def test_every_http_probe_passes_its_containers_host_check(rendered):
    probed = 0
    for name in checked_workloads(rendered):
        allows = host_check(rendered, name)
        container = containers(workloads(rendered)[name], init=False)[0]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind, {}).get("httpGet")
            if probe is None:
                continue
            port = ports.get(probe["port"], probe["port"])
            headers = {h["name"].lower(): h["value"] for h in probe.get("httpHeaders", [])}
            host = headers.get("host", f"{POD_IP}:{port}")  # without a Host header, the kubelet sends the pod's IP
            assert allows(host, probe["path"]), f"{name} {kind}: Host {host} is refused, so the probe would fail"
            probed += 1
    assert probed >= 2 * 4


def test_the_urls_the_stack_calls_pass_the_host_check_of_the_service_they_name(rendered):
    settings = by_kind(rendered, "ConfigMap")
    urls = {
        **settings.get("mlops-sandbox-settings", {}).get("data", {}),
        **settings.get("airflow-settings", {}).get("data", {}),
    }
    called = {key: value for key, value in urls.items() if key.endswith(("_URL", "_URI")) and "://" in value}
    names = set(checked_workloads(rendered))
    seen = set()
    for key, url in called.items():
        service = urlsplit(url).hostname
        if service in names:
            assert host_check(rendered, service)(urlsplit(url).netloc), f"{key}={url} is refused by {service}"
            seen.add(service)
    # the predictor, Evidently, MLflow, and the Airflow API (the tasks' execution API and the REST clients)
    if "airflow-apiserver" in names:
        assert {"predictor", "evidently", "mlflow", "airflow-apiserver"} <= seen, seen


def test_production_ingress_hosts_pass_the_host_check_of_their_backend():
    production = render(DEPLOY / "overlays" / "production")
    (ingress,) = by_kind(production, "Ingress").values()
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]["name"]
            allows = host_check(production, backend)
            assert allows(rule["host"]), f"{backend} refuses {rule['host']}"  # HTTPS: no port in the Host
            assert not allows("evil.example"), backend
