"""IAM roles under the project's permissions boundary: the one module that creates, changes and deletes roles.

`deploy`, `ami` and the SageMaker training launcher only describe their roles (`RoleSpec`: who may
assume it, its inline policies); the rules live here. The boundary policy must exist before any
role is made, a role is created with it, and an existing role without one (from an older version)
gets it, which only narrows what it may do. A role that trusts another service or carries another
boundary was not made by this project and is refused rather than changed. Inline policies are
brought to what is asked. EC2 instances take their role through an instance profile of the same name.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

from botocore.exceptions import ClientError

from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)

# IAM policy names: 1-128 of letters, digits and +=,.@_-
POLICY_NAME_PATTERN = re.compile(r"^[\w+=,.@-]{1,128}$")
VERSION = "2012-10-17"
T = TypeVar("T")
# A role created a moment ago is not yet assumable everywhere; AWS documents ~10 s, allow more.
PROPAGATION_ATTEMPTS = 10
PROPAGATION_DELAY_S = 3.0


def trust_policy(service: str) -> dict[str, Any]:
    """A trust policy that lets `service` (e.g. `lambda.amazonaws.com`) assume the role."""
    return {
        "Version": VERSION,
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def log_group_arn(partition: str, region: str, account: str, group: str) -> str:
    """The ARN of a log group and its streams."""
    return f"arn:{partition}:logs:{region}:{account}:log-group:{group}:*"


def container_statements(repository_arn: str, log_group: str) -> list[dict[str, Any]]:
    """What a SageMaker container's role needs besides its data: pull its image, write its logs.

    Args:
        repository_arn: the ECR repository of the image.
        log_group: the log group's ARN (`log_group_arn`).
    """
    return [
        # GetAuthorizationToken has no resource scope in IAM: "*" is the only valid value.
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {
            "Sid": "PullImage",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": repository_arn,
        },
        {
            "Sid": "OwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": log_group,
        },
    ]


def boundary_arn(partition: str, account: str, name: str) -> str:
    """The ARN of the customer managed policy `name` used as a role's permissions boundary."""
    return f"arn:{partition}:iam::{account}:policy/{name}"


def check_boundary(
    iam: Any, arn: str, setting: str, error: type[DogbreedError], prefix: str = "s3://BUCKET/PREFIX"
) -> None:
    """Fails before anything is created when the boundary policy was never made in this account.

    Raises:
        error: the policy does not exist; the message names `setting` and the one-time set-up command
            for `prefix` (the S3 location the caller's roles will use).
    """
    try:
        iam.get_policy(PolicyArn=arn)
    except ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchEntity":
            raise
        raise error(
            f"permissions boundary {arn} does not exist ({setting}); create it once for your S3 prefix with "
            f"python -m deploy setup {prefix}"
        ) from None


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


@dataclass(frozen=True)
class RoleSpec:
    """A role as its caller describes it.

    Attributes:
        name: the role's name (its inline policies' names are the keys of `policies`).
        service: the service principal that may assume it, e.g. `lambda.amazonaws.com`.
        policies: inline policy name -> document.
        description: shown in the IAM console.
        boundary: the ARN of the permissions boundary the role carries.
        remedy: how to resolve a clash with a role of the same name not made by this project.
        tags: IAM tags set when the role is created.
    """

    name: str
    service: str
    policies: Mapping[str, dict[str, Any]]
    description: str
    boundary: str
    remedy: str
    tags: tuple[dict[str, str], ...] = field(default=())


def ensure_role(iam: Any, spec: RoleSpec, error: type[DogbreedError]) -> tuple[str, bool]:
    """Creates the role with its boundary, or brings an existing one's boundary and inline policies to `spec`.

    Returns:
        The role ARN and whether anything changed.

    Raises:
        error: the role exists with another boundary or another trust policy; the message ends with `spec.remedy`.
    """
    trust = trust_policy(spec.service)
    try:
        role = iam.get_role(RoleName=spec.name)["Role"]
    except ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchEntity":
            raise
        extra = {"Tags": list(spec.tags)} if spec.tags else {}
        role = iam.create_role(
            RoleName=spec.name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=spec.description,
            PermissionsBoundary=spec.boundary,
            **extra,
        )["Role"]
        log.info("created role %s with boundary %s", spec.name, spec.boundary)
        changed = True
    else:
        if policy_document(role["AssumeRolePolicyDocument"]) != trust:
            raise error(f"role {spec.name} exists but trusts something other than {spec.service}; {spec.remedy}")
        changed = adopt_boundary(iam, role, spec.boundary, spec.remedy, error)
    for policy_name, policy in spec.policies.items():
        if _inline_policy(iam, spec.name, policy_name) != policy:
            iam.put_role_policy(RoleName=spec.name, PolicyName=policy_name, PolicyDocument=json.dumps(policy))
            log.info("set inline policy %s of role %s", policy_name, spec.name)
            changed = True
    return role["Arn"], changed


def _inline_policy(iam: Any, role: str, name: str) -> dict[str, Any] | None:
    try:
        return policy_document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchEntity":
            return None
        raise


def role_exists(iam: Any, name: str) -> bool:
    """Whether the role `name` exists (so a failed launch knows whether it made it, and `status` can say)."""
    try:
        iam.get_role(RoleName=name)
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchEntity":
            return False
        raise
    return True


def delete_role(iam: Any, name: str) -> bool:
    """Deletes the role and its inline policies; returns False when it was already gone."""
    try:
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
            for policy_name in page["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
        iam.delete_role(RoleName=name)
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchEntity":
            return False
        raise
    log.info("deleted role %s", name)
    return True


def ensure_instance_profile(iam: Any, name: str, tags: tuple[dict[str, str], ...] = ()) -> str:
    """The instance profile `name` holding the role `name` (both made here if missing); returns its ARN."""
    try:
        profile = iam.create_instance_profile(InstanceProfileName=name, Tags=list(tags))["InstanceProfile"]
        log.info("created instance profile %s", name)
    except ClientError as err:
        if err.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    if not any(role["RoleName"] == name for role in profile["Roles"]):
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return profile["Arn"]


def delete_instance_profile(iam: Any, name: str) -> bool:
    """Removes the instance profile `name` (its roles detached first); False when there was none."""
    try:
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchEntity":
            return False
        raise
    for role in roles:
        iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
    iam.delete_instance_profile(InstanceProfileName=name)
    log.info("deleted instance profile %s", name)
    return True


def caller(sts: Any) -> tuple[str, str]:
    """The partition and account of the credentials in use."""
    identity = sts.get_caller_identity()
    return identity["Arn"].split(":")[1], identity["Account"]


def policy_document(document: str | dict[str, Any]) -> dict[str, Any]:
    """A policy document as a dict: boto3 gives dicts, moto and some paths URL-encoded strings."""
    if isinstance(document, str):
        return json.loads(unquote(document))
    return document


def retry_while_role_propagates(call: Callable[[], T], is_propagation: Callable[[ClientError], bool]) -> T:
    """Runs `call`, retrying while AWS says a just-created role cannot be assumed yet."""
    attempt = 1
    while True:
        try:
            return call()
        except ClientError as err:
            if attempt >= PROPAGATION_ATTEMPTS or not is_propagation(err):
                raise
            log.info("role not assumable yet (%s); retrying", err.response["Error"]["Message"])
        attempt += 1
        time.sleep(PROPAGATION_DELAY_S)
