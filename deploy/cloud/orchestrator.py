"""`up`, `down` and `status`: the service wrappers composed in order, every name derived from `deploy.name`."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from omegaconf import DictConfig, OmegaConf

from deploy.cloud import autoscaling, container, hosting, lambda_, needs, operating, policies, state
from deploy.cloud.artifacts import join_key, upload_model
from deploy.cloud.config import model_settings
from deploy.cloud.errors import DeployError
from deploy.cloud.operating import Release
from deploy.precision import ModelSettings
from dogbreed.aws import boundary, container_images, iam, preflight, support
from dogbreed.aws.iam import RoleSpec, boundary_arn, check_boundary
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import MiB, delete_prefix

log = logging.getLogger(__name__)

UNPATCHED_IMAGE_REMEDY = "deploy.image.backend=rayserve serves from the maintained Ray Serve image"
ROLE_REMEDY = "delete it, choose another deploy.name, or set deploy.permissions_boundary to match"

Package = Callable[[str], Path]
# (account, partition, permissions boundary ARN): what every role `up` makes is tied to.
Where = tuple[str, str, str]
DEFAULT_LAMBDA_SOURCE = Path(__file__).resolve().parents[1] / "lambda_function"


@dataclass
class Clients:
    """The boto3 clients a deploy uses, injected so callers choose session, region and endpoint."""

    s3: Any
    sts: Any
    iam: Any
    sagemaker: Any
    autoscaling: Any
    lambda_: Any
    region: str
    cloudwatch: Any
    sns: Any
    quotas: Any

    @classmethod
    def create(cls, region: str | None = None) -> Clients:
        """Clients from boto3's default session (which honours AWS_PROFILE, AWS_ENDPOINT_URL, ...)."""
        session = boto3.Session(region_name=region)
        if session.region_name is None:
            raise DeployError("no AWS region: set deploy.region or AWS_DEFAULT_REGION")
        make = session.client
        return cls(
            make("s3"), make("sts"), make("iam"), make("sagemaker"), make("application-autoscaling"), make("lambda"),
            session.region_name, make("cloudwatch"), make("sns"), make("service-quotas"),
        )  # fmt: skip


@dataclass(frozen=True)
class Names:
    """Every AWS name of one deploy, from `deploy.name`."""

    base: str

    @property
    def endpoint(self) -> str:
        return self.base

    @property
    def sagemaker_role(self) -> str:
        return f"{self.base}-sagemaker"

    @property
    def lambda_role(self) -> str:
        return f"{self.base}-lambda"

    @property
    def function(self) -> str:
        return f"{self.base}-invoke"

    @property
    def scaling_policy(self) -> str:
        return f"{self.base}-invocations"


def up(
    cfg: DictConfig, run: str, clients: Clients, package: Package | None = None, release: Release | None = None
) -> list[str]:
    """Takes a trained run to a scaled endpoint behind a Lambda; returns the changes made ([] when up to date).

    Args:
        cfg: the validated deploy config.
        run: a run dir or `s3://` prefix holding model.pth and labels.json.
        clients: boto3 clients.
        package: builds model.tar.gz from `run`; defaults to `deploy.model_archive.package_run`.
        release: an uploaded model (registered, or what `rollback` returns to); `run` is then not packaged.
    """
    d = cfg.deploy
    names = Names(d.name)
    changes: list[str] = []
    bucket, prefix = _bucket_and_prefix(d.s3_uri)
    deploy_prefix = join_key(prefix, d.name)
    where = _checked_account(clients, d, bucket, prefix)

    if release is None:
        model_data, model_sha256 = uploaded_model(clients, run, package, bucket, deploy_prefix, changes, d)
    else:
        model_data, model_sha256 = operating.check_release(clients.s3, release)

    image = image_for(d, clients.region)
    capture = operating.data_capture(d, bucket, deploy_prefix)
    role_arn = d.role_arn or _sagemaker_role(clients, names, where, (bucket, deploy_prefix), image, changes, capture,
                                             tags(d))  # fmt: skip
    env = container.model_environment(d)
    model = f"{d.name}-{short_hash([image, model_data, role_arn, env])}"
    created = iam.retry_while_role_propagates(
        lambda: hosting.ensure_model(clients.sagemaker, model, image, model_data, role_arn, env, tags(d)),
        _role_not_ready,
    )
    if created:
        changes.append(f"created model {model}")

    variant = _variant(d, model)
    config = f"{d.name}-{short_hash([variant, capture] if capture else variant)}"
    if hosting.ensure_endpoint_config(clients.sagemaker, config, variant, capture, tags(d)):
        changes.append(f"created endpoint config {config}")
    deployment = operating.prepare_update(d, clients, names.endpoint, names.function, changes)
    changes += _endpoint(cfg, clients, names, config, variant, deployment)

    changes += _scaling(clients, d, names)

    url = _front_door(cfg, clients, names, where, changes)
    record = {
        "name": d.name,
        "region": clients.region,
        "run": run,
        "run_dir": str(Path(run).resolve()) if Path(run).is_dir() else None,
        "model_data": model_data,
        "model_sha256": model_sha256,
        "image": image,
        "model": model,
        "endpoint_config": config,
        "endpoint": names.endpoint,
        "sagemaker_role": None if d.role_arn else names.sagemaker_role,
        "execution_role_arn": role_arn,
        "scaling": None
        if d.serverless.enabled
        else {"resource": autoscaling.resource_id(names.endpoint, hosting.VARIANT), "policy": names.scaling_policy},
        "lambda_role": names.lambda_role,
        "function": names.function,
        "alias": lambda_.ALIAS,
        "function_url": url,
        "config": OmegaConf.to_container(d, resolve=True),
    }
    key = state.state_key(prefix, d.name)
    record.update(operating.release_record(state.load(clients.s3, bucket, key), record, release))
    state_dir = Path(run) if Path(run).is_dir() else None
    if state.save(clients.s3, bucket, key, record, state_dir) and changes:
        changes.append(f"recorded state at s3://{bucket}/{key}")
    return changes


def down(cfg: DictConfig, clients: Clients) -> list[str]:
    """Deletes everything `up` made, in reverse order; resources already gone are skipped."""
    d = cfg.deploy
    names = Names(d.name)
    bucket, prefix = _bucket_and_prefix(d.s3_uri)
    key = state.state_key(prefix, d.name)
    record = state.load(clients.s3, bucket, key) or {}
    removed: list[str] = []
    lam = clients.lambda_
    for what, done in (
        ("function URL", lambda_.delete_url(lam, names.function)),
        ("alias live", lambda_.delete_alias(lam, names.function)),
        (f"function {names.function}", lambda_.delete_function(lam, names.function)),
        (f"role {names.lambda_role}", iam.delete_role(clients.iam, names.lambda_role)),
    ):
        if done:
            removed.append(what)
    resource = autoscaling.resource_id(names.endpoint, hosting.VARIANT)
    removed += autoscaling.remove_scaling(clients.autoscaling, resource, names.scaling_policy)
    removed += operating.remove_alarms(clients, names.endpoint, names.function)

    sm = clients.sagemaker
    configs = hosting.named_like(sm, "endpoint_config", d.name)
    endpoint = hosting.describe_endpoint(sm, names.endpoint)
    if endpoint is not None:
        configs.add(endpoint["EndpointConfigName"])
    models = hosting.named_like(sm, "model", d.name)
    for config in configs:
        models |= _models_of(sm, config)
    if hosting.delete_endpoint(sm, names.endpoint):
        removed.append(f"endpoint {names.endpoint}")
    removed += [f"endpoint config {c}" for c in sorted(configs) if hosting.delete_endpoint_config(sm, c)]
    removed += [f"model {m}" for m in sorted(models) if hosting.delete_model(sm, m)]
    # Only a role `up` created; without a record, the config says whether it would have.
    own_role = record["sagemaker_role"] if record else (None if d.role_arn else names.sagemaker_role)
    if own_role and iam.delete_role(clients.iam, own_role):
        removed.append(f"role {own_role}")
    state.forget(clients.s3, bucket, key, record)
    if d.delete_artifacts:
        deploy_prefix = join_key(prefix, d.name)
        if count := delete_prefix(clients.s3, S3Location(bucket, deploy_prefix)):
            removed.append(f"{count} objects under s3://{bucket}/{deploy_prefix}/")
    return removed


def status(cfg: DictConfig, clients: Clients) -> list[tuple[str, str, str]]:
    """(kind, name, state) for every resource of this deploy."""
    d = cfg.deploy
    names = Names(d.name)
    bucket, prefix = _bucket_and_prefix(d.s3_uri)
    record = state.load(clients.s3, bucket, state.state_key(prefix, d.name)) or {}
    sm = clients.sagemaker
    rows = []
    if record.get("model"):
        rows.append(("model", record["model"], hosting.resource_state(sm, "model", record["model"])))
    if record.get("endpoint_config"):
        config = record["endpoint_config"]
        rows.append(("endpoint config", config, hosting.resource_state(sm, "endpoint_config", config)))
    rows.append(("endpoint", names.endpoint, hosting.resource_state(sm, "endpoint", names.endpoint)))
    resource = autoscaling.resource_id(names.endpoint, hosting.VARIANT)
    target = autoscaling.describe_target(clients.autoscaling, resource)
    capacity = f"{target['MinCapacity']}..{target['MaxCapacity']}" if target else "absent"
    rows.append(("scalable target", resource, capacity))
    policy = autoscaling.describe_policy(clients.autoscaling, resource, names.scaling_policy)
    rows.append(("scaling policy", names.scaling_policy, "present" if policy else "absent"))
    rows.append(("function", names.function, lambda_.function_state(clients.lambda_, names.function)))
    rows.append(("function URL", names.function, lambda_.function_url(clients.lambda_, names.function) or "none"))
    for role in (names.lambda_role, record.get("sagemaker_role")):
        if role:
            rows.append(("role", role, "present" if iam.role_exists(clients.iam, role) else "absent"))
    return rows + operating.status_rows(clients, names.endpoint, names.function, record)


def content_version(tarball: Path) -> str:
    """A version id from the tarball's member names and bytes, not its timestamps.

    Repackaging the same run gives the same version, so a second `up` uploads nothing.
    """
    digest = hashlib.sha256()
    with tarfile.open(tarball, "r:*") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            digest.update(member.name.encode() + b"\0")
            if member.isfile():
                data = tar.extractfile(member)
                while chunk := data.read(MiB):  # type: ignore[union-attr]
                    digest.update(chunk)
    return digest.hexdigest()[:12]


def short_hash(value: Any) -> str:
    """Ten hex digits identifying a JSON-able value: names that change exactly when the content does."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def _endpoint(
    cfg: DictConfig,
    clients: Clients,
    names: Names,
    config: str,
    variant: dict[str, Any],
    deployment: dict[str, Any] | None = None,
) -> list[str]:
    """Creates or updates the endpoint (an update as `deployment` says), waits for it, then drops the config
    (and model) it left; an update that was rolled back is a DeployError and leaves the old config in place."""
    d = cfg.deploy
    sm = clients.sagemaker
    current = hosting.describe_endpoint(sm, names.endpoint)
    previous = current["EndpointConfigName"] if current else None
    old_variant = _variant_of(sm, previous) if previous and previous != config else None
    same_type = old_variant is not None and old_variant.get("InstanceType") == variant.get("InstanceType")
    changes = []
    if old_variant is not None and not same_type:
        # UpdateEndpoint fails while a scaling target is on a variant whose instance type changes.
        resource = autoscaling.resource_id(names.endpoint, hosting.VARIANT)
        changes += autoscaling.remove_scaling(clients.autoscaling, resource, names.scaling_policy)
    # Keep the instance count autoscaling chose when only the model changes.
    retain = same_type and "InstanceType" in variant
    action = hosting.deploy_endpoint(sm, names.endpoint, config, retain=retain, deployment=deployment, tags=tags(d))
    if action == "unchanged":
        return changes
    hosting.wait_in_service(sm, names.endpoint, d.wait.timeout_s, d.wait.poll_s)
    operating.check_landed(clients, names.endpoint, names.function, config)
    if action != "settling":
        changes.append(f"{action} endpoint {names.endpoint} with {config}")
    if action == "updated" and previous:
        old_models = _models_of(sm, previous) - {variant["ModelName"]}
        if hosting.delete_endpoint_config(sm, previous):
            changes.append(f"deleted endpoint config {previous}")
        changes += [f"deleted model {m}" for m in sorted(old_models) if hosting.delete_model(sm, m)]
    return changes


def uploaded_model(
    clients: Clients,
    run: str,
    package: Package | None,
    bucket: str,
    deploy_prefix: str,
    changes: list[str],
    d: DictConfig,
) -> tuple[str, str]:
    """Packages `run` (at `deploy.model.precision`) and uploads it to its content-addressed key; returns the
    model's s3:// URI and SHA-256.

    Packaging refuses weights the container could not load; a training torch newer than the
    container's is warned about.
    """
    tarball = (package or functools.partial(_default_package, model=model_settings(d)))(run)
    container.warn_on_torch_gap(tarball, container_images.served_torch(d.image))
    model_key = join_key(deploy_prefix, content_version(tarball), "model.tar.gz")
    # The key is content-addressed: an object there already holds this model.
    model_sha256, uploaded = upload_model(clients.s3, tarball, S3Location(bucket, model_key))
    if uploaded:
        changes.append(f"uploaded s3://{bucket}/{model_key}")
    return f"s3://{bucket}/{model_key}", model_sha256


def _scaling(clients: Clients, d: DictConfig, names: Names) -> list[str]:
    """The variant's scaling target and policy (none for serverless); returns what changed."""
    resource = autoscaling.resource_id(names.endpoint, hosting.VARIANT)
    if d.serverless.enabled:
        return autoscaling.remove_scaling(clients.autoscaling, resource, names.scaling_policy)
    a = d.autoscaling
    policy = autoscaling.policy_config(a.target_invocations, a.scale_in_cooldown, a.scale_out_cooldown)
    if autoscaling.ensure_scaling(
        clients.autoscaling, resource, a.min_capacity, a.max_capacity, names.scaling_policy, policy, tags(d)
    ):
        return [f"scaling {resource}: {a.min_capacity}..{a.max_capacity}, {a.target_invocations}/min"]
    return []


def _front_door(cfg: DictConfig, clients: Clients, names: Names, where: Where, changes: list[str]) -> str | None:
    """The Lambda, its role, alias, concurrency and URL; appends what changed and returns the URL."""
    lam_cfg = cfg.deploy["lambda"]
    account, partition, boundary = where
    policy = policies.lambda_policy(partition, clients.region, account, names.endpoint, names.function)
    description = f"Lambda front door of {names.endpoint}"
    spec = RoleSpec(names.lambda_role, "lambda.amazonaws.com", {names.lambda_role: policy}, description, boundary,
                    ROLE_REMEDY, tuple(hosting.tag_list(tags(cfg.deploy))))  # fmt: skip
    role_arn, role_changed = iam.ensure_role(clients.iam, spec, DeployError)
    if role_changed:
        changes.append(f"role {names.lambda_role} with InvokeEndpoint on {names.endpoint} only")
    source = Path(lam_cfg.source_dir) if lam_cfg.source_dir else DEFAULT_LAMBDA_SOURCE
    settings = {
        "Timeout": container.lambda_timeout(cfg.deploy),
        "MemorySize": lam_cfg.memory_mb,
        "Environment": {"Variables": container.lambda_environment(cfg.deploy, names.endpoint)},
    }
    lam = clients.lambda_
    if lambda_.ensure_function(lam, names.function, role_arn, lambda_.zip_folder(source), settings, tags(cfg.deploy)):
        changes.append(f"function {names.function}")
    if lambda_.ensure_alias(lam, names.function):
        changes.append(f"alias {names.function}:{lambda_.ALIAS} on a new version")
    if lambda_.ensure_reserved_concurrency(lam, names.function, lam_cfg.reserved_concurrency):
        changes.append(f"reserved concurrency {lam_cfg.reserved_concurrency}")
    if lambda_.ensure_provisioned_concurrency(lam, names.function, lam_cfg.provisioned_concurrency):
        changes.append(f"provisioned concurrency {lam_cfg.provisioned_concurrency} on {lambda_.ALIAS}")
    url, url_changed = lambda_.ensure_url(lam, names.function, lam_cfg.url_auth)
    if url_changed:
        changes.append(f"function URL ({lam_cfg.url_auth}): {url}")
    return url


def _sagemaker_role(
    clients: Clients,
    names: Names,
    where: Where,
    location: tuple[str, str],
    image: str,
    changes: list[str],
    capture: dict[str, Any] | None,
    resource_tags: dict[str, str],
) -> str:
    """The endpoint's execution role: read the model under `location` (bucket, key prefix), pull `image`."""
    account, partition, boundary = where
    bucket, deploy_prefix = location
    try:
        repository = container_images.repository_arn(image, partition)
    except ValueError as err:
        raise DeployError(f"{err}; or give an existing role with deploy.role_arn") from err
    policy = policies.sagemaker_execution_policy(
        partition, clients.region, account, bucket, deploy_prefix, repository, names.endpoint, capture is not None
    )
    description = f"Execution role of {names.endpoint}"
    spec = RoleSpec(names.sagemaker_role, "sagemaker.amazonaws.com", {names.sagemaker_role: policy}, description,
                    boundary, ROLE_REMEDY, tuple(hosting.tag_list(resource_tags)))  # fmt: skip
    arn, changed = iam.ensure_role(clients.iam, spec, DeployError)
    if changed:
        changes.append(f"role {names.sagemaker_role} scoped to s3://{bucket}/{deploy_prefix}/")
    return arn


def tags(d: DictConfig) -> dict[str, str]:
    """What every resource `up` creates carries: the project, the deploy's name and `deploy.tags`."""
    return {"project": "dogbreed", "dogbreed:deploy": str(d.name), **{str(k): str(v) for k, v in d.tags.items()}}


def image_for(d: DictConfig, region: str) -> str:
    """The inference image of `deploy.image` for the region, warned about in one line when AWS no longer
    patches it; a region outside the table is a DeployError."""
    try:
        image = container_images.image_uri(region, d.image, d.instance_type, d.serverless.enabled)
    except ValueError as err:
        raise DeployError(str(err)) from err
    support.warn(support.for_image_uri(image), UNPATCHED_IMAGE_REMEDY)
    return image


def _variant(d: DictConfig, model: str) -> dict[str, Any]:
    if d.serverless.enabled:
        s = d.serverless
        return hosting.serverless_variant(model, s.memory_mb, s.max_concurrency, s.provisioned_concurrency)
    realtime = hosting.realtime_variant(model, d.instance_type, d.instance_count)
    return {**realtime, **container.variant_timeouts(d), **container.host_ami(d)}


def _variant_of(sm: Any, config: str) -> dict[str, Any] | None:
    try:
        return sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    except ClientError as err:
        if err.response["Error"]["Code"] == "ValidationException":
            return None
        raise


def _models_of(sm: Any, config: str) -> set[str]:
    variant = _variant_of(sm, config)
    return {variant["ModelName"]} if variant else set()


def _bucket_and_prefix(s3_uri: str) -> tuple[str, str]:
    """`deploy.s3_uri` as its bucket and a key prefix without slashes at its ends ("" for a bare bucket)."""
    root = S3Location.parse(s3_uri)
    return root.bucket, root.key.strip("/")


def _where(clients: Clients, boundary_name: str, prefix: str) -> Where:
    """Account, partition and the boundary ARN, once the boundary policy is known to exist."""
    account, partition = _identity(clients.sts)
    arn = boundary_arn(partition, account, boundary_name)
    check_boundary(clients.iam, arn, "deploy.permissions_boundary", DeployError, prefix)
    return account, partition, arn


def _checked_account(clients: Clients, d: DictConfig, bucket: str, prefix: str) -> Where:
    """Before anything is made: the boundary (no role without it) reaches the deploy's prefix, and the
    quotas and simulated permissions hold (unless `deploy.preflight` is off)."""
    deploy_prefix = join_key(prefix, d.name)
    where = _where(clients, d.permissions_boundary, f"s3://{bucket}/{prefix}".rstrip("/"))
    if d.role_arn is None:
        boundary.check_prefix(clients.iam, where[2], S3Location(bucket, deploy_prefix), "deploy.s3_uri", DeployError)
    if not d.preflight:
        preflight.skipped("deploy.preflight=false")
        return where
    caller = clients.sts.get_caller_identity()["Arn"]
    checks = needs.needs(d), needs.calls(d, where, clients.region, bucket, deploy_prefix)
    preflight.run(clients.quotas, clients.iam, caller, *checks, needs.SKIP)
    return where


def _identity(sts: Any) -> tuple[str, str]:
    arn = sts.get_caller_identity()["Arn"]
    return arn.split(":")[4], arn.split(":")[1]


def _role_not_ready(err: ClientError) -> bool:
    error = err.response["Error"]
    return error["Code"] == "ValidationException" and "assume" in error["Message"]


def _default_package(run: str, model: ModelSettings) -> Path:
    # Imported late: the packaging module pulls in torch, which `down` and `status` never need.
    from deploy.model_archive import package_run

    return package_run(run, model=model)
