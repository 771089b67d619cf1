"""Feature versioning with DVC on the S3 remote in MinIO (seed steps 16-17).

No Git is involved: a temporary DVC repository (`dvc init --no-scm`) adds and pushes the file, and the
returned pointer (md5, size, path: the content of the `.dvc` file) is the version. Any container can fetch
the exact bytes back from the remote with that pointer alone; the pointer travels as MLflow tags.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlops_sandbox.config import Settings


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


def _dvc(args: list[str], cwd: Path, settings: Settings) -> str:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": settings.s3_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key,
        "AWS_DEFAULT_REGION": settings.s3_region,
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _init_repo(root: Path, settings: Settings, url: str) -> None:
    _dvc(["init", "--no-scm", "-q"], root, settings)
    _dvc(["remote", "add", "-d", "store", url], root, settings)
    _dvc(["remote", "modify", "store", "endpointurl", settings.s3_endpoint_url], root, settings)
    _dvc(["remote", "modify", "store", "region", settings.s3_region], root, settings)


def push(file: Path, settings: Settings, scenario: str) -> DataVersion:
    """`dvc add` + `dvc push` of one file; returns its version pointer."""
    url = remote_url(settings, scenario)
    with tempfile.TemporaryDirectory(prefix="dvc-") as tmp:
        root = Path(tmp)
        _init_repo(root, settings, url)
        shutil.copy(file, root / file.name)
        _dvc(["add", "-q", file.name], root, settings)
        _dvc(["push", "-q"], root, settings)
        out = yaml.safe_load((root / f"{file.name}.dvc").read_text())["outs"][0]
    return DataVersion(md5=out["md5"], size=int(out["size"]), path=out["path"], remote_url=url)


def pull(version: DataVersion, settings: Settings, dest: Path) -> Path:
    """Fetch the exact bytes of `version` from the remote into `dest` (a file path)."""
    with tempfile.TemporaryDirectory(prefix="dvc-") as tmp:
        root = Path(tmp)
        _init_repo(root, settings, version.remote_url)
        pointer = {"outs": [{"md5": version.md5, "size": version.size, "hash": "md5", "path": version.path}]}
        (root / f"{version.path}.dvc").write_text(yaml.safe_dump(pointer))
        _dvc(["pull", "-q", f"{version.path}.dvc"], root, settings)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / version.path, dest)
    return dest
