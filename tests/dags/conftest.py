import sys
from pathlib import Path

# Airflow puts the DAGs folder on sys.path, so the DAG files import their helper module by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
