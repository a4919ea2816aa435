"""The SageMaker launcher's settings, `hydra.launcher.*`: one definition, which the Hydra plugin's structured config
is made from (hydra_plugins/dogbreed_sagemaker_launcher/config.py), so a key and its default are written once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3AddressError, S3Location

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-?[a-zA-Z0-9]){0,39}$")
INPUT_MODES = ("File", "FastFile")


class LaunchError(DogbreedError):
    """A SageMaker launch cannot go on; the message names the `hydra.launcher.*` key to change."""


@dataclass(frozen=True)
class LaunchSettings:
    """`hydra.launcher.*` as plain values. Plain types only: OmegaConf builds the plugin's config from them."""

    s3_uri: str | None = None  # required: code bundles, job outputs and checkpoints go under it
    name: str = "dogbreed"  # job names are <name>-<UTC stamp>-<n>; the role is <name>-sagemaker-training
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1  # > 1: one torchrun process per GPU (or per CPU host), data-parallel
    volume_gb: int = 50
    max_runtime_s: int = 86400
    spot: bool = False  # managed spot training: checkpoints synced to S3, resumed after an interruption
    max_wait_s: int | None = None  # spot only; null: twice max_runtime_s
    input_mode: str = "FastFile"  # or File (the channel copied to the instance's volume first)
    role_arn: str | None = None  # null: create <name>-sagemaker-training under the permissions boundary
    image_uri: str | None = None  # null: the PyTorch training image of dogbreed/aws/support.json, CPU or GPU
    permissions_boundary: str = "dogbreed-boundary"
    max_parallel: int = 4  # jobs running at once
    wait: bool = True  # false: create the jobs and return
    poll_s: float = 30.0
    region: str | None = None  # null: the standard boto3 chain (AWS_REGION, profile)
    preflight: bool = True  # check Service Quotas and simulate the calls first; false for callers that may not
    # On every job and the role, beside dogbreed:name=<name> and project=dogbreed: +hydra.launcher.tags.team=ml
    tags: dict[str, str] = field(default_factory=dict)

    def location(self) -> S3Location:
        """`s3_uri` with no slashes at the key's ends."""
        try:
            if self.s3_uri is None:
                raise S3AddressError("hydra.launcher.s3_uri is not set")
            location = S3Location.parse(self.s3_uri)
        except S3AddressError:
            raise LaunchError(f"hydra.launcher.s3_uri must look like s3://bucket/prefix, got {self.s3_uri!r}") from None
        return S3Location(location.bucket, location.key.strip("/"))

    def wait_s(self) -> int:
        """MaxWaitTimeInSeconds of a spot job: `max_wait_s`, by default twice the runtime."""
        return self.max_wait_s if self.max_wait_s is not None else 2 * self.max_runtime_s

    def check(self) -> None:
        """Refuses what SageMaker would refuse only after the bundle is uploaded, or never."""
        self.location()
        problems = []
        if not NAME_PATTERN.match(self.name):
            problems.append(f"name={self.name!r}: 1-40 letters, digits and single hyphens")
        if self.instance_count < 1 or self.max_parallel < 1 or self.volume_gb < 1 or self.max_runtime_s < 1:
            problems.append("instance_count, max_parallel, volume_gb and max_runtime_s must be >= 1")
        if self.spot and self.wait_s() < self.max_runtime_s:
            problems.append(f"max_wait_s={self.max_wait_s} is below max_runtime_s={self.max_runtime_s}")
        if self.input_mode not in INPUT_MODES:
            problems.append(f"input_mode={self.input_mode!r}: one of {', '.join(INPUT_MODES)}")
        if problems:
            raise LaunchError("hydra.launcher: " + "; ".join(problems))
