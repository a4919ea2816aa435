"""Model artifacts and the state file in S3: verified uploads, small JSON objects, cleanup."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy.cloud.errors import DeployError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
NOT_FOUND = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> (`bucket`, `a/b`)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.strip("/")


def join_key(*parts: str) -> str:
    """Joins key parts, skipping empty ones (an `s3://bucket` prefix has no key part)."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def upload_verified(s3: Any, path: Path, bucket: str, key: str) -> str:
    """Uploads `path` to `key`; returns the hex SHA-256 that S3 checked.

    A single PUT with `ChecksumSHA256` is verified by S3 and is all-or-nothing, so a failed
    upload never leaves an object that looks complete; botocore retries transient errors.
    Model tarballs are far below the 5 GB single-PUT limit.

    Raises:
        DeployError: S3 refused the upload (the message names the bucket and key).
    """
    hex_digest = sha256_file(path)
    checksum = base64.b64encode(bytes.fromhex(hex_digest)).decode()
    try:
        with path.open("rb") as body:
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                Metadata={"sha256": hex_digest},
            )
    except ClientError as err:
        raise DeployError(f"upload of {path} to s3://{bucket}/{key} failed: {err}") from err
    stored = remote_sha256(s3, bucket, key)
    if stored != hex_digest:
        # Never leave an object under a content-addressed key that does not hold that content.
        s3.delete_object(Bucket=bucket, Key=key)
        raise DeployError(f"s3://{bucket}/{key} reads back with sha256 {stored}, not {hex_digest}; upload removed")
    log.info("uploaded %s to s3://%s/%s (sha256 %s)", path.name, bucket, key, hex_digest[:12])
    return hex_digest


def remote_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The hex SHA-256 recorded with an object, or None when there is no object."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as err:
        if err.response["Error"]["Code"] in NOT_FOUND:
            return None
        raise
    if "ChecksumSHA256" in head:
        return base64.b64decode(head["ChecksumSHA256"]).hex()
    return head.get("Metadata", {}).get("sha256")


def put_json(s3: Any, bucket: str, key: str, data: dict[str, Any]) -> None:
    """Writes a small JSON object (one PUT: readers see the old or the new one, never half)."""
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(data, indent=2).encode(), ContentType="application/json")


def get_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """Reads a JSON object, or None when it is not there."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        if err.response["Error"]["Code"] in NOT_FOUND:
            return None
        raise
    return json.loads(body)


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Deletes every object under `prefix/`; returns how many."""
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted
