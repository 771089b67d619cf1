"""The Flux objects in deploy/flux: valid against Flux's v1 API (the CRD schemas in schemas/flux, see SOURCE.md
there for their repositories, commits and release), and a chain that applies the same overlay as
`kubectl apply -k`, in order: storage -> MLflow -> Airflow -> serving and monitoring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import DEPLOY, STAGES, InvalidObject, field_path, object_name, render, validate

pytestmark = pytest.mark.deploy

SCHEMAS = Path(__file__).parent / "schemas" / "flux"
FLUX_KINDS = {
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): "kustomization-kustomize.toolkit.fluxcd.io-v1.json",
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): "gitrepository-source.toolkit.fluxcd.io-v1.json",
}
CLUSTERS = ("local", "production")


def strict(schema: dict) -> dict:
    """The CRD schema, rejecting unknown fields as the API server does (CRDs prune them; a typo is lost)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validate_flux(obj: dict) -> None:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in FLUX_KINDS:
        raise InvalidObject(f"{object_name(obj)}: not a Flux v1 kind checked here: {key}")
    schema = strict(json.loads((SCHEMAS / FLUX_KINDS[key]).read_text()))
    # metadata is loosely typed in a CRD schema: its name and namespace are what the chain relies on
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name", "namespace"],
        "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
    }
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
    if error is not None:
        raise InvalidObject(f"{object_name(obj)}: {field_path(error.absolute_path)}: {error.message}")


def flux_objects(cluster: str) -> list[dict]:
    folder = DEPLOY / "flux" / "clusters" / cluster
    return [doc for path in sorted(folder.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(params=CLUSTERS)
def cluster(request) -> str:
    return request.param


def test_flux_objects_are_valid_v1(cluster):
    objects = flux_objects(cluster)
    assert objects
    for obj in objects:
        validate_flux(obj)


def test_an_invalid_flux_object_is_named_with_its_field():
    (stage,) = [o for o in flux_objects("local") if o["metadata"]["name"] == "mlops-mlflow"]
    bad = json.loads(json.dumps(stage))
    bad["spec"]["interval"] = 10
    with pytest.raises(InvalidObject, match=r"Kustomization/mlops-mlflow: spec\.interval: 10 is not of type 'string'"):
        validate_flux(bad)
    bad["spec"]["interval"] = "10m"
    bad["spec"]["dependOn"] = [{"name": "mlops-storage"}]  # the typo Flux would silently drop
    with pytest.raises(InvalidObject, match=r"Kustomization/mlops-mlflow: .*'dependOn' was unexpected"):
        validate_flux(bad)


def stages(cluster: str) -> list[dict]:
    return [o for o in flux_objects(cluster) if o["kind"] == "Kustomization"]


def test_the_chain_is_storage_mlflow_airflow_serving(cluster):
    chain = stages(cluster)
    names = {o["metadata"]["name"]: o for o in chain}
    assert list(names) == [f"mlops-{stage}" for stage in STAGES]
    previous = None
    for obj in chain:
        spec = obj["spec"]
        depends = [d["name"] for d in spec.get("dependsOn", [])]
        assert depends == ([previous] if previous else []), f"{object_name(obj)} dependsOn {depends}"
        assert all(name in names for name in depends)
        assert spec["prune"] is True and spec["wait"] is True, object_name(obj)
        assert re.fullmatch(r"\d+m", spec["interval"]) and spec.get("timeout"), object_name(obj)
        (source,) = [o for o in flux_objects(cluster) if o["kind"] == "GitRepository"]
        assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
        assert source["metadata"]["namespace"] == obj["metadata"]["namespace"] == "flux-system"
        previous = obj["metadata"]["name"]


def test_each_stage_path_renders_valid_objects_and_together_they_are_the_overlay(cluster):
    applied = []
    for obj in stages(cluster):
        path = obj["spec"]["path"]
        assert path.startswith("./deploy/overlays/") and path.endswith(obj["metadata"]["name"].removeprefix("mlops-"))
        objects = render(path.removeprefix("./"))
        assert objects, f"{path} renders nothing"
        for item in objects:
            validate(item)
        applied += [object_name(o) for o in objects]
    assert len(applied) == len(set(applied)), "an object applied by two stages: their prune would fight"
    overlay = stages(cluster)[0]["spec"]["path"].split("/")[3]
    assert sorted(applied) == sorted(object_name(o) for o in render(DEPLOY / "overlays" / overlay))


def test_secrets_in_production_are_decrypted_by_flux_and_never_in_git_in_clear(cluster):
    storage = stages(cluster)[0]
    if cluster == "production":
        assert storage["spec"]["decryption"] == {"provider": "sops", "secretRef": {"name": "sops-age"}}
    for path in (DEPLOY / "overlays" / "production").rglob("*"):
        if path.suffix in {".yaml", ".yml"}:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "Secret":
                    assert "sops" in doc, f"{path}: a Secret that is not SOPS-encrypted"
