"""The permissions boundary every created role carries, made once per account for the S3 prefixes a user names.

`python -m deploy setup s3://bucket/prefix ...` writes it from `boundary-policy.json` beside this module: the
roles it bounds may reach S3 objects under those prefixes only (without prefixes, the template's own: keys
under a `dogbreed/` folder of any bucket, which accounts set up before 0.2 have). Running it again adds
prefixes to those the account's boundary already holds; `--replace` makes them the only ones. Before a role is made,
`check_prefix` reads the boundary the account holds and refuses an S3 location it would deny, naming the
set-up command that adds it, so no instance or endpoint starts only to fail at its first S3 call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dogbreed.aws.iam import policy_document
from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("boundary-policy.json")
OBJECTS_SID, LISTING_SID = "ProjectObjects", "ListProjectPrefixes"
SETUP_COMMAND = "python -m deploy setup"
MAX_VERSIONS = 5  # IAM keeps at most five versions of a managed policy


def key_of(location: S3Location) -> str:
    return location.key.strip("/")


def object_arn(prefix: S3Location, partition: str) -> str:
    """Every object under `prefix`, as an ARN pattern."""
    key = key_of(prefix)
    return f"arn:{partition}:s3:::{prefix.bucket}/{key + '/' if key else ''}*"


def document(
    prefixes: Sequence[S3Location], partition: str = "aws", current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The boundary that adds `prefixes` to those `current` allows; no `current`: to none, no prefixes: as shipped.

    The S3 statements are the only ones that vary per account: every other statement is the template's,
    so a set-up run also brings an older boundary up to this release's.
    """
    template = json.loads(TEMPLATE.read_text())
    if current is None and not prefixes:
        return template
    shipped = {s["Sid"]: s for s in template["Statement"]}
    held = [s for s in (current or {"Statement": []})["Statement"] if _is_s3(s)]
    objects = next((dict(s) for s in held if s["Sid"] == OBJECTS_SID), {**shipped[OBJECTS_SID], "Resource": []})
    resources = objects["Resource"]
    resources = {resources} if isinstance(resources, str) else set(resources)
    objects["Resource"] = sorted(resources | {object_arn(prefix, partition) for prefix in prefixes})
    listings = {_listed_bucket(s): s for s in held if s["Sid"] != OBJECTS_SID}
    for prefix in prefixes:
        key = key_of(prefix)
        bucket = f"arn:{partition}:s3:::{prefix.bucket}"
        statement = listings.setdefault(bucket, {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket})
        keys = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [])
        keys = {keys} if isinstance(keys, str) else set(keys)
        statement["Condition"] = {"StringLike": {"s3:prefix": sorted(keys | ({key, f"{key}/*"} if key else {"*"}))}}
    numbered = [{**s, "Sid": f"{LISTING_SID}{i}" if i else LISTING_SID} for i, s in enumerate(listings.values())]
    others = [s for s in template["Statement"] if not _is_s3(s)]
    return {"Version": template["Version"], "Statement": [objects, *numbered, *others]}


def _is_s3(statement: dict[str, Any]) -> bool:
    return str(statement.get("Sid", "")).startswith((OBJECTS_SID, LISTING_SID))


def _listed_bucket(statement: dict[str, Any]) -> str:
    resource = statement["Resource"]
    return resource if isinstance(resource, str) else resource[0]


def object_patterns(boundary: dict[str, Any]) -> list[str]:
    """The S3 object ARNs (with wildcards) the boundary lets a role write."""
    patterns: list[str] = []
    for statement in boundary.get("Statement", []):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") == "Allow" and "s3:PutObject" in actions:
            resources = statement["Resource"]
            patterns += [resources] if isinstance(resources, str) else resources
    return patterns


def covers(boundary: dict[str, Any], bucket: str, key: str) -> bool:
    """Whether a role under `boundary` may write objects under `s3://bucket/key/`."""
    inside = f"{bucket}/{key.strip('/')}/object" if key.strip("/") else f"{bucket}/object"
    return any(fnmatchcase(inside, pattern.split(":::", 1)[-1]) for pattern in object_patterns(boundary))


def fetch(iam: Any, arn: str) -> dict[str, Any] | None:
    """The boundary's current document, None when there is no such policy."""
    try:
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchEntity":
            return None
        raise
    return policy_document(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"])


def check_prefix(iam: Any, arn: str, location: S3Location, setting: str, error: type[DogbreedError]) -> None:
    """Refuses an S3 location the account's boundary would deny to the roles it bounds.

    Raises:
        error: the location is outside every S3 prefix of the boundary; the message names `setting`
            and the set-up command that adds it.
    """
    boundary = fetch(iam, arn)
    if boundary is None or covers(boundary, location.bucket, location.key):
        return  # a missing boundary is iam.check_boundary's to report
    where = f"s3://{location.bucket}/{key_of(location)}".rstrip("/")
    raise error(
        f"{setting}: {where} is outside the S3 prefixes the permissions boundary {arn.rsplit('/', 1)[-1]} lets "
        f"the created roles use ({', '.join(object_patterns(boundary))}); add it once with {SETUP_COMMAND} {where}"
    )


def ensure(iam: Any, arn: str, prefixes: Sequence[S3Location], partition: str = "aws", replace: bool = False) -> str:
    """Creates the boundary `arn` for `prefixes`, or adds them to the one there (`replace`: only them).

    Returns what was done: created, updated or unchanged.
    """
    current = fetch(iam, arn)
    wanted = document(prefixes, partition, None if replace else current)
    name = arn.rsplit("/", 1)[-1]
    if current is None:
        iam.create_policy(
            PolicyName=name,
            PolicyDocument=json.dumps(wanted),
            Description="dogbreed: the most any role the project creates may do",
        )
        return "created"
    if current == wanted:
        return "unchanged"
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    if len(versions) >= MAX_VERSIONS:  # make room: the oldest version that is not the default goes
        oldest = min((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
        iam.delete_policy_version(PolicyArn=arn, VersionId=oldest["VersionId"])
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(wanted), SetAsDefault=True)
    return "updated"
