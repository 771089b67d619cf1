"""Feature versioning with DVC on the S3 remote in MinIO (seed steps 16-17).

No Git is involved: a temporary DVC repository (`dvc init --no-scm`) adds and pushes the file, and the
returned pointer (md5, size, path: the content of the `.dvc` file) is the version. Any container can fetch
the exact bytes back from the remote with that pointer alone; the pointer travels as MLflow tags.

A hung S3 server never hangs a step: DVC's S3 client has the library's connect and read timeouts and bounded
attempts (S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT, S3_MAX_ATTEMPTS), every dvc command is killed after
DVC_TIMEOUT_SECONDS, and a push or pull (both idempotent) is tried DVC_ATTEMPTS times with exponential backoff
before `DvcError` says what failed, against which endpoint.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlops_sandbox.config import Settings

log = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = 5.0  # before the second try of a push or pull; doubled before each next one


@dataclass(frozen=True)
class DataVersion:
    md5: str
    size: int
    path: str  # file name inside the DVC repo
    remote_url: str  # s3://bucket/prefix

    @property
    def object_key(self) -> str:
        """Where the remote keeps the bytes (DVC 3 layout: files/md5/xx/rest)."""
        prefix = self.remote_url.removeprefix("s3://").split("/", 1)[1] if "/" in self.remote_url[5:] else ""
        return f"{prefix}/files/md5/{self.md5[:2]}/{self.md5[2:]}".lstrip("/")

    def tags(self) -> dict[str, str]:
        return {
            "dvc_data_version": self.md5,
            "dvc_data_size": str(self.size),
            "dvc_data_path": self.path,
            "dvc_remote": self.remote_url,
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> DataVersion:
        missing = [k for k in ("dvc_data_version", "dvc_data_size", "dvc_data_path", "dvc_remote") if k not in tags]
        if missing:
            raise ValueError(f"no DVC data version in these tags (missing {missing})")
        return cls(tags["dvc_data_version"], int(tags["dvc_data_size"]), tags["dvc_data_path"], tags["dvc_remote"])


def remote_url(settings: Settings, scenario: str) -> str:
    return f"s3://{settings.dvc_bucket}/{scenario}"


class DvcError(RuntimeError):
    """A dvc command failed or timed out (`timed_out`); the message names the command, and for a push or pull
    the S3 endpoint and the remote."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


def _dvc(args: list[str], cwd: Path, settings: Settings) -> str:
    """Run one dvc command; killed, with its process group, after DVC_TIMEOUT_SECONDS."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": settings.s3_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key,
        "AWS_DEFAULT_REGION": settings.s3_region,
        # DVC's S3 client (s3fs on aiobotocore) tries a request as often as storage.s3_client does
        "AWS_MAX_ATTEMPTS": str(settings.s3_max_attempts),
        "AWS_RETRY_MODE": "standard",
        "DVC_NO_ANALYTICS": "1",
    }
    command = f"dvc {' '.join(args)}"
    with subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so that a kill takes DVC's helpers with it
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=settings.dvc_timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise DvcError(
                f"{command} timed out after {settings.dvc_timeout_seconds:g} s (DVC_TIMEOUT_SECONDS)", timed_out=True
            ) from None
    if process.returncode != 0:
        raise DvcError(f"{command} failed: {_reason(stderr or stdout)}")
    return stdout


def _reason(output: str) -> str:
    """DVC's ERROR lines (for a timeout, `Read timeout on endpoint URL: ...`), without its support banner."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Having any troubles?")]
    return "; ".join([line for line in lines if line.startswith("ERROR")] or lines[-3:]) or "no output"


def _dvc_remote(args: list[str], cwd: Path, settings: Settings, url: str) -> str:
    """A dvc command that talks to the remote (push or pull: both idempotent), tried DVC_ATTEMPTS times with
    exponential backoff. Raises `DvcError` naming the S3 endpoint and the remote when every try failed."""
    where = f"the DVC remote {url} at the S3 endpoint {settings.s3_endpoint_url}"
    for attempt in range(1, settings.dvc_attempts):
        try:
            return _dvc(args, cwd, settings)
        except DvcError as err:
            delay = RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1)
            log.warning(
                "%s (against %s); attempt %d of %d in %g s", err, where, attempt + 1, settings.dvc_attempts, delay
            )
            time.sleep(delay)
    try:
        return _dvc(args, cwd, settings)
    except DvcError as err:
        tries = f"{settings.dvc_attempts} attempt{'s' if settings.dvc_attempts > 1 else ''}"
        raise DvcError(f"{err} (against {where}; gave up after {tries})", timed_out=err.timed_out) from None


def _init_repo(root: Path, settings: Settings, url: str) -> None:
    _dvc(["init", "--no-scm", "-q"], root, settings)
    _dvc(["remote", "add", "-d", "store", url], root, settings)
    _dvc(["remote", "modify", "store", "endpointurl", settings.s3_endpoint_url], root, settings)
    _dvc(["remote", "modify", "store", "region", settings.s3_region], root, settings)
    # whole seconds: DVC's config schema takes integers for these two
    for option, seconds in (
        ("connect_timeout", settings.s3_connect_timeout),
        ("read_timeout", settings.s3_read_timeout),
    ):
        _dvc(["remote", "modify", "store", option, str(math.ceil(seconds))], root, settings)


def push(file: Path, settings: Settings, scenario: str) -> DataVersion:
    """`dvc add` + `dvc push` of one file; returns its version pointer."""
    url = remote_url(settings, scenario)
    with tempfile.TemporaryDirectory(prefix="dvc-") as tmp:
        root = Path(tmp)
        _init_repo(root, settings, url)
        shutil.copy(file, root / file.name)
        _dvc(["add", "-q", file.name], root, settings)
        _dvc_remote(["push"], root, settings, url)  # not -q: it would hide the error too
        out = yaml.safe_load((root / f"{file.name}.dvc").read_text())["outs"][0]
    return DataVersion(md5=out["md5"], size=int(out["size"]), path=out["path"], remote_url=url)


def pull(version: DataVersion, settings: Settings, dest: Path) -> Path:
    """Fetch the exact bytes of `version` from the remote into `dest` (a file path)."""
    with tempfile.TemporaryDirectory(prefix="dvc-") as tmp:
        root = Path(tmp)
        _init_repo(root, settings, version.remote_url)
        pointer = {"outs": [{"md5": version.md5, "size": version.size, "hash": "md5", "path": version.path}]}
        (root / f"{version.path}.dvc").write_text(yaml.safe_dump(pointer))
        _dvc_remote(["pull", f"{version.path}.dvc"], root, settings, version.remote_url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / version.path, dest)
    return dest
