"""The Kustomize overlays in deploy/: they render, validate against Kubernetes' schemas, and keep what compose.yaml
promises (the same services, images, settings and state), with the cluster's own rules on top (probes,
budgets, non-root, no Docker socket, least privilege)."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import (
    DEPLOY,
    ROOT,
    InvalidObject,
    RenderError,
    by_kind,
    compose,
    containers,
    env_example,
    object_name,
    pod_spec,
    render,
    validate,
    workloads,
)

pytestmark = pytest.mark.deploy

# compose service -> its workload on the cluster. Init jobs keep compose's meaning, under a name that says it.
WORKLOAD_OF = {
    "postgres": "postgres",
    "minio": "minio",
    "minio-init": "create-buckets",
    "mlflow": "mlflow",
    "airflow-init": "airflow-db-migrate",
    "airflow-apiserver": "airflow-apiserver",
    "airflow-scheduler": "airflow-scheduler",
    "airflow-dag-processor": "airflow-dag-processor",
    "predictor": "predictor",
    "evidently": "evidently",
    "jupyter": "jupyter",
}
# compose's postgres runs services/postgres/initdb.sh on a fresh volume; on the cluster that is a Job.
INIT_JOBS = {"create-databases", "create-buckets", "airflow-db-migrate"}
# What the production overlay leaves out on purpose: external S3 and Postgres, and no JupyterLab.
NOT_IN_PRODUCTION = {"postgres", "minio", "create-databases", "jupyter"}
# Keys compose gives a service that its manifest does not need on a cluster, and why.
NOT_ON_THE_CLUSTER = {
    # pods reach each other by Service name in the namespace: there is no Docker network to attach to
    "STACK_NETWORK": "no Docker network",
    # the scheduler only starts step pods, which read the S3 keys from the Secret themselves
    ("airflow-scheduler", "S3_ACCESS_KEY_ID"): "step pods read it from the Secret",
    ("airflow-scheduler", "S3_SECRET_ACCESS_KEY"): "step pods read it from the Secret",
    # compose's postgres passes these to services/postgres/initdb.sh; on the cluster the create-databases Job
    # does that work (checked below)
    ("postgres", "MLFLOW_DB_PASSWORD"): "the create-databases Job's",
    ("postgres", "AIRFLOW_DB_PASSWORD"): "the create-databases Job's",
}
# Containers that cannot run with a read-only root filesystem (the manifest says why in a comment).
WRITABLE_ROOT = {"jupyter"}
# The laptop cluster the local overlay is sized for (docs/cluster.md, "What it needs"): the limits of every
# long-running container plus one pipeline-step pod at a time (dags/sandbox_containers.py) fit in it.
LAPTOP_BUDGET = {"cpu": 8.0, "memory": 12 * 2**30}
PIPELINE_STEP_LIMITS = {"cpu": 2.0, "memory": 3 * 2**30}


def long_running_services() -> set[str]:
    return {
        name for name, svc in compose()["services"].items() if svc.get("restart") != "no" and not svc.get("profiles")
    }


def expected_workloads(overlay: str) -> set[str]:
    names = set(WORKLOAD_OF.values()) | INIT_JOBS
    return names - NOT_IN_PRODUCTION if overlay == "production" else names


def quantity(value) -> float:
    """A Kubernetes quantity (cpu cores or bytes) as a number."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match and match.group(2) in {"", *units}, f"not a quantity: {text}"
    return float(match.group(1)) * units.get(match.group(2), 1)


# --- render and validate ------------------------------------------------------------------------------------


def test_every_overlay_renders_and_every_object_is_valid(rendered, overlay):
    errors = []
    for obj in rendered:
        try:
            validate(obj)
        except InvalidObject as err:
            errors.append(str(err))
    assert not errors, f"deploy/overlays/{overlay}:\n" + "\n".join(errors)
    assert {o["metadata"].get("namespace") for o in rendered if o["kind"] != "Namespace"} == {"mlops-sandbox"}


def test_the_base_renders_every_part_once_and_validates():
    base = render(DEPLOY / "base")
    for obj in base:
        validate(obj)
    assert set(workloads(base)) == expected_workloads("local")
    names = [object_name(o) for o in base]
    assert len(names) == len(set(names))


def test_an_invalid_object_is_named_with_its_field():
    bad = yaml.safe_load(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: predictor}
        spec:
          selector: {matchLabels: {app: p}}
          template:
            metadata: {labels: {app: p}}
            spec:
              containers: [{name: predictor, image: x, ports: [{containerPort: "8000"}]}]
        """
    )
    with pytest.raises(
        InvalidObject,
        match=r"Deployment/predictor: spec\.template\.spec\.containers\[0\]\.ports\[0\]"
        r"\.containerPort: '8000' is not of type 'integer'",
    ):
        validate(bad)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 8000}]
    bad["spec"]["replicaz"] = 2
    with pytest.raises(InvalidObject, match=r"Deployment/predictor: spec: .*'replicaz' was unexpected"):
        validate(bad)


def test_an_overlay_that_does_not_build_fails_with_kubectls_reason(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(RenderError, match=r"missing\.yaml"):
        render(tmp_path)


# --- the same stack as compose ------------------------------------------------------------------------------


def test_every_compose_service_has_its_workload(rendered, overlay):
    assert long_running_services() | {"minio-init", "airflow-init"} == set(WORKLOAD_OF)
    assert set(workloads(rendered)) == expected_workloads(overlay)
    for name in INIT_JOBS & set(workloads(rendered)):
        assert workloads(rendered)[name]["kind"] == "Job"
    for name in expected_workloads(overlay) - INIT_JOBS:
        assert workloads(rendered)[name]["kind"] in {"Deployment", "StatefulSet"}, name
        # each long-running workload answers on a Service of the compose service's name, except the scheduler
        # and the dag-processor, which compose publishes no port for either
        if compose()["services"][name].get("ports"):
            assert name in by_kind(rendered, "Service"), f"no Service {name}"


def test_the_same_images_as_compose_at_one_version(rendered):
    services = compose()["services"]
    version = env_example()["SANDBOX_VERSION"]
    for service, name in WORKLOAD_OF.items():
        obj = workloads(rendered).get(name)
        if obj is None:
            continue
        image = services[service]["image"]
        assert containers(obj, init=False)[0]["image"] == image, f"{name}: not compose's {image}"
    built = {c["image"] for o in workloads(rendered).values() for c in containers(o) if "mlops-sandbox/" in c["image"]}
    assert built == {f"mlops-sandbox/project:{version}", f"mlops-sandbox/airflow:{version}"}
    # the steps the scheduler starts run in that same project image
    scheduler = containers(workloads(rendered)["airflow-scheduler"], init=False)[0]
    step_image = next(e["value"] for e in scheduler["env"] if e["name"] == "PROJECT_IMAGE")
    assert step_image == f"mlops-sandbox/project:{version}"
    # set in one place: deploy/components/version, and nowhere else in deploy/
    tagged = [p for p in DEPLOY.rglob("*.yaml") if re.search(r"newTag:|mlops-sandbox/\w+:\d", p.read_text())]
    assert tagged == [DEPLOY / "components" / "version" / "kustomization.yaml"]


def settings_keys(rendered) -> tuple[set[str], set[str]]:
    config = set(by_kind(rendered, "ConfigMap")["mlops-sandbox-settings"]["data"])
    secrets = by_kind(rendered, "Secret").get("mlops-sandbox-secrets")
    if secrets is None:  # production: the Secret is SOPS-encrypted outside the overlay; its keys are the local ones
        secrets = by_kind(render(DEPLOY / "overlays" / "local" / "storage"), "Secret")["mlops-sandbox-secrets"]
    return config, set(secrets.get("data", {}))


def test_one_configmap_and_one_secret_with_the_keys_of_env_example(rendered):
    config, secrets = settings_keys(rendered)
    assert not config & secrets, f"in both: {config & secrets}"
    assert set(env_example()) <= config | secrets, f"missing: {set(env_example()) - config - secrets}"
    assert {k for k in secrets} <= set(env_example()), "every secret is a key of .env.example"
    for key in ("PASSWORD", "SECRET", "TOKEN"):
        assert not [k for k in config if key in k], f"a {key.lower()} in the ConfigMap"


def container_env_keys(rendered, container: dict) -> set[str]:
    configmaps = by_kind(rendered, "ConfigMap")
    keys = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        assert ref["name"] in configmaps, f"envFrom {ref['name']}: only ConfigMaps come in whole"
        keys |= set(configmaps[ref["name"]]["data"])
    return keys


def test_every_key_compose_gives_a_service_is_in_its_manifest(rendered):
    for service, name in WORKLOAD_OF.items():
        obj = workloads(rendered).get(name)
        if obj is None:
            continue
        env = compose()["services"][service].get("environment") or {}
        main = containers(obj, init=False)[0]
        missing = {
            key for key in env if key not in NOT_ON_THE_CLUSTER and (service, key) not in NOT_ON_THE_CLUSTER
        } - container_env_keys(rendered, main)
        assert not missing, f"{object_name(obj)} lacks {sorted(missing)}, which compose gives {service}"
    if "create-databases" in workloads(rendered):
        job = containers(workloads(rendered)["create-databases"])[0]
        assert {"MLFLOW_DB_PASSWORD", "AIRFLOW_DB_PASSWORD"} <= container_env_keys(rendered, job)


def test_every_secret_reference_names_a_key_of_the_secret(rendered):
    _, secrets = settings_keys(rendered)
    for obj in workloads(rendered).values():
        for container in containers(obj):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "mlops-sandbox-secrets" and ref["key"] in secrets, (object_name(obj), env)


# --- the cluster's rules ------------------------------------------------------------------------------------


def test_probes_on_every_long_running_container(rendered):
    # Jobs run to completion: their exit status is their health, as compose's `service_completed_successfully`.
    for obj in workloads(rendered).values():
        if obj["kind"] == "Job":
            continue
        for container in containers(obj, init=False):
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{object_name(obj)} container {container['name']} has no {probe}"


def test_requests_and_limits_everywhere_and_the_local_limits_fit_the_laptop_budget(rendered, overlay):
    total = {"cpu": 0.0, "memory": 0.0}
    for obj in workloads(rendered).values():
        for container in containers(obj):
            for kind in ("requests", "limits"):
                got = container.get("resources", {}).get(kind, {})
                assert {"cpu", "memory"} <= set(got), f"{object_name(obj)}/{container['name']}: no {kind}"
        if obj["kind"] == "Job":
            continue  # init jobs finish before the stack serves
        replicas = obj["spec"].get("replicas", 1)
        for container in containers(obj, init=False):
            for resource in total:
                total[resource] += replicas * quantity(container["resources"]["limits"][resource])
    if overlay == "local":
        for resource in total:
            total[resource] += PIPELINE_STEP_LIMITS[resource]
            assert total[resource] <= LAPTOP_BUDGET[resource], f"{resource}: {total[resource]} over the budget"


def test_pipeline_step_limits_are_the_ones_the_dags_ask_for():
    text = (ROOT / "dags" / "sandbox_containers.py").read_text()
    assert re.search(r'"cpu":\s*"2"', text) and re.search(r'"memory":\s*"3Gi"', text), (
        "PIPELINE_STEP_LIMITS here and the step pods' limits in dags/sandbox_containers.py must agree"
    )


def test_non_root_and_read_only_wherever_upstream_allows(rendered):
    for obj in workloads(rendered).values():
        spec = pod_spec(obj)
        assert spec.get("securityContext", {}).get("runAsNonRoot") is True, object_name(obj)
        assert spec["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, object_name(obj)
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        for container in containers(obj):
            security = container.get("securityContext", {})
            where = f"{object_name(obj)}/{container['name']}"
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("privileged"), where
            assert security.get("runAsUser", spec["securityContext"].get("runAsUser")) != 0, where
            read_only = security.get("readOnlyRootFilesystem")
            assert read_only is (container["name"] not in WRITABLE_ROOT), where


def test_state_lives_on_persistent_volume_claims(rendered, overlay):
    claims = set(by_kind(rendered, "PersistentVolumeClaim"))
    for obj in by_kind(rendered, "StatefulSet").values():
        claims |= {f"{obj['metadata']['name']}/{t['metadata']['name']}" for t in obj["spec"]["volumeClaimTemplates"]}
    # compose's named volumes, and where each lives on the cluster
    expected = {
        "postgres-data": "postgres/data",
        "minio-data": "minio/data",
        "airflow-logs": "airflow-logs",
        "evidently-workspace": "evidently-workspace",
        "predictor-spool": "predictor/spool",
    }
    assert set(compose()["volumes"]) == set(expected)
    external = {"postgres-data", "minio-data"} if overlay == "production" else set()
    assert {v for k, v in expected.items() if k not in external} <= claims
    # and no pod keeps state in an emptyDir where compose had a volume: every volume mount of a compose
    # volume's path is a claim
    for obj in workloads(rendered).values():
        volumes = {v["name"]: v for v in pod_spec(obj).get("volumes", [])}
        for container in containers(obj):
            for mount in container.get("volumeMounts", []):
                if mount["mountPath"] in {"/data/spool", "/data/evidently", "/opt/airflow/logs", "/data"}:
                    source = volumes.get(mount["name"], {})
                    assert "emptyDir" not in source, f"{object_name(obj)}: {mount['mountPath']} is not persistent"


def test_no_host_path_and_no_docker_socket_anywhere(rendered):
    text = yaml.safe_dump_all(rendered)
    assert "hostPath" not in text
    assert "docker.sock" not in text.lower()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "docker.sock" not in path.read_text().lower(), path


def test_the_scheduler_may_create_pods_in_its_own_namespace_only(rendered):
    assert not by_kind(rendered, "ClusterRole") and not by_kind(rendered, "ClusterRoleBinding")
    roles = by_kind(rendered, "Role")
    assert set(roles) == {"pipeline-step-launcher"}
    for rule in roles["pipeline-step-launcher"]["rules"]:
        assert rule["apiGroups"] == [""]
        assert all(r == "pods" or r.startswith("pods/") for r in rule["resources"]), rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    (binding,) = by_kind(rendered, "RoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "pipeline-step-launcher",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "airflow-scheduler", "namespace": "mlops-sandbox"}
    ]
    assert (
        binding["metadata"]["namespace"] == roles["pipeline-step-launcher"]["metadata"]["namespace"] == "mlops-sandbox"
    )
    scheduler = pod_spec(workloads(rendered)["airflow-scheduler"])
    assert scheduler["serviceAccountName"] == "airflow-scheduler"
    # nothing else gets an API token
    for name, obj in workloads(rendered).items():
        if name != "airflow-scheduler":
            assert pod_spec(obj).get("automountServiceAccountToken") is False, name
    steps = by_kind(rendered, "ServiceAccount")["mlops-pipeline-step"]
    assert steps["automountServiceAccountToken"] is False


def test_the_scheduler_runs_steps_as_pods(rendered):
    env = {e["name"]: e for e in containers(workloads(rendered)["airflow-scheduler"], init=False)[0]["env"]}
    assert env["PIPELINE_RUNNER"]["value"] == "kubernetes"
    assert env["KUBERNETES_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["PIPELINE_SECRET_NAME"]["value"] == "mlops-sandbox-secrets"
    assert env["PIPELINE_SERVICE_ACCOUNT"]["value"] in by_kind(rendered, "ServiceAccount")
    # the XCom sidecar runs the project image as well (the kubelet expands $(PROJECT_IMAGE), defined before it)
    names = [e["name"] for e in containers(workloads(rendered)["airflow-scheduler"], init=False)[0]["env"]]
    assert names.index("PROJECT_IMAGE") < names.index("AIRFLOW_CONN_KUBERNETES_DEFAULT")
    connection = json.loads(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"]["value"])
    assert connection == {
        "conn_type": "kubernetes",
        "extra": {"in_cluster": True, "xcom_sidecar_container_image": "$(PROJECT_IMAGE)"},
    }
    # DAGs come from the image: nothing is mounted at the DAGs folder
    for obj in workloads(rendered).values():
        for container in containers(obj):
            assert all(m["mountPath"] != "/opt/airflow/dags" for m in container.get("volumeMounts", []))


def test_nothing_binds_a_privileged_port(rendered):
    for obj in workloads(rendered).values():
        for container in containers(obj):
            for port in container.get("ports", []):
                assert port["containerPort"] >= 1024, f"{object_name(obj)}: port {port['containerPort']}"
                assert "hostPort" not in port, object_name(obj)


def test_services_and_probes_point_at_named_ports_that_exist(rendered):
    pods = {o["metadata"]["name"]: o for o in workloads(rendered).values()}
    for name, service in by_kind(rendered, "Service").items():
        (target,) = [
            o
            for o in pods.values()
            if all(
                o["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items()
            )
        ]
        ports = {p["name"] for c in containers(target, init=False) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service/{name} targets {port['targetPort']}"


# --- production ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def production() -> list[dict]:
    return render(DEPLOY / "overlays" / "production")


def test_production_takes_s3_and_postgres_from_outside_with_credentials_in_a_secret(production):
    assert not {"postgres", "minio"} & (set(workloads(production)) | set(by_kind(production, "Service")))
    settings = by_kind(production, "ConfigMap")["mlops-sandbox-settings"]["data"]
    assert "minio" not in settings["S3_ENDPOINT_URL"] and settings["POSTGRES_HOST"] != "postgres"
    # no secret is in git in clear text: the overlay renders no Secret at all (SOPS adds it in the cluster)
    assert not by_kind(production, "Secret")


def test_production_predictor_has_replicas_a_disruption_budget_and_an_autoscaler(production):
    predictor = by_kind(production, "StatefulSet")["predictor"]
    assert predictor["spec"]["replicas"] >= 2
    labels = predictor["spec"]["template"]["metadata"]["labels"]
    pdb = by_kind(production, "PodDisruptionBudget")["predictor"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < predictor["spec"]["replicas"]
    hpa = by_kind(production, "HorizontalPodAutoscaler")["predictor"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "predictor"}
    assert 2 <= hpa["spec"]["minReplicas"] <= predictor["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def test_production_ingress_reaches_every_dashboard(production):
    services = by_kind(production, "Service")
    (ingress,) = by_kind(production, "Ingress").values()
    backends = {
        path["backend"]["service"]["name"]: path["backend"]["service"]["port"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert set(backends) == {"airflow-apiserver", "mlflow", "predictor", "evidently"}
    for name, port in backends.items():
        assert port in {p["name"] for p in services[name]["spec"]["ports"]}, name
    # MLflow's host check lets its Ingress host through
    mlflow = containers(workloads(production)["mlflow"], init=False)[0]
    allowed = next(e["value"] for e in mlflow["env"] if e["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS")
    mlflow_host = next(
        r["host"] for r in ingress["spec"]["rules"] if r["http"]["paths"][0]["backend"]["service"]["name"] == "mlflow"
    )
    assert mlflow_host in allowed.split(",")
