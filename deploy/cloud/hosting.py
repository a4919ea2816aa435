"""SageMaker hosting: model, endpoint config (real-time or serverless), endpoint create/update/wait/delete."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from botocore.exceptions import ClientError
from tqdm import tqdm

from deploy.cloud.errors import DeployError

log = logging.getLogger(__name__)

VARIANT = "AllTraffic"
TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def realtime_variant(model: str, instance_type: str, instance_count: int) -> dict[str, Any]:
    """A production variant on dedicated instances (the autoscaling target)."""
    return {
        "VariantName": VARIANT,
        "ModelName": model,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        "InitialVariantWeight": 1.0,
    }


def serverless_variant(model: str, memory_mb: int, max_concurrency: int, provisioned: int) -> dict[str, Any]:
    """A serverless production variant: billed per request, scales to zero unless provisioned."""
    config = {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency}
    if provisioned:
        config["ProvisionedConcurrency"] = provisioned
    return {"VariantName": VARIANT, "ModelName": model, "ServerlessConfig": config}


def tag_list(tags: dict[str, str] | None) -> list[dict[str, str]]:
    """`{key: value}` as SageMaker's (and IAM's) `Tags` list."""
    return [{"Key": key, "Value": value} for key, value in sorted((tags or {}).items())]


def _tagged(tags: dict[str, str] | None) -> dict[str, Any]:
    return {"Tags": tag_list(tags)} if tags else {}


def ensure_model(
    sm: Any,
    name: str,
    image: str,
    model_data: str,
    role_arn: str,
    env: dict[str, str],
    tags: dict[str, str] | None = None,
) -> bool:
    """Creates the model unless it exists; names carry a hash of these inputs, so existing means equal."""
    if _exists(sm.describe_model, ModelName=name):
        return False
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": image, "ModelDataUrl": model_data, "Environment": env},
        ExecutionRoleArn=role_arn,
        **_tagged(tags),
    )
    log.info("created model %s (%s)", name, image)
    return True


def ensure_endpoint_config(
    sm: Any,
    name: str,
    variant: dict[str, Any],
    data_capture: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> bool:
    """Creates the endpoint config unless it exists (its name carries a hash of the variant and capture)."""
    if _exists(sm.describe_endpoint_config, EndpointConfigName=name):
        return False
    extra = {"DataCaptureConfig": data_capture} if data_capture else {}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], **_tagged(tags), **extra)
    log.info("created endpoint config %s", name)
    return True


def describe_endpoint(sm: Any, name: str) -> dict[str, Any] | None:
    """The endpoint's description, or None when there is none."""
    try:
        return sm.describe_endpoint(EndpointName=name)
    except ClientError as err:
        if _not_found(err):
            return None
        raise


def deploy_endpoint(
    sm: Any,
    name: str,
    config: str,
    retain: bool,
    deployment: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Creates the endpoint, or points an existing one at `config` in place (no downtime).

    Args:
        sm: SageMaker client.
        name: endpoint name.
        config: endpoint config name.
        retain: keep the instance count autoscaling chose (same instance type).
        deployment: an update's DeploymentConfig (deploy/cloud/rollout.py); None: all at once.

    Returns:
        `created`, `recreated` (a Failed endpoint cannot be updated), `updated`, `settling` (already on
        `config` but not yet InService, e.g. after an interrupted `up`) or `unchanged`.
    """
    current = describe_endpoint(sm, name)
    if current is not None and current["EndpointStatus"] == "Failed":
        log.warning("endpoint %s is Failed (%s); recreating it", name, current.get("FailureReason"))
        delete_endpoint(sm, name)
    if current is None or current["EndpointStatus"] == "Failed":
        sm.create_endpoint(EndpointName=name, EndpointConfigName=config, **_tagged(tags))
        log.info("creating endpoint %s with %s", name, config)
        return "created" if current is None else "recreated"
    if current["EndpointConfigName"] == config:
        return "unchanged" if current["EndpointStatus"] == "InService" else "settling"
    if current["EndpointStatus"] in TRANSITIONAL:
        raise DeployError(f"endpoint {name} is {current['EndpointStatus']}; run `up` again once it settles")
    extra = {"DeploymentConfig": deployment} if deployment else {}
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config, RetainAllVariantProperties=retain, **extra)
    log.info("updating endpoint %s from %s to %s", name, current["EndpointConfigName"], config)
    return "updated"


def wait_in_service(sm: Any, name: str, timeout_s: float, poll_s: float) -> None:
    """Waits for InService, showing the status as it goes.

    The `endpoint_in_service` waiter says nothing until it ends; a deploy takes minutes,
    so this polls the same DescribeEndpoint call and shows each status.

    Raises:
        DeployError: the endpoint failed (with its FailureReason and log group) or the wait timed out.
    """
    deadline = time.monotonic() + timeout_s
    with tqdm(bar_format="{desc} [{elapsed}]") as bar:
        while True:
            endpoint = sm.describe_endpoint(EndpointName=name)
            status = endpoint["EndpointStatus"]
            bar.set_description_str(f"endpoint {name}: {status}")
            if status == "InService":
                return
            if status == "Failed" or status not in TRANSITIONAL:
                reason = endpoint.get("FailureReason", "no reason given")
                raise DeployError(
                    f"endpoint {name} is {status}: {reason}. Container logs: CloudWatch log group "
                    f"/aws/sagemaker/Endpoints/{name}"
                )
            if time.monotonic() > deadline:
                raise DeployError(
                    f"endpoint {name} still {status} after {timeout_s:.0f} s (deploy.wait.timeout_s); "
                    f"see CloudWatch log group /aws/sagemaker/Endpoints/{name}"
                )
            time.sleep(poll_s)
            bar.update()


def delete_endpoint(sm: Any, name: str) -> bool:
    """Deletes the endpoint and waits until it is gone; False when there was none."""
    if not _deleted(sm.delete_endpoint, EndpointName=name):
        return False
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name)
    return True


def delete_endpoint_config(sm: Any, name: str) -> bool:
    """Deletes an endpoint config; False when there was none."""
    return _deleted(sm.delete_endpoint_config, EndpointConfigName=name)


def delete_model(sm: Any, name: str) -> bool:
    """Deletes a model; False when there was none."""
    return _deleted(sm.delete_model, ModelName=name)


def named_like(sm: Any, kind: str, base: str) -> set[str]:
    """Models or endpoint configs named `<base>-<10 hex digits>`: what `up` makes, including any an
    interrupted `up` left behind. The exact pattern keeps `dogbreed-dev-...` out of `dogbreed`'s set.
    """
    pattern = re.compile(rf"^{re.escape(base)}-[0-9a-f]{{10}}$")
    operation, key, field = {
        "model": ("list_models", "Models", "ModelName"),
        "endpoint_config": ("list_endpoint_configs", "EndpointConfigs", "EndpointConfigName"),
    }[kind]
    found = set()
    for page in sm.get_paginator(operation).paginate(NameContains=base):
        found |= {item[field] for item in page[key] if pattern.match(item[field])}
    return found


def resource_state(sm: Any, kind: str, name: str) -> str:
    """`absent`, `present`, or the endpoint's status, for `status`."""
    if kind == "endpoint":
        endpoint = describe_endpoint(sm, name)
        return "absent" if endpoint is None else endpoint["EndpointStatus"]
    describe = {"model": sm.describe_model, "endpoint_config": sm.describe_endpoint_config}[kind]
    key = {"model": "ModelName", "endpoint_config": "EndpointConfigName"}[kind]
    return "present" if _exists(describe, **{key: name}) else "absent"


def _exists(describe: Any, **name: str) -> bool:
    try:
        describe(**name)
    except ClientError as err:
        if _not_found(err):
            return False
        raise
    return True


def _deleted(delete: Any, **name: str) -> bool:
    try:
        delete(**name)
    except ClientError as err:
        if _not_found(err):
            return False
        raise
    log.info("deleted %s", next(iter(name.values())))
    return True


def _not_found(err: ClientError) -> bool:
    # SageMaker reports a missing resource as a ValidationException whose message says so.
    error = err.response["Error"]
    return error["Code"] in ("ValidationException", "ResourceNotFound") and (
        "Could not find" in error["Message"] or "does not exist" in error["Message"]
    )
