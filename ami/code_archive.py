"""The code the instance installs: a reproducible archive of the training project, uploaded to S3 once.

The archive is byte-for-byte the same for the same sources (sorted entries, fixed times and
owners), so its name carries the content hash: a relaunch with unchanged code uploads nothing,
and the bootstrap reinstalls only when the hash changes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import logging
import tarfile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from ami.errors import AmiError
from ami.iam import split_s3_uri

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
    bucket, prefix = split_s3_uri(s3_uri)
    name = f"dogbreed-{hashlib.sha256(archive).hexdigest()[:16]}.tar.gz"
    return f"s3://{bucket}/" + "/".join(filter(None, [prefix, "code", name]))


def upload_code(s3: Any, uri: str, archive: bytes) -> None:
    """Puts the archive at `uri` (from code_uri) unless an object is already there."""
    bucket, key = split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        log.info("code already in %s", uri)
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
        # One PUT is all or nothing, and ContentMD5 makes S3 reject a body damaged on the way.
        digest = base64.b64encode(hashlib.md5(archive).digest()).decode()
        s3.put_object(Bucket=bucket, Key=key, Body=archive, ContentMD5=digest)
        log.info("uploaded code to %s (%d bytes)", uri, len(archive))
