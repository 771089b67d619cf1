"""The stack's secrets: refuse the public defaults off loopback, and write random ones (`make secrets`).

On a laptop the stack publishes its ports on 127.0.0.1 only, and runs with no `.env` on the defaults that
compose.yaml and .env.example share (they are public: anyone can read them in this repository). Once
`BIND_ADDRESS` publishes the ports on another address, every default secret is a way in, so the `preflight`
service (which every other service waits for) refuses to let the stack start while one is left, and names
each variable to set.

Standard library only: `make secrets` runs it before anything is installed.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

# every secret compose.yaml defaults, with that default (.env.example has the same values)
DEFAULT_SECRETS: dict[str, str] = {
    "POSTGRES_PASSWORD": "postgres",
    "MLFLOW_DB_PASSWORD": "mlflow",
    "AIRFLOW_DB_PASSWORD": "airflow",
    "MINIO_ROOT_USER": "minioadmin",
    "MINIO_ROOT_PASSWORD": "minioadmin",
    "AIRFLOW_ADMIN_PASSWORD": "admin",
    "AIRFLOW_JWT_SECRET": "mlops-sandbox-jwt-secret-change-me-please",
    "AIRFLOW_SECRET_KEY": "mlops-sandbox-api-secret-change-me-please",
    "PREDICTOR_RELOAD_TOKEN": "mlops-sandbox-reload",
    "JUPYTER_TOKEN": "mlops-sandbox",
}
DEFAULT_BIND_ADDRESS = "127.0.0.1"
# what `make secrets` writes for each: MinIO's root user is a name (3+ characters), the rest are secrets
_USER_NAMES = {"MINIO_ROOT_USER"}


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1 or `localhost`."""
    address = address.strip().strip("[]")
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def default_secrets_in_use(env: Mapping[str, str]) -> list[str]:
    """The variables of DEFAULT_SECRETS that are unset, empty, or still their public default."""
    return [name for name, default in DEFAULT_SECRETS.items() if env.get(name, "") in ("", default)]


def problems(env: Mapping[str, str]) -> list[str]:
    """Why the stack must not start with `env` (empty: it may). Only off loopback do defaults matter."""
    address = env.get("BIND_ADDRESS", "") or DEFAULT_BIND_ADDRESS
    if is_loopback(address):
        return []
    left = default_secrets_in_use(env)
    if not left:
        return []
    return [
        f"BIND_ADDRESS={address} publishes the stack beyond this machine, and these secrets are still the public "
        f"defaults: {', '.join(left)}. Set each in .env (`make secrets` writes random ones), or keep "
        f"BIND_ADDRESS={DEFAULT_BIND_ADDRESS}."
    ]


def random_secrets() -> dict[str, str]:
    """A fresh value for every variable of DEFAULT_SECRETS (URL-safe: they also go into database URLs)."""
    return {
        name: ("sandbox-" + secrets.token_hex(4)) if name in _USER_NAMES else secrets.token_urlsafe(24)
        for name in DEFAULT_SECRETS
    }


def write_env(example: Path, target: Path, values: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write `target` (.env) from `example` (.env.example) with every default secret replaced.

    Refuses to overwrite an existing `target`: its secrets may already be in the stack's volumes (Postgres
    keeps the passwords it was first started with), so replacing them would lock the services out.

    Returns:
        The values written, by variable.

    Raises:
        FileExistsError: `target` exists.
        ValueError: `example` lacks one of the secrets.
    """
    if target.exists():
        raise FileExistsError(
            f"{target} exists; its secrets may already be in the stack's volumes. Edit it, or move it away and "
            "run `make reset` after `make secrets` (a reset deletes the stack's data)."
        )
    values = dict(values or random_secrets())
    text = example.read_text()
    missing = [name for name in DEFAULT_SECRETS if not re.search(rf"^{name}=", text, flags=re.M)]
    if missing:
        raise ValueError(f"{example} has no line for {', '.join(missing)}")
    for name, value in values.items():
        text = re.sub(rf"^{name}=.*$", lambda _m, n=name, v=value: f"{n}={v}", text, flags=re.M)
    target.write_text(text)
    target.chmod(0o600)
    return values


def main(argv: list[str] | None = None) -> int:
    """`python -m mlops_sandbox.preflight [check|write-env EXAMPLE TARGET]`."""
    import os
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["write-env"] and len(argv) == 3:
        try:
            written = write_env(Path(argv[1]), Path(argv[2]))
        except (FileExistsError, ValueError) as refused:
            print(f"make secrets: {refused}", file=sys.stderr)
            return 1
        print(f"wrote {argv[2]} with random values for {', '.join(written)} (mode 600)")
        return 0
    if argv in ([], ["check"]):
        found = problems(os.environ)
        for problem in found:
            print(f"preflight: refusing to start: {problem}", file=sys.stderr)
        if not found:
            print("preflight: ok")
        return 1 if found else 0
    print("usage: python -m mlops_sandbox.preflight [check | write-env EXAMPLE TARGET]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
