"""A small client for Airflow 3's REST API: log in, trigger a DAG with params, wait for the run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests

from mlops_sandbox.config import Settings, get_settings

log = logging.getLogger(__name__)


class AirflowUnavailable(RuntimeError):
    """Airflow's API answered 5xx, or not at all (its database or its server restarting): ask again later."""


class AirflowAPI:
    def __init__(self, settings: Settings | None = None, timeout: float = 30.0):
        self.settings = settings or get_settings()
        self.base = self.settings.airflow_url.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    def _send(self, what: str, method: str, url: str, **kwargs) -> requests.Response:
        """The answer to one request; AirflowUnavailable when there is none, or it is 5xx."""
        try:
            resp = requests.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise AirflowUnavailable(f"{what}: no answer ({err})") from err
        if resp.status_code >= 500:
            raise AirflowUnavailable(f"{what}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp

    def token(self) -> str:
        if self._token is None:
            login = {"username": self.settings.airflow_admin_user, "password": self.settings.airflow_admin_password}
            resp = self._send("Airflow login", "POST", f"{self.base}/auth/token", json=login)
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def call(self, method: str, path: str, **kwargs) -> Any:
        what = f"Airflow {method} {path}"
        headers = {"Authorization": f"Bearer {self.token()}"}
        resp = self._send(what, method, f"{self.base}/api/v2{path}", headers=headers, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{what}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the DAG processor has parsed `dag_id`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", f"/dags/{dag_id}")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause `dag_id` and start a run with `conf` as its params; returns the run id."""
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def wait(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 900,
        poll: float = 3,
        progress: Callable[[], None] | None = None,
    ) -> str:
        """Until the run finishes; returns its final state (`success` or `failed`). `progress` is called at each
        poll (the CLI prints the tasks' states as they change). Airflow being briefly unavailable (its database
        restarting) is waited out, within `timeout`."""
        deadline = time.monotonic() + timeout
        state = "unknown"
        while True:
            if progress is not None:
                try:
                    progress()
                except AirflowUnavailable as err:  # the run's own state still decides
                    log.warning("%s", err)
            try:
                state = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            except AirflowUnavailable as err:
                if time.monotonic() > deadline:
                    raise
                log.warning("%s; asking again in %g s", err, poll)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(poll)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")["value"]
