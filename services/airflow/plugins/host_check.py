"""Airflow plugin: DNS rebinding protection for the API server (UI, REST API and the tasks' execution API).

Its root app answers only requests whose `Host` header is one of the names in AIRFLOW_ALLOWED_HOSTS (any port;
an IP address always), with the check the project's other services use: `mlops_sandbox.hostcheck`, from the
library that the Airflow image installs without its dependencies (it imports the standard library only).
Anything else gets 400. The workers reach the execution API at AIRFLOW__CORE__EXECUTION_API_SERVER_URL, so
its host (airflow-apiserver) must be in the list.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

from mlops_sandbox.hostcheck import HostCheck

SETTING = "AIRFLOW_ALLOWED_HOSTS"
DEFAULT = "localhost,airflow-apiserver"  # compose's default (.env.example)


class HostCheckPlugin(AirflowPlugin):
    name = "host_check"
    fastapi_root_middlewares = [
        {
            "name": "host_check",
            "middleware": HostCheck,
            # The list is read when the app builds its middleware, not here: a plugin that fails to import is
            # skipped (the API server would run without the check), while a bad list there fails every request.
            "kwargs": {"allowed": os.environ.get(SETTING) or DEFAULT, "setting": SETTING},
        }
    ]
