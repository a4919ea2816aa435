"""The SageMaker training jobs' role `<name>-sagemaker-training`: what it may do (`dogbreed.aws.iam` makes it).

It may read and write only under the launcher's S3 prefix (code, outputs, checkpoints), read
the data channels, pull the training image and write the training jobs' logs and metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dogbreed.aws import boundary, container_images, iam
from dogbreed.errors import DogbreedError
from dogbreed.sagemaker.settings import LaunchError, LaunchSettings
from dogbreed.storage.location import S3Location

SERVICE = "sagemaker.amazonaws.com"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"


def tag_list(settings: LaunchSettings) -> list[dict[str, str]]:
    """The jobs' and the role's tags: `dogbreed:name=<name>`, `project=dogbreed` and `hydra.launcher.tags`."""
    own = {"dogbreed:name": settings.name, "project": "dogbreed"}
    return [{"Key": k, "Value": str(v)} for k, v in sorted({**settings.tags, **own}.items())]


def role_name(name: str) -> str:
    return f"{name}-sagemaker-training"


def s3_prefix(location: S3Location) -> str:
    return location.key.strip("/")


def object_arn(partition: str, location: S3Location) -> str:
    prefix = s3_prefix(location)
    objects = f"{prefix}/*" if prefix else "*"
    return f"arn:{partition}:s3:::{location.bucket}/{objects}"


def training_policy(
    partition: str, region: str, account: str, base: S3Location, channels: Sequence[S3Location], repository_arn: str
) -> dict[str, Any]:
    """The inline policy: `base` read/write, `channels` read, the image pulled, own logs and metrics."""
    listed: dict[str, list[str]] = {}
    for location in (base, *channels):
        prefix = s3_prefix(location)
        listed.setdefault(location.bucket, []).extend([prefix, f"{prefix}/*"] if prefix else ["*"])
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ProjectPrefix",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": object_arn(partition, base),
        }
    ]
    if channels:
        statements.append(
            {
                "Sid": "ReadData",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": sorted({object_arn(partition, channel) for channel in channels}),
            }
        )
    statements += [
        {
            "Sid": f"List{index}",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:{partition}:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": sorted(set(prefixes))}},
        }
        for index, (bucket, prefixes) in enumerate(sorted(listed.items()))
    ]
    statements += iam.container_statements(repository_arn, iam.log_group_arn(partition, region, account, LOG_GROUP))
    statements += [
        {
            "Sid": "OwnMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        },
    ]
    return {"Version": iam.VERSION, "Statement": statements}


def ensure_training_role(
    iam_client: Any,
    sts: Any,
    name: str,
    boundary_name: str,
    region: str,
    base: S3Location,
    channels: Sequence[S3Location],
    image_uri: str,
    error: type[DogbreedError],
    tags: Sequence[dict[str, str]] = (),
) -> str:
    """Creates or updates `<name>-sagemaker-training`; returns its ARN.

    Raises:
        error: the boundary policy does not exist, the role exists with another boundary or trust,
            or the image is not in ECR (the role could not be scoped to it).
    """
    partition, account = iam.caller(sts)
    try:
        repository = container_images.repository_arn(image_uri, partition)
    except ValueError as err:
        raise error(f"{err}; give hydra.launcher.role_arn for an image outside ECR") from None
    boundary_arn = iam.boundary_arn(partition, account, boundary_name)  # checked by check_boundary_covers
    policy = training_policy(partition, region, account, base, channels, repository)
    remedy = "delete it, choose another hydra.launcher.name, or set hydra.launcher.permissions_boundary to match"
    spec = iam.RoleSpec(role_name(name), SERVICE, {role_name(name): policy}, "dogbreed SageMaker training jobs",
                        boundary_arn, remedy, tuple(tags))  # fmt: skip
    arn, _ = iam.ensure_role(iam_client, spec, error)
    return arn


def check_boundary_covers(iam_client: Any, sts: Any, settings: LaunchSettings, channels: Sequence[S3Location]) -> None:
    """The permissions boundary exists and lets the role reach `hydra.launcher.s3_uri` and every data channel.

    Raises:
        LaunchError: no boundary, or one that would deny the role a location; the message names the setting.
    """
    partition, account = iam.caller(sts)
    arn = iam.boundary_arn(partition, account, settings.permissions_boundary)
    base = settings.location()
    iam.check_boundary(iam_client, arn, "hydra.launcher.permissions_boundary", LaunchError, base.uri.rstrip("/"))
    boundary.check_prefix(iam_client, arn, base, "hydra.launcher.s3_uri", LaunchError)
    for channel in channels:
        boundary.check_prefix(iam_client, arn, channel, "data.root", LaunchError)
