"""Application Auto Scaling for a real-time variant: scalable target and target-tracking policy.

The service stores min > max or a zero target without complaint, so callers validate
first (`deploy.cloud.config.autoscaling`).
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


def resource_id(endpoint: str, variant: str) -> str:
    """The scalable resource of one endpoint variant."""
    return f"endpoint/{endpoint}/variant/{variant}"


def policy_config(target: float, scale_in_cooldown: int, scale_out_cooldown: int) -> dict[str, Any]:
    """Target tracking on invocations per instance per minute."""
    return {
        "TargetValue": float(target),
        "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
        "ScaleInCooldown": scale_in_cooldown,
        "ScaleOutCooldown": scale_out_cooldown,
    }


def ensure_scaling(
    aas: Any,
    resource: str,
    min_capacity: int,
    max_capacity: int,
    policy_name: str,
    config: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> bool:
    """Registers the target and puts the policy where they differ from what is asked; returns whether it did."""
    changed = False
    target = describe_target(aas, resource)
    if target is None or (target["MinCapacity"], target["MaxCapacity"]) != (min_capacity, max_capacity):
        aas.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=resource,
            ScalableDimension=DIMENSION,
            MinCapacity=min_capacity,
            MaxCapacity=max_capacity,
            **({"Tags": tags} if tags else {}),
        )
        log.info("registered %s as a scalable target (%s..%s)", resource, min_capacity, max_capacity)
        changed = True
    policy = describe_policy(aas, resource, policy_name)
    if policy is None or not _same_policy(policy["TargetTrackingScalingPolicyConfiguration"], config):
        aas.put_scaling_policy(
            PolicyName=policy_name,
            ServiceNamespace=NAMESPACE,
            ResourceId=resource,
            ScalableDimension=DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=config,
        )
        log.info("put scaling policy %s on %s", policy_name, resource)
        changed = True
    return changed


def describe_target(aas: Any, resource: str) -> dict[str, Any] | None:
    """The scalable target of `resource`, or None."""
    targets = aas.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[resource], ScalableDimension=DIMENSION
    )["ScalableTargets"]
    return targets[0] if targets else None


def describe_policy(aas: Any, resource: str, policy_name: str) -> dict[str, Any] | None:
    """The named scaling policy on `resource`, or None."""
    policies = aas.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=resource, ScalableDimension=DIMENSION, PolicyNames=[policy_name]
    )["ScalingPolicies"]
    return policies[0] if policies else None


def remove_scaling(aas: Any, resource: str, policy_name: str) -> list[str]:
    """Deletes the policy, then deregisters the target; returns what it removed (already gone is fine)."""
    removed = []
    try:
        aas.delete_scaling_policy(
            PolicyName=policy_name, ServiceNamespace=NAMESPACE, ResourceId=resource, ScalableDimension=DIMENSION
        )
        removed.append(f"scaling policy {policy_name}")
    except ClientError as err:
        if not _not_found(err):
            raise
    try:
        aas.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=resource, ScalableDimension=DIMENSION)
        removed.append(f"scalable target {resource}")
    except ClientError as err:
        if not _not_found(err):
            raise
    for item in removed:
        log.info("removed %s", item)
    return removed


def _same_policy(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(current.get(key) == value for key, value in wanted.items())


def _not_found(err: ClientError) -> bool:
    # AWS answers ObjectNotFoundException; some implementations a ValidationException saying "No ... found".
    error = err.response["Error"]
    return error["Code"] == "ObjectNotFoundException" or (
        error["Code"] == "ValidationException" and "found" in error["Message"]
    )
