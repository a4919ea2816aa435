"""What a deploy keeps under `deploy.s3_uri`: the key layout and the content-addressed model tarball.

The model goes up through `dogbreed.storage.transfer.S3Uploader`, the project's one verified upload:
SHA-256 checked by S3 and read back, retried, and never left as a partial or wrong object
under its content-addressed key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.cloud.errors import DeployError
from dogbreed.storage.location import TRANSIENT, S3Location
from dogbreed.storage.transfer import S3Uploader, UploadSettings, VerificationError, head_or_none, recorded_sha256

# A model tarball is tens of MB: the transfer manager's defaults, three tries.
MODEL_UPLOAD = UploadSettings()


def join_key(*parts: str) -> str:
    """Joins key parts, skipping empty ones (an `s3://bucket` prefix has no key part)."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


def upload_model(
    client: Any, tarball: Path, location: S3Location, settings: UploadSettings = MODEL_UPLOAD
) -> tuple[str, bool]:
    """Puts `tarball` at its content-addressed `location` unless an object is already there.

    The key names the model's content (not the tarball's bytes, which carry timestamps), so
    an object there already holds this model and is kept as it is.

    Returns:
        The hex SHA-256 of the object at `location`, and whether this call uploaded it.

    Raises:
        DeployError: the upload failed on every try (the message names the bucket and key);
            nothing that looks like the model is left at `location`.
    """
    head = head_or_none(client, location, checksums=True)
    recorded = recorded_sha256(head) if head is not None else None
    if recorded is not None:
        return recorded, False
    try:
        digest = S3Uploader(client, settings).upload(tarball, location)
    except (*TRANSIENT, VerificationError) as err:
        removed = "; upload removed" if isinstance(err, VerificationError) else ""
        raise DeployError(f"upload of {tarball} to {location.uri} failed: {err}{removed}") from err
    return digest.sha256, True
