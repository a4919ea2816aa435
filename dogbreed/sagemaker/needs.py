"""What a SageMaker launch needs of the account, for the shared preflight (dogbreed.aws.preflight): quotas and calls."""

from __future__ import annotations

from dogbreed.aws import iam
from dogbreed.aws.quotas import Need
from dogbreed.aws.simulation import Call
from dogbreed.sagemaker.role import role_name
from dogbreed.sagemaker.settings import LaunchSettings

SKIP = "set hydra.launcher.preflight=false"


def needs(settings: LaunchSettings, jobs: int) -> list[Need]:
    """Training quotas: the type's instances for the jobs running at once, the account's total, the per-job cap."""
    at_once = min(jobs, settings.max_parallel) * settings.instance_count
    kind = "spot training job" if settings.spot else "training job"
    setting = (
        f"hydra.launcher.instance_type={settings.instance_type} with instance_count={settings.instance_count} "
        f"and {min(jobs, settings.max_parallel)} job(s) at once"
    )
    total = (
        "Number of instances across all spot training jobs"
        if settings.spot
        else "Number of instances across all training jobs"
    )
    return [
        Need("sagemaker", f"{settings.instance_type} for {kind} usage", at_once, setting),
        Need("sagemaker", total, at_once, setting),
        Need(
            "sagemaker",
            f"Maximum number of instances per {kind}",
            settings.instance_count,
            "hydra.launcher.instance_count",
        ),
    ]


def calls(settings: LaunchSettings, partition: str, account: str, region: str) -> list[Call]:
    """The bundle upload, the role (made or given) passed to SageMaker, and the job itself."""
    base = settings.location()
    role = settings.role_arn or f"arn:{partition}:iam::{account}:role/{role_name(settings.name)}"
    made = [
        Call("s3:PutObject", f"arn:{partition}:s3:::{base.child('code/train.tar.gz').uri.removeprefix('s3://')}"),
        Call(
            "sagemaker:CreateTrainingJob",
            f"arn:{partition}:sagemaker:{region}:{account}:training-job/{settings.name}-0",
        ),
        Call("iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"}),
    ]
    if settings.role_arn is None:
        boundary = iam.boundary_arn(partition, account, settings.permissions_boundary)
        made.append(Call("iam:CreateRole", role, {"iam:PermissionsBoundary": boundary}))
    return made
