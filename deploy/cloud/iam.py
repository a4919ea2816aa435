"""IAM roles for the endpoint and the Lambda: trust, inline least-privilege policies, boundary, teardown.

Policies are inline (one per role, named after it) rather than managed "full access"
ones, so each role can do exactly one deploy's work and disappears with it. Every role also
carries the project's permissions boundary (deploy/iam/boundary-policy.json): the deployer
policy only lets a deployer create or change roles that carry it, so whatever inline policy
a deployer writes, the role can never do more than the boundary allows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote

from botocore.exceptions import ClientError

from deploy.cloud.errors import DeployError
from dogbreed.iam import adopt_boundary

log = logging.getLogger(__name__)

T = TypeVar("T")
VERSION = "2012-10-17"
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


def sagemaker_execution_policy(
    partition: str,
    region: str,
    account: str,
    bucket: str,
    prefix: str,
    repository_arn: str,
    endpoint: str,
    write_capture: bool = False,
) -> dict[str, Any]:
    """What the endpoint's container needs: read its model under `prefix`, pull its image, write its logs;
    with `write_capture`, also write data capture files under `prefix/capture/`."""
    capture = {
        "Sid": "WriteCapture",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": f"arn:{partition}:s3:::{bucket}/{prefix}/capture/*",
    }
    return {
        "Version": VERSION,
        "Statement": [
            *([capture] if write_capture else []),
            {
                "Sid": "ReadModel",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:{partition}:s3:::{bucket}/{prefix}/*",
            },
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
                "Resource": log_group_arn(partition, region, account, f"/aws/sagemaker/Endpoints/{endpoint}"),
            },
        ],
    }


def lambda_policy(partition: str, region: str, account: str, endpoint: str, function: str) -> dict[str, Any]:
    """What the front door needs: invoke this one endpoint and write its own logs."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "InvokeEndpoint",
                "Effect": "Allow",
                "Action": "sagemaker:InvokeEndpoint",
                # SageMaker ARNs carry the endpoint name in lower case.
                "Resource": f"arn:{partition}:sagemaker:{region}:{account}:endpoint/{endpoint.lower()}",
            },
            {
                "Sid": "OwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": log_group_arn(partition, region, account, f"/aws/lambda/{function}"),
            },
        ],
    }


def ensure_role(
    iam: Any, name: str, service: str, policy: dict[str, Any], description: str, boundary: str
) -> tuple[str, bool]:
    """Creates the role with `boundary` or brings an existing one's boundary and inline policy to what is asked.

    An existing role without a boundary (made by an older `up`) gets this one: that only narrows
    what it may do. A role with another boundary, or trusting another service, was not made by
    `up` and is refused rather than changed.

    Returns:
        The role ARN and whether anything changed.

    Raises:
        DeployError: the role exists with another boundary or another trust policy.
    """
    trust = trust_policy(service)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchEntity":
            raise
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=description,
            PermissionsBoundary=boundary,
        )["Role"]
        log.info("created role %s with boundary %s", name, boundary)
        changed = True
    else:
        changed = _adopt(iam, role, trust, boundary)
    if _inline_policy(iam, name) != policy:
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        log.info("set inline policy %s", name)
        changed = True
    return role["Arn"], changed


def _adopt(iam: Any, role: dict[str, Any], trust: dict[str, Any], boundary: str) -> bool:
    """Checks an existing role is ours; puts the boundary on it when it has none. Returns whether it changed."""
    name = role["RoleName"]
    if _document(role["AssumeRolePolicyDocument"]) != trust:
        raise DeployError(
            f"role {name} exists but trusts something other than {trust['Statement'][0]['Principal']['Service']}; "
            "delete it or choose another deploy.name"
        )
    return adopt_boundary(
        iam, role, boundary, "set deploy.permissions_boundary to match, or delete the role", DeployError
    )


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


def role_state(iam: Any, name: str) -> str:
    """`present` or `absent`, for `status`."""
    try:
        iam.get_role(RoleName=name)
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchEntity":
            return "absent"
        raise
    return "present"


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


def _inline_policy(iam: Any, name: str) -> dict[str, Any] | None:
    try:
        return _document(iam.get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"])
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchEntity":
            return None
        raise


def _document(document: str | dict[str, Any]) -> dict[str, Any]:
    # IAM returns documents URL-decoded into dicts through boto3, but moto and some paths give strings.
    if isinstance(document, str):
        return json.loads(unquote(document))
    return document
