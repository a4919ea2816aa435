"""SageMaker model registry: one model package group per deploy, one package per registered model.

A package records where the model tarball is, the image that serves it, its metrics file
(as ModelQuality statistics), what it was trained from (CustomerMetadataProperties) and its
approval status. `up --model` deploys from it.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from deploy.cloud.errors import DeployError

log = logging.getLogger(__name__)

APPROVED = "Approved"
LATEST_APPROVED = "latest-approved"
# What the endpoint accepts and answers (docs/architecture.md, "Contract: the endpoint").
CONTENT_TYPES = ["image/jpeg", "image/png", "application/x-image", "application/json"]


def ensure_group(sm: Any, group: str, description: str) -> bool:
    """Creates the model package group unless it exists; returns whether it was created."""
    try:
        sm.describe_model_package_group(ModelPackageGroupName=group)
        return False
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
            raise
    sm.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription=description)
    log.info("created model package group %s", group)
    return True


def packages(sm: Any, group: str, approval: str | None = None) -> list[dict[str, Any]]:
    """The group's package summaries, newest first ([] when the group does not exist)."""
    query: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime", "SortOrder": "Descending"}
    if approval:
        query["ModelApprovalStatus"] = approval
    found: list[dict[str, Any]] = []
    try:
        for page in sm.get_paginator("list_model_packages").paginate(**query):
            found += page["ModelPackageSummaryList"]
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
            raise
    return sorted(found, key=lambda p: p["ModelPackageVersion"], reverse=True)


def register(
    sm: Any,
    group: str,
    image: str,
    model_data: str,
    metrics_uri: str,
    metadata: dict[str, str],
    approval: str,
) -> dict[str, Any]:
    """Adds a package version to `group`; returns its description.

    Args:
        sm: SageMaker client.
        group: the model package group (`deploy.name`).
        image: the inference image that serves the model.
        model_data: `s3://…/model.tar.gz`.
        metrics_uri: `s3://…/metrics.json`, attached as model quality statistics.
        metadata: CustomerMetadataProperties (string values).
        approval: `PendingManualApproval` or `Approved`.
    """
    reply = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=f"model {metadata.get('model_version', '?')} from {metadata.get('run', '?')}"[:1024],
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": model_data}],
            "SupportedContentTypes": CONTENT_TYPES,
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}},
        CustomerMetadataProperties=metadata,
        ModelApprovalStatus=approval,
    )
    log.info("registered %s (%s)", reply["ModelPackageArn"], approval)
    return describe(sm, reply["ModelPackageArn"])


def describe(sm: Any, arn: str) -> dict[str, Any]:
    return sm.describe_model_package(ModelPackageName=arn)


def find(sm: Any, group: str, selector: str) -> dict[str, Any]:
    """The package `latest-approved` or version number `selector` names, described.

    Raises:
        DeployError: no such version, or none approved.
    """
    if selector == LATEST_APPROVED:
        approved = packages(sm, group, APPROVED)
        if not approved:
            raise DeployError(
                f"no approved version in model package group {group}; "
                "`python -m deploy models` lists them, `python -m deploy approve VERSION` approves one"
            )
        return describe(sm, approved[0]["ModelPackageArn"])
    for summary in packages(sm, group):
        if str(summary["ModelPackageVersion"]) == selector:
            return describe(sm, summary["ModelPackageArn"])
    raise DeployError(f"model package group {group} has no version {selector}; `python -m deploy models` lists them")


def set_approval(sm: Any, arn: str, status: str) -> None:
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    log.info("%s is now %s", arn, status)


def model_data(package: dict[str, Any]) -> str:
    """The `s3://…/model.tar.gz` a described package serves."""
    return str(package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
