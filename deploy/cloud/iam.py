"""IAM roles for the endpoint and the Lambda: trust, inline least-privilege policies, boundary, teardown.

Policies are inline (one per role, named after it) rather than managed "full access"
ones, so each role can do exactly one deploy's work and disappears with it. Every role also
carries the project's permissions boundary (deploy/iam/boundary-policy.json): the deployer
policy only lets a deployer create or change roles that carry it, so whatever inline policy
a deployer writes, the role can never do more than the boundary allows.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from deploy.cloud.errors import DeployError
from dogbreed.aws import iam as dogbreed_iam
from dogbreed.aws.iam import VERSION, container_statements, log_group_arn

log = logging.getLogger(__name__)


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
            *container_statements(
                repository_arn, log_group_arn(partition, region, account, f"/aws/sagemaker/Endpoints/{endpoint}")
            ),
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
    """`dogbreed.aws.iam.ensure_role` for the deploy roles: a foreign role is a DeployError naming what to change."""
    remedy = "delete it, choose another deploy.name, or set deploy.permissions_boundary to match"
    return dogbreed_iam.ensure_role(iam, name, service, policy, description, boundary, DeployError, remedy)


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
