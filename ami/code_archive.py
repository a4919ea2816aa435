"""The code the instance installs: a reproducible archive of the training project, uploaded to S3 once.

The archive is byte-for-byte the same for the same sources (see `dogbreed.aws.code_bundle`), so its
name carries the content hash: a relaunch with unchanged code uploads nothing, and the
bootstrap reinstalls only when the hash changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError

from ami.errors import AmiError
from ami.iam import project_location
from dogbreed.aws import code_bundle
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import VerificationError

# What `pip install .` and `python train.py` need on the instance; ami/ and deploy/ stay home.
SOURCES = ("pyproject.toml", "README.md", "train.py", "conf", "dogbreed")


def build_archive(root: Path = code_bundle.PROJECT) -> bytes:
    """A gzipped tar of SOURCES under `root`, without caches, identical for identical files."""
    if not (root / "pyproject.toml").is_file():
        raise AmiError(f"{root} is not the dogbreed project; run python -m ami launch from a checkout of it")
    return code_bundle.build_archive(root, SOURCES)


def code_uri(s3_uri: str, archive: bytes) -> str:
    """Where the archive lives: `<s3_uri>/code/dogbreed-<content hash>.tar.gz`."""
    return project_location(s3_uri).child(f"code/{code_bundle.archive_name('dogbreed', archive)}").uri


def upload_code(s3: Any, uri: str, archive: bytes) -> None:
    """Puts the archive at `uri` (from code_uri) unless an object is already there.

    Raises:
        AmiError: every try failed in a way the CLI has no message for (AWS refusals and
            unreachable endpoints are raised as botocore reports them).
    """
    try:
        code_bundle.upload_once(s3, S3Location.parse(uri), archive)
    except (S3UploadFailedError, VerificationError) as err:
        raise AmiError(f"cannot upload the code to {uri}: {err}") from None
