"""`register`, `models`, `approve`, `rollback` and `up --model`: the registry side of a deploy, composed.

Like the orchestrator, this reads the validated `deploy` config; the SageMaker calls are in
`registry.py`. A registered version is the content-addressed model tarball `up` would upload
(same key), its metrics.json beside it, and a model package in the group `<deploy.name>`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from omegaconf import DictConfig

from deploy.cloud import orchestrator, registry, state
from deploy.cloud.artifacts import join_key
from deploy.cloud.errors import DeployError
from deploy.cloud.operating import Release, previous_release
from dogbreed.storage.location import S3Location, is_not_found
from dogbreed.storage.transfer import get_json, put_json

# The run's training config, in the order a run directory or an S3 run has it.
CONFIG_FILES = (".hydra/config.yaml", "config.yaml")


def register(
    cfg: DictConfig, run: str, clients: orchestrator.Clients, package: orchestrator.Package | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Uploads the run's model and metrics and registers them; returns the package and what changed.

    Registering a model already in the group (same content version) returns that package.
    """
    d = cfg.deploy
    metrics = _run_json(clients.s3, run, "metrics.json")
    if metrics is None:
        raise DeployError(f"{run} has no metrics.json: only a finished training run can be registered")
    changes: list[str] = []
    bucket, prefix = _bucket_and_prefix(d.s3_uri)
    model_data, model_sha256 = orchestrator.uploaded_model(
        clients, run, package, bucket, join_key(prefix, d.name), changes, d
    )
    version = model_data.rsplit("/", 2)[-2]  # <prefix>/<name>/<content version>/model.tar.gz
    for summary in registry.packages(clients.sagemaker, d.name):
        if summary.get("ModelPackageDescription", "").startswith(f"model {version} "):
            return registry.describe(clients.sagemaker, summary["ModelPackageArn"]), changes
    metrics_uri = model_data.removesuffix("model.tar.gz") + "metrics.json"
    put_json(clients.s3, S3Location.parse(metrics_uri), metrics)
    changes.append(f"uploaded {metrics_uri}")
    if registry.ensure_group(clients.sagemaker, d.name, f"dogbreed models deployed as {d.name}"):
        changes.append(f"created model package group {d.name}")
    metadata = _metadata(run, version, model_sha256, metrics, _config_sha256(clients.s3, run))
    image = orchestrator.image_for(d, clients.region)
    package_ = registry.register(
        clients.sagemaker, d.name, image, model_data, metrics_uri, metadata, d.registry.approval
    )
    changes.append(f"registered version {package_['ModelPackageVersion']} ({d.registry.approval})")
    return package_, changes


def models(cfg: DictConfig, clients: orchestrator.Clients) -> list[dict[str, str]]:
    """Every registered version, newest first: version, status, metrics, run, and whether it is live."""
    d = cfg.deploy
    bucket, prefix = _bucket_and_prefix(d.s3_uri)
    live = (state.load(clients.s3, bucket, state.state_key(prefix, d.name)) or {}).get("model_data")
    rows = []
    for summary in registry.packages(clients.sagemaker, d.name):
        described = registry.describe(clients.sagemaker, summary["ModelPackageArn"])
        meta = described.get("CustomerMetadataProperties", {})
        rows.append({
            "version": str(summary["ModelPackageVersion"]),
            "status": summary["ModelApprovalStatus"],
            "valid_top1": meta.get("valid_top1", "?"),
            "test_top1": meta.get("test_top1", "?"),
            "test_top5": meta.get("test_top5", "?"),
            "run": meta.get("run", "?"),
            "live": "live" if registry.model_data(described) == live else "",
        })  # fmt: skip
    return rows


def approve(cfg: DictConfig, version: str, clients: orchestrator.Clients, status: str = registry.APPROVED) -> str:
    """Sets a version's approval status; returns its ARN."""
    found = registry.find(clients.sagemaker, cfg.deploy.name, version)
    registry.set_approval(clients.sagemaker, found["ModelPackageArn"], status)
    return str(found["ModelPackageArn"])


def resolve(cfg: DictConfig, selector: str, clients: orchestrator.Clients) -> Release | None:
    """`latest-approved` or a version number as the Release to deploy; None for a run (packaged as before).

    Raises:
        DeployError: no such version, or the version is not approved.
    """
    if selector != registry.LATEST_APPROVED and not selector.isdigit():
        return None
    found = registry.find(clients.sagemaker, cfg.deploy.name, selector)
    if found["ModelApprovalStatus"] != registry.APPROVED:
        raise DeployError(
            f"version {selector} is {found['ModelApprovalStatus']}; "
            f"approve it first: python -m deploy approve {selector}"
        )
    meta = found.get("CustomerMetadataProperties", {})
    return Release(
        run=meta.get("run", found["ModelPackageArn"]),
        model_data=registry.model_data(found),
        model_sha256=meta.get("model_sha256"),
        model_version=int(found["ModelPackageVersion"]),
        model_package=str(found["ModelPackageArn"]),
    )


def rollback(cfg: DictConfig, clients: orchestrator.Clients) -> tuple[Release, list[str]]:
    """Deploys the model that was live before the current one (the same way `up` would); returns it and the changes."""
    d = cfg.deploy
    bucket, prefix = _bucket_and_prefix(d.s3_uri)
    release = previous_release(state.load(clients.s3, bucket, state.state_key(prefix, d.name)))
    return release, orchestrator.up(cfg, release.run, clients, release=release)


def _metadata(
    run: str, version: str, model_sha256: str, metrics: dict[str, Any], config_sha256: str | None
) -> dict[str, str]:
    """CustomerMetadataProperties: strings of at most 256 characters."""
    meta = {"run": run, "model_version": version, "model_sha256": model_sha256}
    for split in ("valid", "test"):
        for key in ("top1", "top5"):
            value = metrics.get(split, {}).get(key)
            if value is not None:
                meta[f"{split}_{key}"] = f"{value:.4f}"
    if "best_epoch" in metrics:
        meta["best_epoch"] = str(metrics["best_epoch"])
    meta["config_sha256"] = config_sha256 or "unknown"
    meta |= {f"version_{name}": str(value) for name, value in (metrics.get("versions") or {}).items()}
    return {key: value[:256] for key, value in meta.items()}


def _run_json(s3: Any, run: str, name: str) -> dict[str, Any] | None:
    if run.startswith("s3://"):
        return get_json(s3, S3Location.parse(f"{run.rstrip('/')}/{name}"))
    path = Path(run) / name
    return json.loads(path.read_text()) if path.is_file() else None


def _config_sha256(s3: Any, run: str) -> str | None:
    """SHA-256 of the run's training config file, the first of CONFIG_FILES it has."""
    for name in CONFIG_FILES:
        if run.startswith("s3://"):
            location = S3Location.parse(f"{run.rstrip('/')}/{name}")
            try:
                data = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
            except ClientError as err:
                if is_not_found(err):
                    continue
                raise
        elif (Path(run) / name).is_file():
            data = (Path(run) / name).read_bytes()
        else:
            continue
        return hashlib.sha256(data).hexdigest()
    return None


def _bucket_and_prefix(s3_uri: str) -> tuple[str, str]:
    root = S3Location.parse(s3_uri)
    return root.bucket, root.key.strip("/")
