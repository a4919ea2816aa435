"""The code the instance installs: a reproducible archive of the training project, uploaded to S3 once.

The archive is byte-for-byte the same for the same sources (sorted entries, fixed times and
owners), so its name carries the content hash: a relaunch with unchanged code uploads nothing,
and the bootstrap reinstalls only when the hash changes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.exceptions import S3UploadFailedError

from ami.errors import AmiError
from ami.iam import project_location
from dogbreed.s3 import S3Location, S3Uploader, UploadSettings, VerificationError, head_or_none

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[1]
# What `pip install .` and `python train.py` need on the instance; ami/ and deploy/ stay home.
SOURCES = ("pyproject.toml", "README.md", "train.py", "conf", "dogbreed")


def build_archive(root: Path = PROJECT) -> bytes:
    """A gzipped tar of SOURCES under `root`, without caches, identical for identical files."""
    if not (root / "pyproject.toml").is_file():
        raise AmiError(f"{root} is not the dogbreed project; run python -m ami launch from a checkout of it")
    files = []
    for name in SOURCES:
        path = root / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [f for f in candidates if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"]
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in files:
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def code_uri(s3_uri: str, archive: bytes) -> str:
    """Where the archive lives: `<s3_uri>/code/dogbreed-<content hash>.tar.gz`."""
    name = f"dogbreed-{hashlib.sha256(archive).hexdigest()[:16]}.tar.gz"
    return project_location(s3_uri).child(f"code/{name}").uri


def upload_code(s3: Any, uri: str, archive: bytes) -> None:
    """Puts the archive at `uri` (from code_uri) unless an object is already there.

    The name carries the content hash, so an object there already holds this code. The
    upload is the verified one (SHA-256 checked by S3 and read back, retried).

    Raises:
        AmiError: every try failed in a way the CLI has no message for (AWS refusals and
            unreachable endpoints are raised as botocore reports them).
    """
    location = S3Location.parse(uri)
    if head_or_none(s3, location) is not None:
        log.info("code already in %s", uri)
        return
    with tempfile.TemporaryDirectory(prefix="dogbreed-code-") as folder:
        path = Path(folder) / PurePosixPath(location.key).name
        path.write_bytes(archive)
        try:
            S3Uploader(s3, UploadSettings()).upload(path, location)
        except (S3UploadFailedError, VerificationError) as err:
            raise AmiError(f"cannot upload the code to {uri}: {err}") from None
