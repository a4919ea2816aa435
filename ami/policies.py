"""What the instance's role may do: an inline S3 policy scoped to one prefix, its own log and spot request.

`dogbreed.aws.iam` makes the role (trusted by EC2 only) and its instance profile from these.

The policy grants object access under `s3://bucket/prefix/*` and listing of that prefix only;
the instance can read its code and data and write its artifacts, and nothing else in AWS.
The role also carries the project's permissions boundary (dogbreed/aws/boundary-policy.json):
the deployer policy lets a user create or change the role only with it, so no inline policy
can lift the role above what the boundary allows.
"""

from __future__ import annotations

from typing import Any

from ami.config import project_location

POLICY_NAME = "s3-project-prefix"
OWN_POLICY_NAME = "own-log-and-spot-request"
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]


def s3_prefix_policy(s3_uri: str, partition: str = "aws") -> dict[str, Any]:
    """Read/write objects under the prefix and list only keys under it."""
    location = project_location(s3_uri)
    bucket, prefix = location.bucket, location.key
    objects = f"arn:{partition}:s3:::{bucket}/{prefix}/*" if prefix else f"arn:{partition}:s3:::{bucket}/*"
    listing: dict[str, Any] = {
        "Sid": "ListProjectPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": f"arn:{partition}:s3:::{bucket}",
    }
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            listing,
            {"Sid": "ProjectObjects", "Effect": "Allow", "Action": OBJECT_ACTIONS, "Resource": objects},
        ],
    }


def own_resources_policy(partition: str, region: str, account: str, name: str) -> dict[str, Any]:
    """Write the training log to the project's own log group; cancel the project's own spot request.

    The cancel lets a finished spot instance end its persistent request before it terminates,
    or the request would start a replacement. Stopping itself needs no permission (shutdown).
    """
    group = f"arn:{partition}:logs:{region}:{account}:log-group:/dogbreed/ami/{name}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TrainingLog",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [group, f"{group}:*"],
            },
            {
                "Sid": "CancelOwnSpotRequest",
                "Effect": "Allow",
                "Action": "ec2:CancelSpotInstanceRequests",
                "Resource": f"arn:{partition}:ec2:{region}:{account}:spot-instances-request/*",
                "Condition": {"StringEquals": {"aws:ResourceTag/dogbreed:name": name}},
            },
        ],
    }
