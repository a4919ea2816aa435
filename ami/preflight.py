"""Everything launch can check in AWS before it creates anything: who, where, the bucket, the image, the type.

A launch that would fail half-way (a missing bucket, an image parameter or instance type the
region does not have) fails here, while there is still nothing to clean up.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from ami.errors import AmiError
from ami.ssm import latest_ami_id
from dogbreed.aws import preflight, quotas, support
from dogbreed.aws.quotas import Need
from dogbreed.aws.simulation import Call
from dogbreed.storage.location import S3Location, error_code
from dogbreed.storage.probe import check_writable

log = logging.getLogger(__name__)

SKIP = "rerun with --skip-preflight (or ami.preflight=false)"
UNPATCHED_LINE_REMEDY = "set ami.ami_ssm_parameter to a line that AWS still patches (the default does)"


def account_id(sts: Any) -> str:
    """The caller's account; the first call, so missing or expired credentials stop the launch here."""
    try:
        return sts.get_caller_identity()["Account"]
    except ClientError as err:
        code = error_code(err)
        raise AmiError(f"AWS refused the credentials ({code}); log in again (aws sso login, aws configure)") from None


def check_instance_type(ec2: Any, instance_type: str) -> None:
    """The type is sold in the client's region (a typo or a region without it fails before any resource)."""
    offered = ec2.describe_instance_type_offerings(
        LocationType="region", Filters=[{"Name": "instance-type", "Values": [instance_type]}]
    )["InstanceTypeOfferings"]
    if not offered:
        region = ec2.meta.region_name
        raise AmiError(
            f"instance type {instance_type!r} is not offered in {region}; fix ami.instance_type "
            "(python -m ami choose lists the types) or ami.region"
        )


def run_checks(clients: Any, ami: Any, project: S3Location) -> tuple[str, str]:
    """Credentials, image, instance type and bucket in turn; returns (account id, image id)."""
    account = account_id(clients.sts)
    image_id = latest_ami_id(clients.ssm, ami.ami_ssm_parameter)
    support.warn(support.for_dlami(str(ami.ami_ssm_parameter)), UNPATCHED_LINE_REMEDY)
    check_instance_type(clients.ec2, ami.instance_type)
    check_writable(clients.s3, project, "ami.s3_uri; nothing was created")
    return account, image_id


def check_account(clients: Any, ami: Any, account: str, boundary_arn: str) -> None:
    """The shared preflight for this launch: the vCPU quota and the create calls, unless `ami.preflight` is off."""
    if not ami.preflight:
        preflight.skipped("ami.preflight=false")
        return
    caller = clients.sts.get_caller_identity()["Arn"]
    calls = launch_calls(ami, clients.partition, clients.ec2.meta.region_name, account, boundary_arn)
    preflight.run(clients.quotas, clients.iam, caller, [vcpu_need(clients.ec2, ami)], calls, SKIP)


def vcpu_need(ec2: Any, ami: Any) -> Need:
    """The EC2 vCPU quota of the type's family (on-demand or spot) against its vCPUs times the nodes."""
    described = ec2.describe_instance_types(InstanceTypes=[ami.instance_type])["InstanceTypes"][0]
    vcpus = int(described["VCpuInfo"]["DefaultVCpus"])
    setting = f"ami.instance_type={ami.instance_type} ({vcpus} vCPUs) with ami.nodes={ami.nodes}"
    return Need("ec2", quotas.ec2_vcpu_quota(ami.instance_type, bool(ami.spot)), vcpus * int(ami.nodes), setting)


def launch_calls(ami: Any, partition: str, region: str, account: str, boundary_arn: str) -> list[Call]:
    """The create calls of a launch on the resources it names, with the tag and service the policies test."""
    ec2 = f"arn:{partition}:ec2:{region}:{account}"
    role = f"arn:{partition}:iam::{account}:role/{ami.name}"
    tagged = {"aws:RequestTag/project": "dogbreed"}
    return [
        Call("ec2:RunInstances", f"{ec2}:instance/*", tagged),
        Call("ec2:CreateSecurityGroup", f"{ec2}:security-group/*", tagged),
        Call("ec2:CreateKeyPair", f"{ec2}:key-pair/{ami.key_name or ami.name + '-key'}", tagged),
        Call("iam:CreateRole", role, {"iam:PermissionsBoundary": boundary_arn}),
        Call("iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"}),
    ]
