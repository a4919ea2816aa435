"""Reproducible, content-addressed code archives of this project, uploaded to S3 once.

`ami` ships one to the EC2 box and the SageMaker launcher ships one as the job's source
directory. The archive is byte-for-byte the same for the same sources (sorted entries, fixed
times and owners), so a name that carries its SHA-256 names its content: an unchanged tree is
never uploaded twice.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.exceptions import S3UploadFailedError

from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import S3Uploader, UploadSettings, VerificationError, head_or_none

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[2]


def source_files(root: Path, sources: Iterable[str]) -> list[Path]:
    """The files of `sources` (files or folders under `root`), sorted, without caches and bytecode."""
    files = []
    for name in sources:
        path = root / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [f for f in candidates if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"]
    return files


def build_archive(root: Path, sources: Iterable[str], extra: Mapping[str, bytes] | None = None) -> bytes:
    """A gzipped tar of `sources` under `root` plus `extra` files (name -> bytes), identical for identical input."""
    missing = [name for name in sources if not (root / name).exists()]
    if missing:
        raise DogbreedError(f"{root} is not the dogbreed project (no {', '.join(missing)}); run from a checkout of it")
    entries = [(path.relative_to(root).as_posix(), path.read_bytes()) for path in source_files(root, sources)]
    entries += sorted((extra or {}).items())
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive_name(stem: str, archive: bytes) -> str:
    """`<stem>-<first 16 hex of the SHA-256>.tar.gz`."""
    return f"{stem}-{hashlib.sha256(archive).hexdigest()[:16]}.tar.gz"


def upload_once(s3: Any, location: S3Location, archive: bytes) -> bool:
    """Puts the archive at `location` (a content-addressed key) unless an object is already there.

    The upload is the verified one (SHA-256 checked by S3 and read back, retried).

    Returns:
        Whether anything was uploaded.

    Raises:
        DogbreedError: every try failed in a way the CLI has no message for; AWS refusals and
            unreachable endpoints are raised as botocore reports them.
    """
    if head_or_none(s3, location) is not None:
        log.info("code already in %s", location.uri)
        return False
    with tempfile.TemporaryDirectory(prefix="dogbreed-code-") as folder:
        path = Path(folder) / PurePosixPath(location.key).name
        path.write_bytes(archive)
        try:
            S3Uploader(s3, UploadSettings()).upload(path, location)
        except (S3UploadFailedError, VerificationError) as err:
            raise DogbreedError(f"cannot upload the code to {location.uri}: {err}") from None
    return True
