"""What the endpoint's and the Lambda's roles may do: inline least-privilege policies (`dogbreed.aws.iam` makes them).

Policies are inline (one per role, named after it) rather than managed "full access"
ones, so each role can do exactly one deploy's work and disappears with it. Every role also
carries the project's permissions boundary (dogbreed/aws/boundary-policy.json): the deployer
policy only lets a deployer create or change roles that carry it, so whatever inline policy
a deployer writes, the role can never do more than the boundary allows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dogbreed.aws import boundary
from dogbreed.aws.iam import VERSION, container_statements, log_group_arn
from dogbreed.storage.location import S3Location

log = logging.getLogger(__name__)
DEPLOYER_POLICY = Path(__file__).resolve().parents[1] / "iam" / "deployer-policy.json"
OBJECTS_SID = "ModelArtifactsAndState"


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


def deployer_policy(prefixes: Sequence[S3Location], partition: str = "aws") -> dict[str, Any]:
    """deploy/iam/deployer-policy.json with its S3 objects narrowed to `prefixes` (none: as shipped, */dogbreed/*).

    The same prefixes as `python -m deploy setup` gives the boundary: the deployer writes models,
    state and code bundles where the roles it creates may read them.
    """
    shipped = json.loads(DEPLOYER_POLICY.read_text())
    if not prefixes:
        return shipped
    objects = sorted({boundary.object_arn(prefix, partition) for prefix in prefixes})
    statements = [{**s, "Resource": objects} if s["Sid"] == OBJECTS_SID else s for s in shipped["Statement"]]
    return {**shipped, "Statement": statements}
