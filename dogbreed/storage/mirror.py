"""Data in S3: `data.root=s3://bucket/dogImages/` mirrored into a local cache, new or changed objects only."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dogbreed.errors import DataError
from dogbreed.storage.location import S3Location, make_client

log = logging.getLogger(__name__)

SYNC_MANIFEST = ".s3sync.json"


@dataclass(frozen=True)
class SyncResult:
    downloaded: int
    current: int
    removed: int


def sync_prefix(client: Any, source: S3Location, dest: Path, workers: int = 8, progress: bool = True) -> SyncResult:
    """Mirrors `source` (a prefix) into `dest`, downloading only new or changed objects, in parallel.

    What was downloaded is recorded per key (ETag and size) in `dest/.s3sync.json`; files that
    vanished from S3 are removed locally, but only those this sync put there.
    """
    source = source.as_prefix()
    manifest_path = dest / SYNC_MANIFEST
    manifest: dict[str, dict[str, Any]] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    remote = list_objects(client, source)
    if not remote:
        raise DataError(f"{source.uri} holds no objects; expected dogImages/{{train,valid,test}}/NNN.Breed/*.jpg")
    root = dest.resolve()
    for relative in remote:
        if not (root / relative).resolve().is_relative_to(root):
            raise DataError(f"{source.uri}{relative}: the key leaves the sync folder {dest}; refusing to download it")
    todo = [
        relative
        for relative, info in remote.items()
        if manifest.get(relative) != info
        or not (dest / relative).is_file()
        or (dest / relative).stat().st_size != info["size"]
    ]
    removed = [relative for relative in manifest if relative not in remote]
    for relative in removed:
        (dest / relative).unlink(missing_ok=True)
        del manifest[relative]

    def fetch(relative: str) -> str:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # s3transfer writes to a temporary name and renames: a failed download leaves no torn file.
        client.download_file(source.bucket, source.key + relative, str(target))
        return relative

    try:
        with (
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
            tqdm(total=len(todo), desc=f"sync {source.uri}", unit="file", disable=None if progress else True) as bar,
        ):
            for future in as_completed([pool.submit(fetch, relative) for relative in todo]):
                relative = future.result()
                manifest[relative] = remote[relative]
                bar.update()
    finally:
        # Keep what did arrive, so a retried sync does not fetch it again.
        dest.mkdir(parents=True, exist_ok=True)
        temporary = manifest_path.with_name(f".{SYNC_MANIFEST}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(manifest, indent=0, sort_keys=True))
        os.replace(temporary, manifest_path)
    result = SyncResult(len(todo), len(remote) - len(todo), len(removed))
    log.info(
        "synced %s to %s: %d downloaded, %d up to date, %d removed",
        source.uri,
        dest,
        result.downloaded,
        result.current,
        result.removed,
    )
    return result


def sync_to_cache(uri: str, cache: Path) -> Path:
    """Mirrors the `data.root=s3://...` prefix into `<cache>/<bucket>/<prefix>` and returns that folder."""
    source = S3Location.parse(uri).as_prefix()
    dest = cache / source.bucket / source.key
    sync_prefix(make_client(), source, dest)
    return dest


def list_objects(client: Any, prefix: S3Location) -> dict[str, dict[str, Any]]:
    """Keys under `prefix` (relative to it) with their ETag and size; folder markers are left out."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix.key) :]
            if relative and not relative.endswith("/"):
                found[relative] = {"etag": item["ETag"], "size": item["Size"]}
    return found
