"""S3 addresses and clients, and what an S3 error means: not found, worth another try, or final.

Credentials, region and endpoint come from the standard boto3 chain (instance profile on
EC2, `AWS_ENDPOINT_URL`). Transfers are `dogbreed.storage.transfer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)

# Error codes meaning "no such object": HEAD answers a bare 404 (also for a missing bucket),
# GET names the missing key or bucket.
NOT_FOUND = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
# Uploads that fail in these ways are worth another try; anything else is a bug or bad input.
TRANSIENT = (BotoCoreError, ClientError, S3UploadFailedError)
# ... except these refusals, which another try cannot change: the bucket or the credentials are
# wrong, or they lack a permission. They fail at once (see `permanent_failure`).
PERMANENT_CODES = frozenset(
    {
        "NoSuchBucket",
        "InvalidBucketName",
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "InvalidRequest",
        "InvalidArgument",
        "403",
    }
)
PERMANENT_TYPES = (NoCredentialsError, PartialCredentialsError, NoRegionError, ParamValidationError)


class S3AddressError(DogbreedError):
    """A string that should be an `s3://bucket/key` address is not one."""


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


def permanent_failure(err: BaseException) -> str | None:
    """Why another try of the call that raised `err` cannot succeed (an S3 error code), or None.

    Looks through the exceptions `err` was raised from: boto3's S3UploadFailedError wraps the
    ClientError of the request that failed.
    """
    seen: BaseException | None = err
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, ClientError) and error_code(seen) in PERMANENT_CODES:
            return error_code(seen)
        if isinstance(seen, PERMANENT_TYPES):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None
