"""The instance's identity: a role EC2 may assume, an inline S3 policy scoped to one prefix, a profile.

The policy grants object access under `s3://bucket/prefix/*` and listing of that prefix only;
the instance can read its code and data and write its artifacts, and nothing else in AWS.
The role also carries the project's permissions boundary (deploy/iam/boundary-policy.json):
the deployer policy lets a user create or change the role only with it, so no inline policy
can lift the role above what the boundary allows.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from ami.errors import AmiError
from dogbreed.aws.iam import adopt_boundary
from dogbreed.storage.location import S3AddressError, S3Location

log = logging.getLogger(__name__)

POLICY_NAME = "s3-project-prefix"
OWN_POLICY_NAME = "own-log-and-spot-request"
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]


def project_location(s3_uri: str) -> S3Location:
    """`ami.s3_uri` as an address whose key has no slashes at its ends ("" for a bare bucket).

    Raises:
        AmiError: `s3_uri` is not an `s3://bucket/prefix` address (the message names the setting).
    """
    try:
        location = S3Location.parse(s3_uri)
    except S3AddressError:
        raise AmiError(f"ami.s3_uri must look like s3://bucket/prefix, got {s3_uri!r}") from None
    return S3Location(location.bucket, location.key.strip("/"))


def trust_policy() -> dict[str, Any]:
    """Only EC2 instances may take this role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }


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


class InstanceProfiles:
    """Role + inline policy + instance profile, all named `name`, through an injected IAM client."""

    def __init__(self, iam: Any) -> None:
        self.iam = iam

    def exists(self, name: str) -> bool:
        """Whether the role `name` exists (so a failed launch knows whether it made it)."""
        try:
            self.iam.get_role(RoleName=name)
        except ClientError as err:
            _ignore_missing(err)
            return False
        return True

    def ensure(self, name: str, policies: dict[str, dict[str, Any]], tags: list[dict[str, str]], boundary: str) -> str:
        """Creates what is missing, rewrites the inline `policies` (by name) and returns the profile ARN.

        The role is created with `boundary`. An existing role without a boundary (from an older
        launch) gets it, which only narrows it; one with another boundary is refused.
        """
        try:
            self.iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(trust_policy()),
                Description="dogbreed training instance",
                Tags=tags,
                PermissionsBoundary=boundary,
            )
            log.info("created role %s with boundary %s", name, boundary)
        except ClientError as err:
            if err.response["Error"]["Code"] != "EntityAlreadyExists":
                raise
            self._adopt(name, boundary)
        # Rewritten every launch: the prefix or the region may have changed.
        for policy_name, document in policies.items():
            self.iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
        try:
            profile = self.iam.create_instance_profile(InstanceProfileName=name, Tags=tags)["InstanceProfile"]
            log.info("created instance profile %s", name)
        except ClientError as err:
            if err.response["Error"]["Code"] != "EntityAlreadyExists":
                raise
            profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        if not any(role["RoleName"] == name for role in profile["Roles"]):
            self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        return profile["Arn"]

    def _adopt(self, name: str, boundary: str) -> None:
        role = self.iam.get_role(RoleName=name)["Role"]
        remedy = "set ami.permissions_boundary to match, or choose another ami.name"
        adopt_boundary(self.iam, role, boundary, remedy, AmiError)
        log.info("reusing role %s", name)

    def delete(self, name: str) -> bool:
        """Removes profile, policy and role; False when none of them existed."""
        removed = False
        try:
            roles = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
            for role in roles:
                self.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
            self.iam.delete_instance_profile(InstanceProfileName=name)
            removed = True
        except ClientError as err:
            _ignore_missing(err)
        try:
            for policy in self.iam.get_paginator("list_role_policies").paginate(RoleName=name):
                for policy_name in policy["PolicyNames"]:
                    self.iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
            self.iam.delete_role(RoleName=name)
            removed = True
        except ClientError as err:
            _ignore_missing(err)
        if removed:
            log.info("deleted instance profile and role %s", name)
        return removed


def _ignore_missing(err: ClientError) -> None:
    if err.response["Error"]["Code"] != "NoSuchEntity":
        raise err
