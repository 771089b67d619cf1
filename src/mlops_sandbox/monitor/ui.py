"""The Evidently UI (the monitoring dashboard), served as `evidently ui` serves it, behind the host check.

`evidently ui` answers whatever `Host` a request names, so a web page could read and write the workspace through
DNS rebinding (see `mlops_sandbox.hostcheck`). `mlops-sandbox evidently-ui` builds the same app, for the same
workspace, with Evidently's own functions, and serves it with uvicorn as `evidently ui` does, inside `HostCheck`.
"""

from __future__ import annotations

from mlops_sandbox.hostcheck import AllowedHosts, HostCheck

SETTING = "EVIDENTLY_ALLOWED_HOSTS"


def create_app(workspace: str, allowed_hosts: str, host: str = "0.0.0.0", port: int = 8000) -> HostCheck:
    """Evidently's UI app on the local workspace at `workspace` (its `EVIDENTLY_SECRET`, if set, guards writes,
    as with `evidently ui`), answering only the Host names in `allowed_hosts`.

    Raises:
        ValueError: `allowed_hosts` holds a pattern that is not a name, `.name`, `*.name` or `*`.
    """
    from evidently.ui.service.app import create_app as evidently_app
    from evidently.ui.service.app import get_config

    allowed = AllowedHosts(allowed_hosts)  # first: a bad list fails before Evidently opens the workspace
    return HostCheck(evidently_app(get_config(host=host, port=port, workspace=workspace)), allowed, setting=SETTING)


def serve(workspace: str, allowed_hosts: str, host: str = "0.0.0.0", port: int = 8000) -> None:
    """Serve the UI with uvicorn until it is stopped (SIGTERM, Ctrl-C)."""
    import uvicorn

    uvicorn.run(create_app(workspace, allowed_hosts, host, port), host=host, port=port)
