"""The SSH key: an existing EC2 key pair by name, or one created for the project and saved 0600."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from ami.errors import AmiError

log = logging.getLogger(__name__)

# Marks key pairs this tool created, so teardown never deletes a key the user brought.
CREATED_TAG = "dogbreed:created-by"


class KeyPairs:
    """Finds, creates and deletes EC2 key pairs through an injected EC2 client."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2

    def describe(self, name: str) -> dict[str, Any] | None:
        """The key pair called `name`, or None."""
        try:
            return self.ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"][0]
        except ClientError as err:
            if err.response["Error"]["Code"] == "InvalidKeyPair.NotFound":
                return None
            raise

    def ensure_existing(self, name: str) -> None:
        """Checks that a user-named key pair exists in this region."""
        if self.describe(name) is None:
            raise AmiError(f"key pair {name!r} does not exist in this region; fix ami.key_name or set it to null")

    def ensure_created(self, name: str, key_file: Path, tags: list[dict[str, str]]) -> bool:
        """Creates `name` and writes its private key to `key_file` (0600), or reuses both; True if created."""
        existing = self.describe(name)
        if existing is not None:
            if not key_file.exists():
                raise AmiError(
                    f"key pair {name!r} exists in AWS but its private key {key_file} is missing; "
                    f"delete the key pair (aws ec2 delete-key-pair --key-name {name}) or set ami.key_name"
                )
            log.info("reusing key pair %s (%s)", name, key_file)
            return False
        if key_file.exists():
            raise AmiError(f"{key_file} exists but key pair {name!r} does not; move the file away, nothing was changed")
        created = self.ec2.create_key_pair(
            KeyName=name,
            KeyType="ed25519",
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": [*tags, {"Key": CREATED_TAG, "Value": "ami"}]}],
        )
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created with 0600 from the first byte: ssh refuses keys others can read.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(created["KeyMaterial"])
        log.info("created key pair %s, private key in %s", name, key_file)
        return True

    def delete_if_created(self, name: str, key_file: Path) -> bool:
        """Deletes the key pair (and its local file) only if this tool created it."""
        existing = self.describe(name)
        if existing is None:
            return False
        if not any(tag["Key"] == CREATED_TAG for tag in existing.get("Tags", [])):
            log.info("leaving key pair %s alone: it was not created by this tool", name)
            return False
        self.ec2.delete_key_pair(KeyName=name)
        key_file.unlink(missing_ok=True)
        log.info("deleted key pair %s and %s", name, key_file)
        return True
