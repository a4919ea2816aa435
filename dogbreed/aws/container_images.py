"""The PyTorch Deep Learning Container images (training and inference) for a region: one table.

AWS publishes the DLCs from one ECR registry account in most regions and from a
separate account in each opt-in region; the map follows the SageMaker Python SDK's
`image_uri_config/pytorch.json`. A region not in it needs an explicit image URI.

Tags: the SageMaker DLCs are published as `<framework>-<cpu|gpu>-<py>` (e.g. `2.6.0-gpu-py312`),
which tracks the newest patch of that framework version, and as long forms such as
`2.6.0-gpu-py312-cu124-ubuntu22.04-sagemaker`. The short form is the one that exists for every
release, so it is the one built here; a pinned long tag goes in the explicit URI.
"""

from __future__ import annotations

from typing import Any

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
    raise ValueError(f"no PyTorch DLC registry known for region {region}; set deploy.image.uri")


def processor_for(instance_type: str, processor: str) -> str:
    """`cpu` or `gpu`: `auto` follows the instance family (serverless endpoints are CPU only)."""
    if processor != "auto":
        return processor
    return "gpu" if instance_type.startswith(GPU_FAMILIES) else "cpu"


TRAINING_REPOSITORY = "pytorch-training"
INFERENCE_REPOSITORY = "pytorch-inference"
# The short tag format AWS publishes for every SageMaker PyTorch DLC release.
TAG_PATTERN = r"^\d+\.\d+\.\d+-(cpu|gpu)-py3\d+$"


def dlc_uri(region: str, repository: str, framework_version: str, py_version: str, processor: str) -> str:
    """`<registry>.dkr.ecr.<region>.<domain>/<repository>:<framework>-<processor>-<py>`.

    Raises:
        ValueError: the region is not known to host the DLCs, or the processor is not cpu/gpu.
    """
    if processor not in ("cpu", "gpu"):
        raise ValueError(f"processor={processor!r}: expected cpu or gpu")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    tag = f"{framework_version}-{processor}-{py_version}"
    return f"{registry_account(region)}.dkr.ecr.{region}.{domain}/{repository}:{tag}"


def image_uri(region: str, image: dict[str, Any], instance_type: str, serverless: bool) -> str:
    """The inference image for `deploy.image`: its `uri` when set, else the DLC built from the versions.

    Args:
        region: the deploy region.
        image: `deploy.image` (`uri`, `repository`, `framework_version`, `py_version`, `processor`).
        instance_type: the real-time instance type (decides cpu/gpu under `processor: auto`).
        serverless: serverless endpoints run CPU images only.
    """
    if image.get("uri"):
        return str(image["uri"])
    processor = "cpu" if serverless else processor_for(instance_type, image["processor"])
    return dlc_uri(region, image["repository"], image["framework_version"], image["py_version"], processor)


def training_image_uri(region: str, instance_type: str, framework_version: str, py_version: str) -> str:
    """The PyTorch training DLC for a SageMaker training job on `instance_type` (GPU image on ml.g*/ml.p*)."""
    processor = processor_for(instance_type, "auto")
    return dlc_uri(region, TRAINING_REPOSITORY, framework_version, py_version, processor)


def repository_arn(uri: str, partition: str) -> str:
    """The ECR repository ARN of an image URI `<account>.dkr.ecr.<region>.<domain>/<repository>:<tag>`.

    Raises:
        ValueError: the URI is not an ECR image.
    """
    host, _, path = uri.partition("/")
    parts = host.split(".")
    if len(parts) < 5 or parts[1:3] != ["dkr", "ecr"] or not path:
        raise ValueError(f"{uri} is not an ECR image URI; the execution role can only be scoped to ECR images")
    repository = path.split("@")[0].split(":")[0]
    return f"arn:{partition}:ecr:{parts[3]}:{parts[0]}:repository/{repository}"
