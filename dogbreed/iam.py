"""IAM permissions boundaries: every role `deploy` and `ami` create carries the one the project ships.

Both packages create roles and must treat the boundary the same way, so the rules live here:
the boundary policy must exist before any role is made, a role is created with it, and an
existing role without one (from an older version) gets it, which only narrows what it may do.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from botocore.exceptions import ClientError

from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)

# IAM policy names: 1-128 of letters, digits and +=,.@_-
POLICY_NAME_PATTERN = re.compile(r"^[\w+=,.@-]{1,128}$")
BOUNDARY_DOCUMENT = "deploy/iam/boundary-policy.json"
# The boundary lets the roles it bounds reach S3 objects only under a folder of this name.
BOUNDARY_S3_FOLDER = "dogbreed"


def boundary_arn(partition: str, account: str, name: str) -> str:
    """The ARN of the customer managed policy `name` used as a role's permissions boundary."""
    return f"arn:{partition}:iam::{account}:policy/{name}"


def check_boundary(iam: Any, arn: str, setting: str, error: type[DogbreedError]) -> None:
    """Fails before anything is created when the boundary policy was never made in this account.

    Raises:
        error: the policy does not exist; the message names `setting` and the one-time set-up command.
    """
    try:
        iam.get_policy(PolicyArn=arn)
    except ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchEntity":
            raise
        name = arn.rsplit("/", 1)[-1]
        raise error(
            f"permissions boundary {arn} does not exist ({setting}); create it once with "
            f"aws iam create-policy --policy-name {name} --policy-document file://{BOUNDARY_DOCUMENT}"
        ) from None


def check_boundary_prefix(bucket: str, key: str, setting: str, error: type[DogbreedError]) -> None:
    """Refuses an S3 prefix the boundary would deny to the roles it bounds, before anything is created.

    Without this the role is made and the instance or endpoint starts, and only its first S3
    call fails (AccessDenied), after it has cost money.

    Raises:
        error: no folder of `key` is named `dogbreed`; the message names `setting` and a prefix that works.
    """
    folders = [part for part in key.split("/") if part]
    if BOUNDARY_S3_FOLDER in folders:
        return
    suggestion = "/".join([bucket, *folders, BOUNDARY_S3_FOLDER])
    raise error(
        f"{setting}: s3://{bucket}/{key.strip('/')} is outside what the permissions boundary lets the created "
        f"roles use (S3 keys under a '{BOUNDARY_S3_FOLDER}/' folder, {BOUNDARY_DOCUMENT}); use e.g. s3://{suggestion}"
    )


def adopt_boundary(iam: Any, role: dict[str, Any], boundary: str, remedy: str, error: type[DogbreedError]) -> bool:
    """Puts `boundary` on an existing role that has none; returns whether the role changed.

    Raises:
        error: the role carries another boundary (it was not made by this project, or with another
            setting); the message ends with `remedy`.
    """
    name = role["RoleName"]
    current = role.get("PermissionsBoundary", {}).get("PermissionsBoundaryArn")
    if current == boundary:
        return False
    if current is not None:
        raise error(f"role {name} has permissions boundary {current}, not {boundary}; {remedy}")
    iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=boundary)
    log.info("put boundary %s on existing role %s", boundary, name)
    return True
