"""Does a bucket take writes under a prefix? A small put and its delete, before anything is prepared or created.

Training runs it before any data is read (storage=s3) and `ami launch` before any resource exists,
so a typo in the S3 address or a missing permission costs seconds, not an epoch or a half-made launch.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location, error_code
from dogbreed.storage.transfer import within_budget

log = logging.getLogger(__name__)

MISSING_BUCKET = ("NoSuchBucket", "InvalidBucketName")


def check_writable(client: Any, dest: S3Location, setting: str, budget_s: float | None = None, what: str = "") -> None:
    """Writes and deletes `.dogbreed-preflight-<random>` under `dest`.

    Args:
        setting: the setting that names `dest`, which the messages say to fix.
        budget_s: seconds the check may take (None: no limit of its own).
        what: the messages' lead, e.g. `storage=s3: `.

    Raises:
        DogbreedError: the bucket is missing, refuses the write, or cannot be reached within `budget_s`.
    """
    probe = dest.child(f".dogbreed-preflight-{uuid.uuid4().hex[:12]}")
    try:
        within_budget(lambda: write_and_remove(client, probe), budget_s, f"write check of {dest.uri}")
    except ClientError as err:
        code = error_code(err)
        if code in MISSING_BUCKET:
            raise DogbreedError(
                f"{what}bucket {dest.bucket!r} does not exist ({code}); create it or fix {setting}"
            ) from None
        message = " ".join(str(err.response["Error"].get("Message", "")).split())
        raise DogbreedError(
            f"{what}cannot write to bucket {dest.bucket!r} under {dest.uri} ({code}: {message}); the credentials "
            f"need s3:PutObject there, or fix {setting}"
        ) from None
    except BotoCoreError as err:
        raise DogbreedError(
            f"{what}cannot reach bucket {dest.bucket!r} ({' '.join(str(err).split())}); check the network, "
            f"AWS_ENDPOINT_URL and credentials, or fix {setting}"
        ) from None
    log.info("bucket %s is writable under %s", dest.bucket, dest.uri)


def write_and_remove(client: Any, probe: S3Location) -> None:
    client.put_object(Bucket=probe.bucket, Key=probe.key, Body=b"dogbreed storage check\n")
    try:
        client.delete_object(Bucket=probe.bucket, Key=probe.key)
    except ClientError as err:
        # Writing is what training needs; a role without s3:DeleteObject (ami's) leaves the probe behind.
        log.warning("could not delete %s (%s); it is safe to delete", probe.uri, error_code(err))
