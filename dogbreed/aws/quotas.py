"""The Service Quotas a flow needs, read before anything is created: a shortfall is one line with the increase command.

New accounts have 0 instances of most SageMaker types and few EC2 vCPUs; AWS says so only when a
create call is refused, after roles, bundles or security groups exist. `check` reads each quota the
config needs (the applied value, else AWS's default) and refuses a shortfall naming the quota, its
code, both values and the `aws service-quotas request-service-quota-increase` command.

Codes come from `quotas.json` (dated, sourced) as a shortcut; the name AWS returns for a code is
checked, and a name the table lacks or gets wrong is looked up in the region's default quotas.
SageMaker lists a per-type quota only where it offers the type, so a type with no quota in the
region is refused as not offered there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dogbreed.errors import DogbreedError

TABLE = json.loads(Path(__file__).with_name("quotas.json").read_text())
# EC2 vCPU quotas by family: multi-letter families first, so trn1 is not Standard by its "t".
EC2_FAMILIES = (("inf", "Inf"), ("dl", "DL"), ("vt", "G and VT"), ("g", "G and VT"), ("p", "P"))
EC2_STANDARD = "Standard (A, C, D, H, I, M, R, T, Z)"
READ_ACTIONS = "servicequotas:GetServiceQuota, GetAWSDefaultServiceQuota and ListAWSDefaultServiceQuotas"


class QuotaError(DogbreedError):
    """The account's quotas cannot hold what the config asks for, or cannot be read."""


@dataclass(frozen=True)
class Need:
    """One quota and what the config asks of it."""

    service: str  # the Service Quotas service code: sagemaker or ec2
    name: str  # the quota's exact name; "for training job usage" is a suffix of "for spot training job usage"
    value: float
    setting: str  # the config key that decides the value, named in the refusal


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    value: float


def ec2_vcpu_quota(instance_type: str, spot: bool) -> str:
    """The name of the EC2 vCPU quota that `instance_type` counts against."""
    family = instance_type.split(".", 1)[0]
    group = next((label for prefix, label in EC2_FAMILIES if family.startswith(prefix)), EC2_STANDARD)
    return f"All {group} Spot Instance Requests" if spot else f"Running On-Demand {group} instances"


def check(client: Any, needs: Sequence[Need], skip: str) -> None:
    """Refuses, before anything is created, when a quota is below what `needs` ask; `skip` names the opt-out.

    Raises:
        QuotaError: one line per shortfall (or per type the region does not offer), or one line
            saying the caller may not read quotas and how to skip the check.
    """
    region = client.meta.region_name
    lines = []
    for need in needs:
        quota = read(client, need.service, need.name, skip)
        if quota is None:
            lines.append(f"{need.setting}: Service Quotas in {region} has no quota {need.name!r}: the type is not "
                         f"offered there; choose another type or region")  # fmt: skip
        elif quota.value < need.value:
            wanted = math.ceil(need.value)
            lines.append(
                f"quota {quota.code} {quota.name!r} is {quota.value:g} in {region}, {need.setting} needs {wanted:g}; "
                f"ask for more: aws service-quotas request-service-quota-increase --service-code {need.service} "
                f"--quota-code {quota.code} --desired-value {wanted} --region {region}"
            )
    if lines:
        raise QuotaError("\n".join(lines))


def read(client: Any, service: str, name: str, skip: str) -> Quota | None:
    """The quota called `name`: its applied value, else AWS's default; None when the region has no such quota."""
    try:
        code = TABLE["codes"].get(service, {}).get(name)
        quota = _by_code(client, service, code) if code else None
        if quota is None or quota.name != name:
            code = find_code(client, service, name)
            quota = _by_code(client, service, code) if code else None
    except ClientError as err:
        if err.response["Error"]["Code"] == "AccessDeniedException":
            raise QuotaError(f"the caller may not read Service Quotas ({READ_ACTIONS}); allow them or {skip}") from None
        raise
    return quota


def find_code(client: Any, service: str, name: str) -> str | None:
    """The code of the quota called exactly `name` among the region's default quotas."""
    for page in client.get_paginator("list_aws_default_service_quotas").paginate(ServiceCode=service):
        for quota in page["Quotas"]:
            if quota["QuotaName"] == name:
                return str(quota["QuotaCode"])
    return None


def _by_code(client: Any, service: str, code: str) -> Quota | None:
    """The applied value of `code`; AWS's default when none was applied; None when neither exists."""
    for read_one in (client.get_service_quota, client.get_aws_default_service_quota):
        try:
            quota = read_one(ServiceCode=service, QuotaCode=code)["Quota"]
        except ClientError as err:
            if err.response["Error"]["Code"] != "NoSuchResourceException":
                raise
            continue
        if "Value" in quota and not quota.get("ErrorReason"):
            return Quota(code, quota["QuotaName"], float(quota["Value"]))
    return None
