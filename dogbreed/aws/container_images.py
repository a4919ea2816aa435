"""The Deep Learning Container image URIs for a region: the registry accounts, and the images `support.json` pins.

AWS publishes the DLCs from one ECR registry account in most regions and from a separate account in
each opt-in region (`docs/reference/region_availability.md` of aws/deep-learning-containers). A region
not in the map needs an explicit image URI.

The images and their tags are entries of `dogbreed/aws/support.json`, with the release each was checked
against and its end of patch: the Ray Serve inference image (`ray:serve-ml-sagemaker-cpu-v1.4`, the
default), the TorchServe one (`pytorch-inference:2.6.0-cpu-py312`) and the training image on Amazon
Linux 2023 (`pytorch:2.13.0-cpu-amzn2023-sagemaker`, `...-cu133-...`). Each repository writes its tags
its own way (no Python part on the AL2023 line, the CUDA version in its GPU tags), so the table holds
each tag whole rather than a pattern.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dogbreed.aws import support
from dogbreed.errors import ConfigError

DEFAULT_REGISTRY = "763104351884"

REGISTRY_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-east-2": "975050140332",
    "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "mx-central-1": "637423239942",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
}
# Regions served by DEFAULT_REGISTRY; anything outside both lists is refused rather than guessed.
DEFAULT_REGISTRY_REGIONS = frozenset(
    {
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "ca-central-1",
        "sa-east-1",
        "eu-central-1",
        "eu-north-1",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-south-1",
        "ap-southeast-1",
        "ap-southeast-2",
    }
)
GPU_FAMILIES = ("ml.g", "ml.p")


def registry_account(region: str) -> str:
    """The ECR account that hosts the DLCs in `region`.

    Raises:
        ValueError: the region is not known to host the DLCs.
    """
    if region in REGISTRY_ACCOUNTS:
        return REGISTRY_ACCOUNTS[region]
    if region in DEFAULT_REGISTRY_REGIONS:
        return DEFAULT_REGISTRY
    raise ConfigError(f"no PyTorch DLC registry known for region {region}; set deploy.image.uri")


def processor_for(instance_type: str, processor: str) -> str:
    """`cpu` or `gpu`: `auto` follows the instance family (serverless endpoints are CPU only)."""
    if processor != "auto":
        return processor
    return "gpu" if instance_type.startswith(GPU_FAMILIES) else "cpu"


def ecr_uri(region: str, repository: str, tag: str) -> str:
    """`<registry>.dkr.ecr.<region>.<domain>/<repository>:<tag>`.

    Raises:
        ValueError: the region is not known to host the DLCs.
    """
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{registry_account(region)}.dkr.ecr.{region}.{domain}/{repository}:{tag}"


def table_image_uri(region: str, name: str, processor: str) -> str:
    """The URI of `support.json`'s image `name` (`rayserve`, `torchserve`, `training`) for `cpu` or `gpu`."""
    if processor not in ("cpu", "gpu"):
        raise ValueError(f"processor={processor!r}: expected cpu or gpu")
    row = support.image(name)
    return ecr_uri(region, row["repository"], row["tags"][processor])


def image_uri(region: str, image: dict[str, Any], instance_type: str, serverless: bool) -> str:
    """The inference image for `deploy.image`: its `uri` when set, else the backend's image from the table.

    Args:
        region: the deploy region.
        image: `deploy.image` (`uri`, `backend`, `processor`).
        instance_type: the real-time instance type (decides cpu/gpu under `processor: auto`).
        serverless: serverless endpoints run CPU images only.
    """
    if image.get("uri"):
        return str(image["uri"])
    processor = "cpu" if serverless else processor_for(instance_type, image["processor"])
    return table_image_uri(region, str(image["backend"]), processor)


def training_image_uri(region: str, instance_type: str) -> str:
    """The PyTorch training DLC for a SageMaker training job on `instance_type` (GPU image on ml.g*/ml.p*)."""
    return table_image_uri(region, "training", processor_for(instance_type, "auto"))


def served_torch(image: Mapping[str, Any]) -> str | None:
    """The torch version of `deploy.image`'s container: the table's for a backend image, None for an explicit URI."""
    return None if image.get("uri") else str(support.image(str(image["backend"]))["torch"])


def repository_arn(uri: str, partition: str) -> str:
    """The ECR repository ARN of an image URI `<account>.dkr.ecr.<region>.<domain>/<repository>:<tag>`.

    Raises:
        ValueError: the URI is not an ECR image.
    """
    host, _, path = uri.partition("/")
    parts = host.split(".")
    if len(parts) < 5 or parts[1:3] != ["dkr", "ecr"] or not path:
        raise ConfigError(f"{uri} is not an ECR image URI; the execution role can only be scoped to ECR images")
    repository = path.split("@")[0].split(":")[0]
    return f"arn:{partition}:ecr:{parts[3]}:{parts[0]}:repository/{repository}"
