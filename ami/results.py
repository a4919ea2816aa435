"""`ami pull`: a run directory from `<ami.s3_uri>/runs/<run>/` to `outputs/<run>/`, every file verified."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

from ami.errors import AmiError
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import download_verified

log = logging.getLogger(__name__)


def pull(s3: Any, runs: S3Location, run: str, dest_root: Path) -> list[Path]:
    """Downloads every object under `runs/<run>/` below `dest_root/<run>/` (SHA-256 checked); returns the files.

    Raises:
        AmiError: nothing is stored under that run (the message lists the runs that are).
        DogbreedError: a download failed or did not match its recorded SHA-256.
    """
    prefix = runs.child(run).as_prefix()
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key)
        for item in page.get("Contents", [])
        if not item["Key"].endswith("/")
    ]
    if not keys:
        raise AmiError(f"no run {run!r} under {runs.uri}/; runs there: {', '.join(run_names(s3, runs)) or 'none'}")
    pulled = []
    for key in keys:
        relative = PurePosixPath(key[len(prefix.key) :])
        pulled.append(download_verified(s3, S3Location(prefix.bucket, key), dest_root / run / relative))
    log.info("pulled %d file(s) of %s to %s", len(pulled), run, dest_root / run)
    return pulled


def run_names(s3: Any, runs: S3Location) -> list[str]:
    """The run folders directly under `runs`."""
    prefix = runs.as_prefix()
    names = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key, Delimiter="/"):
        names += [common["Prefix"][len(prefix.key) :].rstrip("/") for common in page.get("CommonPrefixes", [])]
    return names
