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
PROJECT_TAGGED = {"StringEquals": {"aws:ResourceTag/project": "dogbreed"}}
TAG_ON_CREATE = {"StringEquals": {"aws:RequestTag/project": "dogbreed"}}


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


def operator_policy(partition: str, region: str, account: str, s3_uri: str | None) -> dict[str, Any]:
    """What the user running `python -m ami` needs on the EC2 side, in one region, on the project's resources.

    Every create call must tag its resource `project=dogbreed`, and every change or delete is
    allowed on resources carrying that tag only. The instance role is passed by the deployer
    policy's PassInstanceRoleToEc2Only (only `role/dogbreed`, only to EC2, and the role cannot
    rise above the permissions boundary), so this document holds no iam action at all.
    """
    ec2 = f"arn:{partition}:ec2:{region}:{account}"
    statements = [
        *_run_statements(ec2, partition, region),
        *_project_resource_statements(ec2),
        *_lookup_statements(partition, region, account),
    ]
    if s3_uri:  # the code bundle and the data go up, runs come down (`pull`)
        prefix = s3_prefix_policy(s3_uri, partition)["Statement"]
        statements += [{**statement, "Sid": f"Project{statement['Sid']}"} for statement in prefix]
    return {"Version": "2012-10-17", "Statement": statements}


def _run_statements(ec2: str, partition: str, region: str) -> list[dict[str, Any]]:
    """RunInstances, one statement per kind of resource it touches, each under its own condition."""
    return [
        _allow("RunOnlyTaggedInstances", "ec2:RunInstances",
               [f"{ec2}:instance/*", f"{ec2}:volume/*", f"{ec2}:spot-instances-request/*"], TAG_ON_CREATE),
        _allow("RunWithTheProjectGroupAndKey", "ec2:RunInstances", [f"{ec2}:security-group/*", f"{ec2}:key-pair/*"],
               PROJECT_TAGGED),
        _allow("RunInTheRegionsNetworks", "ec2:RunInstances", [f"{ec2}:subnet/*", f"{ec2}:network-interface/*"]),
        _allow("RunOnlyAmazonImages", "ec2:RunInstances", f"arn:{partition}:ec2:{region}::image/*",
               {"StringEquals": {"ec2:Owner": "amazon"}}),
    ]  # fmt: skip


def _project_resource_statements(ec2: str) -> list[dict[str, Any]]:
    """Create groups and key pairs tagged, tag only while creating, change and end only what is tagged."""
    groups_and_keys = [f"{ec2}:security-group/*", f"{ec2}:key-pair/*"]
    return [
        _allow("CreateTaggedGroupsAndKeys", ["ec2:CreateSecurityGroup", "ec2:CreateKeyPair"], groups_and_keys,
               TAG_ON_CREATE),
        _allow("GroupsInTheRegionsNetworks", "ec2:CreateSecurityGroup", f"{ec2}:vpc/*"),
        _allow("TagOnlyWhileCreating", "ec2:CreateTags", f"{ec2}:*/*",
               {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateSecurityGroup", "CreateKeyPair"]}}),
        _allow("TagSpotRequestIdOnProjectInstances", "ec2:CreateTags", f"{ec2}:instance/*",
               {**PROJECT_TAGGED, "ForAllValues:StringEquals": {"aws:TagKeys": ["dogbreed:spot-request"]}}),
        _allow("ChangeAndEndOnlyProjectResources", [
            "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
            "ec2:DeleteKeyPair", "ec2:TerminateInstances", "ec2:CancelSpotInstanceRequests",
        ], [*groups_and_keys, f"{ec2}:instance/*", f"{ec2}:spot-instances-request/*"], PROJECT_TAGGED),
    ]  # fmt: skip


def _lookup_statements(partition: str, region: str, account: str) -> list[dict[str, Any]]:
    """Describe calls in the region, the DLAMI parameters, the training logs and the preflight's quotas."""
    return [
        _allow("DescribeInTheRegion", [
            "ec2:DescribeInstances", "ec2:DescribeSecurityGroups", "ec2:DescribeKeyPairs", "ec2:DescribeImages",
            "ec2:DescribeInstanceTypes", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeSpotInstanceRequests",
        ], "*", {"StringEquals": {"aws:RequestedRegion": region}}),
        _allow("DeepLearningAmiParameters", "ssm:GetParameter",
               f"arn:{partition}:ssm:{region}:*:parameter/aws/service/deeplearning/*"),
        _allow("TrainingLogGroups",
               ["logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:TagResource", "logs:FilterLogEvents"],
               f"arn:{partition}:logs:{region}:{account}:log-group:/dogbreed/ami/*"),
        _allow("PreflightReadQuotas", ["servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota",
               "servicequotas:ListAWSDefaultServiceQuotas"], "*"),
    ]  # fmt: skip


def _allow(sid: str, actions: str | list[str], resources: str | list[str], condition: dict[str, Any] | None = None
           ) -> dict[str, Any]:  # fmt: skip
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement
