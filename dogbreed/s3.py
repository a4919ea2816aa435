"""S3 for the whole project: addresses, clients, not-found checks, verified uploads and downloads.

Training artifacts, the deploy model and state file, and the EC2 code archive all go
through here. Uploads use boto3's transfer manager (multipart, concurrent parts) with
SHA-256 checksums that S3 checks on receipt; afterwards `head_object` must report the
local size and checksum, else the object is deleted and the upload retried. A failed
multipart upload is aborted (by s3transfer at once, or by the next attempt when S3 was
down), so a key never holds a partial object that looks complete. Downloads are checked
against the SHA-256 recorded at upload. Credentials, region and endpoint come from the
standard boto3 chain (instance profile on EC2, `AWS_ENDPOINT_URL`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ChunksizeAdjuster

from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Error codes meaning "no such object": HEAD answers a bare 404 (also for a missing bucket),
# GET names the missing key or bucket.
NOT_FOUND = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
# Uploads that fail in these ways are worth another try; anything else is a bug or bad input.
TRANSIENT = (BotoCoreError, ClientError, S3UploadFailedError)


class S3AddressError(DogbreedError):
    """A string that should be an `s3://bucket/key` address is not one."""


class VerificationError(Exception):
    """The object S3 holds after an upload does not match the local file."""


@dataclass(frozen=True)
class S3Location:
    """An `s3://bucket/key` address; `key` is a prefix when it ends with `/`."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Splits `s3://bucket/key` (the key may be empty or end with `/`).

        Raises:
            S3AddressError: `uri` has no `s3://` scheme or no bucket.
        """
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            raise S3AddressError(f"{uri!r} is not an S3 address; expected s3://bucket/prefix")
        bucket, _, key = uri[5:].partition("/")
        return cls(bucket, key)

    @property
    def uri(self) -> str:
        """The `s3://bucket/key` form."""
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Location:
        """`name` (which may hold `/`) under this location taken as a folder."""
        base = self.key.rstrip("/")
        return S3Location(self.bucket, f"{base}/{name}" if base else name)

    def as_prefix(self) -> S3Location:
        """This location with a trailing `/`, so listing it cannot match `key-other/...`."""
        return self if not self.key or self.key.endswith("/") else S3Location(self.bucket, self.key + "/")


def make_client(
    max_attempts: int | None = None, connect_timeout_s: float | None = None, read_timeout_s: float | None = None
) -> Any:
    """An S3 client from the standard credential chain, retrying in botocore's standard mode.

    Args:
        max_attempts: botocore's `retries.max_attempts`, which counts the retries after the
            first try (5 means up to 6 requests); None keeps botocore's default.
        connect_timeout_s: seconds to wait for a connection; None keeps botocore's default (60).
        read_timeout_s: seconds to wait for a response; None keeps botocore's default (60).
    """
    retries: dict[str, Any] = {"mode": "standard"}
    if max_attempts is not None:
        retries["max_attempts"] = int(max_attempts)
    options: dict[str, Any] = {"retries": retries}
    # Only what the caller set; the rest keeps botocore's defaults.
    if connect_timeout_s is not None:
        options["connect_timeout"] = float(connect_timeout_s)
    if read_timeout_s is not None:
        options["read_timeout"] = float(read_timeout_s)
    return boto3.client("s3", config=Config(**options))


def error_code(err: Exception) -> str:
    """S3's error code for a ClientError, else the exception's type name (for log lines)."""
    return err.response["Error"]["Code"] if isinstance(err, ClientError) else type(err).__name__


def is_not_found(err: ClientError) -> bool:
    """True when S3 refused because the object (or its bucket) does not exist."""
    return err.response["Error"]["Code"] in NOT_FOUND


def head_or_none(client: Any, location: S3Location, checksums: bool = False) -> dict[str, Any] | None:
    """`head_object` of `location`, or None when there is no such object.

    Args:
        client: an S3 client.
        location: the object.
        checksums: also ask for the checksums S3 recorded (`ChecksumSHA256`, ...).
    """
    extra = {"ChecksumMode": "ENABLED"} if checksums else {}
    try:
        return client.head_object(Bucket=location.bucket, Key=location.key, **extra)
    except ClientError as err:
        if is_not_found(err):
            return None
        raise


def recorded_sha256(head: dict[str, Any]) -> str | None:
    """The hex SHA-256 of the whole object, as recorded at upload, from a `head_object` answer.

    `S3Uploader` stores it as `sha256` metadata; for other objects a whole-object
    `ChecksumSHA256` (asked for with `checksums=True`) is used. A multipart checksum is a
    checksum of part checksums, not of the file, so it is not.
    """
    recorded = head.get("Metadata", {}).get("sha256")
    if recorded:
        return recorded
    checksum = head.get("ChecksumSHA256")
    if not checksum or "-" in checksum or head.get("ChecksumType") == "COMPOSITE":
        return None
    return base64.b64decode(checksum).hex()


@dataclass(frozen=True)
class Digest:
    """A file's size and SHA-256, whole and as S3 computes it for a multipart upload."""

    size: int
    sha256: str
    full_b64: str
    composite_b64: str

    def expected_checksum(self, threshold: int) -> str:
        """The `ChecksumSHA256` S3 reports after an upload with this multipart threshold."""
        # s3transfer switches to multipart at size >= threshold; S3 then checksums the part checksums.
        return self.full_b64 if self.size < threshold else self.composite_b64


def file_digest(path: Path, part_size: int) -> Digest:
    """Reads `path` once, hashing it whole and in `part_size` parts (as a multipart upload splits it)."""
    whole = hashlib.sha256()
    parts = []
    with path.open("rb") as source:
        while chunk := source.read(part_size):
            whole.update(chunk)
            parts.append(hashlib.sha256(chunk).digest())
    composite = hashlib.sha256(b"".join(parts)).digest()
    return Digest(
        path.stat().st_size,
        whole.hexdigest(),
        base64.b64encode(whole.digest()).decode(),
        base64.b64encode(composite).decode(),
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class UploadSettings:
    """How hard to try, and how the transfer manager splits and parallelises a file."""

    attempts: int = 3
    backoff_s: float = 2.0
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise DogbreedError(f"an upload needs at least 1 attempt, got {self.attempts}")

    def transfer_config(self) -> TransferConfig:
        """These settings as boto3's transfer manager takes them."""
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
        )

    def part_size(self, size: int) -> int:
        """The part size s3transfer uses for a file of `size` bytes."""
        # The same adjustment s3transfer makes for files that would need more than 10,000 parts.
        return ChunksizeAdjuster().adjust_chunksize(self.multipart_chunksize, size)


class S3Uploader:
    """Verified, retried uploads of local files to S3 keys: the one way this project writes a file to S3."""

    def __init__(self, client: Any, settings: UploadSettings) -> None:
        self.client = client
        self.settings = settings

    def upload(self, path: Path, dest: S3Location) -> Digest:
        """Uploads `path` to `dest` unless S3 already holds the same bytes; returns the file's digest.

        Each attempt aborts multipart uploads an earlier one left behind, uploads with
        SHA-256 checksums and checks size and checksum with `head_object`; attempts are
        `settings.backoff_s`, then twice that, ... apart.

        Raises:
            BotoCoreError, ClientError, S3UploadFailedError, VerificationError: the last
                attempt's failure; `dest` then holds no object that looks like this file.
        """
        digest = file_digest(path, self.settings.part_size(path.stat().st_size))
        if self.holds(dest, digest):
            log.info("%s already in S3 at %s", path.name, dest.uri)
            return digest
        for attempt in range(1, self.settings.attempts + 1):
            try:
                self.abort_incomplete(dest)
                self.client.upload_file(
                    str(path),
                    dest.bucket,
                    dest.key,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": digest.sha256}},
                    Config=self.settings.transfer_config(),
                )
                self.verify(dest, digest)
                log.info("uploaded %s to %s (%s bytes, sha256 verified)", path.name, dest.uri, digest.size)
                return digest
            except (*TRANSIENT, VerificationError) as err:
                log.warning(
                    "upload of %s to %s failed (try %s/%s): %s", path, dest.uri, attempt, self.settings.attempts, err
                )
                if attempt == self.settings.attempts:
                    raise
                time.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def holds(self, dest: S3Location, digest: Digest) -> bool:
        """True when `dest` exists with this file's size and SHA-256 (a finished earlier upload)."""
        try:
            head = head_or_none(self.client, dest)
        except BotoCoreError:
            return False  # unreachable: the upload attempts will report it
        if head is None:
            return False
        return head["ContentLength"] == digest.size and head.get("Metadata", {}).get("sha256") == digest.sha256

    def verify(self, dest: S3Location, digest: Digest) -> None:
        """Checks the object at `dest` against `digest`; deletes it and raises VerificationError if it differs."""
        head = self.client.head_object(Bucket=dest.bucket, Key=dest.key, ChecksumMode="ENABLED")
        # Real S3 suffixes multipart checksums with "-<parts>"; moto does not.
        checksum = head.get("ChecksumSHA256", "").split("-")[0]
        expected = digest.expected_checksum(self.settings.multipart_threshold)
        if head["ContentLength"] != digest.size or checksum != expected:
            # Never leave an object behind that looks complete but is not this file.
            self.client.delete_object(Bucket=dest.bucket, Key=dest.key)
            raise VerificationError(
                f"{dest.uri}: S3 has {head['ContentLength']} bytes, sha256 {checksum or 'missing'}; "
                f"expected {digest.size} bytes, sha256 {expected}"
            )

    def abort_incomplete(self, dest: S3Location) -> None:
        """Aborts multipart uploads of `dest` left by an attempt that could not clean up (S3 was down)."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=dest.bucket, Prefix=dest.key)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] == dest.key:
                        self.client.abort_multipart_upload(
                            Bucket=dest.bucket, Key=dest.key, UploadId=upload["UploadId"]
                        )
                        log.info("aborted an incomplete multipart upload of %s", dest.uri)
        except ClientError as err:
            if err.response["Error"]["Code"] != "AccessDenied":
                raise
            # Without s3:ListBucketMultipartUploads a bucket lifecycle rule has to clean these up.
            log.debug("cannot list multipart uploads of %s: %s", dest.uri, err)


def download_verified(client: Any, source: S3Location, dest: Path) -> Path:
    """Downloads `source` to `dest` and checks it against the SHA-256 recorded at upload.

    Raises:
        DogbreedError: S3 refused, or the bytes do not match (the download is then removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        head = client.head_object(Bucket=source.bucket, Key=source.key)
        client.download_file(source.bucket, source.key, str(dest))
    except ClientError as err:
        raise DogbreedError(f"cannot download {source.uri}: {error_code(err)} ({err})") from None
    expected = head.get("Metadata", {}).get("sha256")
    if expected and sha256_file(dest) != expected:
        dest.unlink()
        raise DogbreedError(f"{source.uri} does not match the sha256 recorded at upload; download it again")
    log.info("downloaded %s to %s", source.uri, dest)
    return dest


def put_json(client: Any, location: S3Location, data: dict[str, Any]) -> None:
    """Writes a small JSON object (one PUT: readers see the old or the new one, never half)."""
    client.put_object(
        Bucket=location.bucket,
        Key=location.key,
        Body=json.dumps(data, indent=2).encode(),
        ContentType="application/json",
    )


def get_json(client: Any, location: S3Location) -> dict[str, Any] | None:
    """Reads a JSON object, or None when it (or its bucket) is not there."""
    try:
        body = client.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    except ClientError as err:
        if is_not_found(err):
            return None
        raise
    return json.loads(body)


def delete_prefix(client: Any, prefix: S3Location) -> int:
    """Deletes every object under `prefix/`; returns how many."""
    deleted = 0
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key.rstrip("/") + "/")
    for page in pages:
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=prefix.bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted
