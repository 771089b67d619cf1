"""The registry of sectors and model types: every entry loads and is complete, and the docs name them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlops_sandbox import catalog
from mlops_sandbox.sectors import Sector
from mlops_sandbox.serve.schema import record_model
from mlops_sandbox.simulate.generator import generate_batch, parse_time
from mlops_sandbox.train.models import ModelType

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(catalog.SECTORS))
def test_every_sector_is_complete(name):
    sector = catalog.sector(name)
    assert isinstance(sector, Sector) and sector.schema.name == name and sector.drift
    record_model(sector.schema).model_validate(sector.example)  # the API example is a valid request
    batch = generate_batch(name, 3, parse_time("2026-07-01T00:00Z"), 50)
    derived = sector.derived(batch)
    assert list(derived) == list(sector.derived_names)
    assert all(np.isfinite(v).all() and len(v) == 50 for v in derived.values())


@pytest.mark.parametrize("name", sorted(catalog.MODEL_TYPES))
def test_every_model_type_is_complete(name):
    kind = catalog.model_type(name)
    assert isinstance(kind, ModelType) and kind.name == name and kind.description


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown scenario 'retail'; known: \['delivery_delay'"):
        catalog.sector("retail")
    with pytest.raises(ValueError, match=r"unknown model type 'xgboost'; known: \['"):
        catalog.model_type("xgboost")


def test_the_catalog_imports_nothing_heavy():
    # the Airflow DAGs import it without the ML libraries
    code = (
        "import sys, mlops_sandbox.catalog; "
        "print(sorted(m for m in ('numpy', 'pandas', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_readme_and_env_example_name_every_sector_and_model_type():
    readme, env = (ROOT / "README.md").read_text(), (ROOT / ".env.example").read_text()
    for name in catalog.SECTORS:
        assert f"`{name}`" in readme and name in env, name
    for name in catalog.MODEL_TYPES:
        assert f"`{name}`" in readme, name
