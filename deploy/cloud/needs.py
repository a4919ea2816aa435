"""What `deploy up` needs of the account, for the shared preflight (dogbreed.aws.preflight): quotas and calls."""

from __future__ import annotations

from typing import Any

from dogbreed.aws.quotas import Need
from dogbreed.aws.simulation import Call

SERVERLESS_CONCURRENCY = "Maximum total concurrency that can be allocated across all serverless endpoints"
SKIP = "rerun with --skip-preflight (or deploy.preflight=false)"


def needs(d: Any) -> list[Need]:
    """The SageMaker hosting quotas the endpoint takes: per type up to the scaling maximum, or serverless."""
    if d.serverless.enabled:
        return [
            Need(
                "sagemaker", SERVERLESS_CONCURRENCY, d.serverless.max_concurrency, "deploy.serverless.max_concurrency"
            ),
            Need("sagemaker", "Maximum number of serverless endpoints", 1, "deploy.serverless.enabled=true"),
        ]
    most = max(int(d.instance_count), int(d.autoscaling.max_capacity))
    setting = (
        f"deploy.instance_type={d.instance_type} with deploy.autoscaling.max_capacity={d.autoscaling.max_capacity}"
    )
    return [
        Need("sagemaker", f"{d.instance_type} for endpoint usage", most, setting),
        Need("sagemaker", "Maximum number of instances per endpoint", most, "deploy.autoscaling.max_capacity"),
        Need("sagemaker", "Number of instances across active endpoints", most, "deploy.autoscaling.max_capacity"),
    ]


def calls(d: Any, where: tuple[str, str, str], region: str, bucket: str, deploy_prefix: str) -> list[Call]:
    """The create calls `up` makes, on the resources it names (`where`: account, partition, boundary ARN)."""
    account, partition, boundary_arn = where
    sagemaker = f"arn:{partition}:sagemaker:{region}:{account}"
    made = [
        Call("s3:PutObject", f"arn:{partition}:s3:::{bucket}/{deploy_prefix}/model.tar.gz"),
        Call("sagemaker:CreateModel", f"{sagemaker}:model/{d.name}-0"),
        Call("sagemaker:CreateEndpointConfig", f"{sagemaker}:endpoint-config/{d.name}-0"),
        Call("sagemaker:CreateEndpoint", f"{sagemaker}:endpoint/{d.name}"),
        Call("lambda:CreateFunction", f"arn:{partition}:lambda:{region}:{account}:function:{d.name}-invoke"),
    ]
    execution = d.role_arn or f"arn:{partition}:iam::{account}:role/{d.name}-sagemaker"
    front_door = f"arn:{partition}:iam::{account}:role/{d.name}-lambda"
    for role, service in ((execution, "sagemaker"), (front_door, "lambda")):
        if role != d.role_arn:  # a role of the user's own is passed, never made
            made.append(Call("iam:CreateRole", role, {"iam:PermissionsBoundary": boundary_arn}))
        made.append(Call("iam:PassRole", role, {"iam:PassedToService": f"{service}.amazonaws.com"}))
    if not d.serverless.enabled:
        made.append(Call("application-autoscaling:RegisterScalableTarget", "*"))
    return made
