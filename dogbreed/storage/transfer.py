"""Verified transfers: uploads checked by S3 and read back, downloads checked against their SHA-256.

Uploads use boto3's transfer manager (multipart, concurrent parts) with
SHA-256 checksums that S3 checks on receipt; afterwards `head_object` must report the
local size and checksum, else the object is deleted and the upload retried. A failed
multipart upload is aborted (by s3transfer at once, or by the next attempt when S3 was
down), so a key never holds a partial object that looks complete. An upload has an overall
time budget (a hung S3 cannot stall its caller for longer), and refusals that another try
cannot change (no such bucket, access denied, bad credentials) are not retried. Downloads
are always checked against a SHA-256 recorded at upload; an object without one is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)
from s3transfer.utils import ChunksizeAdjuster

from dogbreed.errors import DogbreedError
from dogbreed.storage.location import TRANSIENT, S3Location, error_code, is_not_found, permanent_failure

log = logging.getLogger(__name__)


MiB = 1024 * 1024


# How often a caller waiting on an upload checks whether it should give up.
POLL_S = 0.1


T = TypeVar("T")


class VerificationError(Exception):
    """The object S3 holds after an upload does not match the local file."""


class UnverifiedObjectError(DogbreedError):
    """An object to download has no SHA-256 recorded at upload, so its bytes cannot be checked."""


class UploadTimeout(BotoCoreError):
    """An upload did not finish within its time budget, or was given up (S3 hung, or a stop came).

    A BotoCoreError, like the connection errors it stands for, so every caller that handles
    an unreachable S3 handles this too.
    """

    fmt = "{what} given up after {seconds:.1f} s: {reason}"


def within_budget(
    work: Callable[[], T], budget_s: float | None, what: str, give_up: Callable[[], bool] | None = None
) -> T:
    """`work()`, waited for at most `budget_s` seconds (None: no limit) and only while `give_up()` is false.

    `work` runs in a daemon thread. A request in flight cannot be interrupted, so on time-out
    the thread is left to end at its own socket timeout; callers pass a `work` that checks
    a flag before starting anything new (see `S3Uploader.upload`).

    Raises:
        UploadTimeout: the budget ran out, or `give_up()` turned true, first.
        Exception: whatever `work` raised.
    """
    if budget_s is None and give_up is None:
        return work()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err
        finally:
            done.set()

    started = time.monotonic()
    deadline = None if budget_s is None else started + budget_s
    threading.Thread(target=run, name=f"s3: {what}", daemon=True).start()
    while not done.wait(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))):
        if give_up is not None and give_up():
            raise UploadTimeout(what=what, seconds=time.monotonic() - started, reason="a stop was requested")
        if deadline is not None and time.monotonic() >= deadline:
            reason = f"over its {budget_s:g} s budget (S3 unreachable or too slow)"
            raise UploadTimeout(what=what, seconds=time.monotonic() - started, reason=reason)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


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


def whole_object_sha256(head: dict[str, Any]) -> str | None:
    """S3's own hex SHA-256 of the whole object from a `head_object(ChecksumMode=ENABLED)` answer, or None.

    A multipart checksum is a checksum of part checksums, not of the file, so it is not one:
    real S3 marks it with `-<parts>` and `ChecksumType` COMPOSITE; a multipart ETag (`"…-3"`)
    gives it away on stores that do neither.
    """
    checksum = head.get("ChecksumSHA256")
    if not checksum or "-" in checksum or head.get("ChecksumType") == "COMPOSITE" or "-" in head.get("ETag", ""):
        return None
    return base64.b64decode(checksum).hex()


def recorded_sha256(head: dict[str, Any]) -> str | None:
    """The hex SHA-256 of the whole object, as recorded at upload, from a `head_object` answer.

    `S3Uploader` stores it as `sha256` metadata; for other objects a whole-object
    `ChecksumSHA256` (asked for with `checksums=True`) is used.
    """
    return head.get("Metadata", {}).get("sha256") or whole_object_sha256(head)


def recorded_digests(head: dict[str, Any]) -> set[str]:
    """Every SHA-256 of the whole object S3 recorded: its own checksum and the `sha256` metadata."""
    return {digest for digest in (whole_object_sha256(head), head.get("Metadata", {}).get("sha256")) if digest}


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
    # Seconds one upload may take in all (every try and wait); None: no limit.
    budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise DogbreedError(f"an upload needs at least 1 attempt, got {self.attempts}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise DogbreedError(f"an upload budget must be above 0 seconds, got {self.budget_s}")

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

    def upload(
        self,
        path: Path,
        dest: S3Location,
        budget_s: float | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> Digest:
        """Uploads `path` to `dest` unless S3 already holds the same bytes; returns the file's digest.

        Each attempt aborts multipart uploads an earlier one left behind, uploads with
        SHA-256 checksums and checks size and checksum with `head_object`; attempts are
        `settings.backoff_s`, then twice that, ... apart. A refusal another try cannot
        change (`permanent_failure`) is raised at once.

        Args:
            path: the file.
            dest: its key.
            budget_s: seconds for the whole upload, every try included; None: `settings.budget_s`.
            give_up: polled while waiting; when it turns true the upload is given up at once.

        Raises:
            BotoCoreError, ClientError, S3UploadFailedError, VerificationError: the last
                attempt's failure; `dest` then holds no object that looks like this file.
            UploadTimeout: the budget ran out or `give_up()` turned true; no new request of
                this upload starts afterwards.
        """
        budget = self.settings.budget_s if budget_s is None else budget_s
        abandoned = threading.Event()
        deadline = None if budget is None else time.monotonic() + budget
        try:
            return within_budget(
                lambda: self.try_upload(path, dest, deadline, abandoned), budget, f"upload of {dest.uri}", give_up
            )
        except UploadTimeout:
            abandoned.set()
            raise

    def try_upload(self, path: Path, dest: S3Location, deadline: float | None, abandoned: threading.Event) -> Digest:
        """`upload`'s tries, until one works, a refusal is permanent, or a wait would pass `deadline`."""
        digest = file_digest(path, self.settings.part_size(path.stat().st_size))
        if self.holds(dest, digest):
            log.info("%s already in S3 at %s", path.name, dest.uri)
            return digest
        for attempt in range(1, self.settings.attempts + 1):
            if abandoned.is_set():  # the caller has given up: start nothing new
                raise UploadTimeout(what=f"upload of {dest.uri}", seconds=0.0, reason="given up by the caller")
            try:
                self.abort_incomplete(dest)
                self.client.upload_file(
                    str(path),
                    dest.bucket,
                    dest.key,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": digest.sha256}},
                    Config=self.settings.transfer_config(),
                )
                if abandoned.is_set():
                    # A newer upload of this key may be under way; checking (and deleting) is its job now.
                    raise UploadTimeout(what=f"upload of {dest.uri}", seconds=0.0, reason="given up by the caller")
                self.verify(dest, digest)
                log.info("uploaded %s to %s (%s bytes, sha256 verified)", path.name, dest.uri, digest.size)
                return digest
            except (*TRANSIENT, VerificationError) as err:
                permanent = permanent_failure(err)
                log.warning(
                    "upload of %s to %s failed (try %s/%s%s): %s",
                    path,
                    dest.uri,
                    attempt,
                    self.settings.attempts,
                    f"; {permanent} is not retried" if permanent else "",
                    err,
                )
                wait = self.settings.backoff_s * 2 ** (attempt - 1)
                if permanent or attempt == self.settings.attempts:
                    raise
                if deadline is not None and time.monotonic() + wait >= deadline:
                    log.warning("no time left in the upload budget for another try of %s", dest.uri)
                    raise
                time.sleep(wait)
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


def put_command(source: S3Location) -> str:
    """The command that uploads one file to `source` the verified way (`python -m dogbreed.storage put`)."""
    return f"python -m dogbreed.storage put <file> {source.uri}"


def download_verified(client: Any, source: S3Location, dest: Path) -> Path:
    """Downloads `source` to `dest` and checks it against every SHA-256 S3 recorded for it.

    Those are S3's own whole-object `ChecksumSHA256` and the `sha256` metadata `S3Uploader`
    writes. An object with neither (written by a plain `aws s3 cp` or `put_object`, which
    also drops the metadata when it overwrites) cannot be checked and is refused before
    anything is downloaded. Every download whose bytes matter goes through here: resume
    from S3, deploy packaging from an s3:// run. Data sync (`dogbreed.storage.mirror`) does not:
    it mirrors the user's own images by ETag and size, and the scan checks each file.

    Raises:
        UnverifiedObjectError: the object has no recorded SHA-256 (the message says how to re-upload it).
        DogbreedError: S3 refused, or the bytes do not match (the download is then removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        head = client.head_object(Bucket=source.bucket, Key=source.key, ChecksumMode="ENABLED")
        expected = recorded_digests(head)
        if not expected:
            raise UnverifiedObjectError(
                f"{source.uri} has no SHA-256 to check it against (no sha256 metadata, no whole-object "
                "ChecksumSHA256): it was written or overwritten without dogbreed's verified upload, so it is "
                "refused. Re-upload it with `python -m dogbreed.storage push <run dir> <run s3 uri>` "
                f"or `{put_command(source)}`"
            )
        client.download_file(source.bucket, source.key, str(dest))
    except ClientError as err:
        raise DogbreedError(f"cannot download {source.uri}: {error_code(err)} ({err})") from None
    actual = sha256_file(dest)
    if expected != {actual}:
        dest.unlink()
        raise DogbreedError(f"{source.uri} does not match the sha256 recorded at upload; download it again")
    log.info("downloaded %s to %s (sha256 verified)", source.uri, dest)
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
