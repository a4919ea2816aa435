"""The deploy config: conf/deploy.yaml composed with Hydra, validated before any AWS call."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deploy.cloud.errors import DeployError
from deploy.precision import INT8, PRECISIONS, ModelSettings
from dogbreed.aws import container_images
from dogbreed.aws.iam import POLICY_NAME_PATTERN
from dogbreed.cli import compose_config
from dogbreed.storage.location import S3AddressError, S3Location

# Lambda and IAM allow 64 characters; the longest derived name adds 10 ("-sagemaker").
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-?[a-zA-Z0-9]){0,39}$")
URL_AUTH = ("AWS_IAM", "NONE", None)
APPROVALS = ("PendingManualApproval", "Approved")
ROLLOUT_MODES = ("canary", "all_at_once")
BACKENDS = ("rayserve", "torchserve")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """Composes `conf/deploy.yaml` with `key=value` overrides and validates it.

    Raises:
        DeployError: a value is missing or out of range; nothing has been called on AWS yet.
    """
    cfg = compose_config("deploy", overrides or [], "deploy.instance_type=ml.c5.xlarge")
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks what AWS would accept late or not at all, naming the key to fix.

    Raises:
        DeployError: the first problem found.
    """
    d = cfg.deploy
    if not NAME_PATTERN.match(str(d.name)):
        raise DeployError(f"deploy.name={d.name!r}: use 1-40 letters, digits and single hyphens")
    if OmegaConf.is_missing(d, "s3_uri") or not str(d.s3_uri).startswith("s3://") or len(str(d.s3_uri)) < 6:
        raise DeployError("deploy.s3_uri must be set to an s3://bucket/prefix for the model and the state file")
    try:
        S3Location.parse(str(d.s3_uri))
    except S3AddressError as err:
        raise DeployError(f"deploy.s3_uri: {err}") from None
    if not POLICY_NAME_PATTERN.match(str(d.permissions_boundary or "")):
        raise DeployError(
            f"deploy.permissions_boundary={d.permissions_boundary!r}: the name of the boundary policy "
            "(default dogbreed-boundary), letters, digits and +=,.@_-"
        )
    if d.instance_count < 1:
        raise DeployError(f"deploy.instance_count={d.instance_count}: needs at least 1")
    if d.serverless.enabled:
        _serverless(d.serverless)
    else:
        autoscaling(d.autoscaling)
    _lambda(d["lambda"])
    _container(d.container)
    _image(d.image)
    _precision(d)
    operating(d)


def autoscaling(a: Any) -> None:
    """Application Auto Scaling stores min > max or a zero target without complaint; refuse them here."""
    if a.min_capacity < 1:
        raise DeployError(f"deploy.autoscaling.min_capacity={a.min_capacity}: a real-time endpoint needs 1")
    if a.min_capacity > a.max_capacity:
        raise DeployError(f"deploy.autoscaling.min_capacity={a.min_capacity} is above max_capacity={a.max_capacity}")
    if a.target_invocations <= 0:
        raise DeployError(f"deploy.autoscaling.target_invocations={a.target_invocations}: must be above 0")
    for key in ("scale_in_cooldown", "scale_out_cooldown"):
        if a[key] < 0:
            raise DeployError(f"deploy.autoscaling.{key}={a[key]}: seconds, 0 or more")


def _serverless(s: Any) -> None:
    # SageMaker serverless memory: 1024-6144 MB in 1 GB steps; concurrency 1-200.
    if s.memory_mb not in range(1024, 6145, 1024):
        raise DeployError(f"deploy.serverless.memory_mb={s.memory_mb}: one of 1024, 2048, ..., 6144")
    if not 1 <= s.max_concurrency <= 200:
        raise DeployError(f"deploy.serverless.max_concurrency={s.max_concurrency}: 1 to 200")
    if not 0 <= s.provisioned_concurrency <= s.max_concurrency:
        raise DeployError(
            f"deploy.serverless.provisioned_concurrency={s.provisioned_concurrency}: 0 to max_concurrency"
        )


def _lambda(lam: Any) -> None:
    if lam.url_auth not in URL_AUTH:
        raise DeployError(f"deploy.lambda.url_auth={lam.url_auth!r}: AWS_IAM, NONE or null (no URL)")
    if lam.timeout_s is not None and not 1 <= lam.timeout_s <= 900:
        raise DeployError(f"deploy.lambda.timeout_s={lam.timeout_s}: 1 to 900 seconds, or null for the default")
    if not 128 <= lam.memory_mb <= 10240:
        raise DeployError(f"deploy.lambda.memory_mb={lam.memory_mb}: 128 to 10240")
    if lam.reserved_concurrency is not None and lam.reserved_concurrency < 1:
        raise DeployError("deploy.lambda.reserved_concurrency: 1 or more, or null for the shared pool")
    if lam.provisioned_concurrency < 0:
        raise DeployError("deploy.lambda.provisioned_concurrency: 0 (off) or more")
    if lam.reserved_concurrency is not None and lam.provisioned_concurrency > lam.reserved_concurrency:
        raise DeployError(
            f"deploy.lambda.provisioned_concurrency={lam.provisioned_concurrency} is above "
            f"deploy.lambda.reserved_concurrency={lam.reserved_concurrency}: Lambda refuses that"
        )


def _container(c: Any) -> None:
    if not 1 <= c.workers <= 64:
        raise DeployError(f"deploy.container.workers={c.workers}: 1 to 64 model server workers")
    if not 1 <= c.response_timeout_s <= 3600:
        raise DeployError(f"deploy.container.response_timeout_s={c.response_timeout_s}: 1 to 3600 seconds")
    # SageMaker's ProductionVariant range for both.
    for key in ("model_download_timeout_s", "startup_health_check_timeout_s"):
        if not 60 <= c[key] <= 3600:
            raise DeployError(f"deploy.container.{key}={c[key]}: 60 to 3600 seconds")
    if not isinstance(c.compile, bool):
        raise DeployError(f"deploy.container.compile={c.compile!r}: true or false")
    if not 1 <= c.max_batch <= 64:
        raise DeployError(f"deploy.container.max_batch={c.max_batch}: 1 to 64 images")
    if not 0 <= c.batch_wait_ms <= 1000:
        raise DeployError(f"deploy.container.batch_wait_ms={c.batch_wait_ms}: 0 to 1000 milliseconds")


def model_settings(d: Any) -> ModelSettings:
    """`deploy.model` as the packager's settings, its values checked.

    Raises:
        DeployError: a value out of range.
    """
    m = d.model
    if m.precision not in PRECISIONS:
        raise DeployError(f"deploy.model.precision={m.precision!r}: one of {', '.join(PRECISIONS)}")
    if not 1 <= m.calibration_images <= 100_000:
        raise DeployError(f"deploy.model.calibration_images={m.calibration_images}: 1 to 100000 images")
    if not 0 <= m.min_agreement <= 1 or not 0 <= m.max_top1_drop <= 1:
        raise DeployError("deploy.model.min_agreement and max_top1_drop are shares from 0 to 1")
    data_root = str(m.data_root) if m.data_root else None
    return ModelSettings(str(m.precision), int(m.calibration_images), int(m.calibration_seed),
                         float(m.min_agreement), float(m.max_top1_drop), data_root)  # fmt: skip


def load_model_settings(overrides: list[str]) -> ModelSettings:
    """`deploy.model` of `conf/deploy.yaml` with `overrides`, for the commands that only package (no AWS)."""
    return model_settings(compose_config("deploy", overrides, "deploy.model.precision=int8").deploy)


def _precision(d: Any) -> None:
    """int8 runs on x86 CPU instances; a GPU instance would run it on its host CPU, slower than float on the GPU."""
    model_settings(d)
    gpu = container_images.processor_for(d.instance_type, d.image.processor) == "gpu" and not d.serverless.enabled
    if d.model.precision == INT8 and gpu:
        raise DeployError(
            f"deploy.model.precision=int8 runs on CPU instances only, and {d.instance_type} is a GPU type; "
            "use float there, or a CPU type (ml.c5, ml.m5, ml.c7i, ...)"
        )


def _image(image: Any) -> None:
    if image.backend not in BACKENDS:
        raise DeployError(f"deploy.image.backend={image.backend!r}: one of {', '.join(BACKENDS)}")


def operating(d: Any) -> None:
    """The registry, rollout and alarm keys; SageMaker would refuse these only mid-deploy."""
    if d.registry.approval not in APPROVALS:
        raise DeployError(f"deploy.registry.approval={d.registry.approval!r}: one of {', '.join(APPROVALS)}")
    r = d.rollout
    if r.mode not in ROLLOUT_MODES:
        raise DeployError(f"deploy.rollout.mode={r.mode!r}: canary or all_at_once")
    # SageMaker: the canary is at most half of the new fleet's capacity.
    if not 1 <= r.canary_percent <= 50:
        raise DeployError(f"deploy.rollout.canary_percent={r.canary_percent}: 1 to 50 (percent of the new fleet)")
    if not 0 <= r.wait_s <= 3600:
        raise DeployError(f"deploy.rollout.wait_s={r.wait_s}: 0 to 3600 seconds")
    if r.mode == "canary" and 2 * r.wait_s >= d.wait.timeout_s:
        raise DeployError(
            f"deploy.rollout.wait_s={r.wait_s}: twice that (canary and final bake) is not below "
            f"deploy.wait.timeout_s={d.wait.timeout_s}, so `up` would stop waiting while the update bakes"
        )
    if r.mode == "canary" and not d.alarms.enabled:
        raise DeployError(
            "deploy.rollout.mode=canary rolls back on the alarms: set deploy.alarms.enabled=true "
            "or deploy.rollout.mode=all_at_once"
        )
    a = d.alarms
    if a.latency_p99_ms <= 0:
        raise DeployError(f"deploy.alarms.latency_p99_ms={a.latency_p99_ms}: milliseconds, above 0")
    if not 0 < a.error_4xx_rate <= 1:
        raise DeployError(f"deploy.alarms.error_4xx_rate={a.error_4xx_rate}: a share of requests, above 0 up to 1")
    if a.email is not None and not EMAIL_PATTERN.match(str(a.email)):
        raise DeployError(f"deploy.alarms.email={a.email!r}: an e-mail address, or null for none")
    percent = d.data_capture.percent
    if not 0 <= percent <= 100:
        raise DeployError(f"deploy.data_capture.percent={percent}: 0 (off) to 100")
    if percent and d.serverless.enabled:
        raise DeployError("deploy.data_capture.percent: serverless endpoints cannot capture data; set it to 0")
