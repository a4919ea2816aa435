"""What `up` tells the inference container and the Lambda about the endpoint they serve.

Real-time and serverless endpoints differ in what they accept and how they start: a serverless
endpoint caps a request at 4 MB (real-time: 6 MB), starts a container on a cold request, and
would compile the model at every such start. One setting, `DOGBREED_MAX_BODY_BYTES`, carries
the cap to both the handler in the container and the Lambda, so they refuse the same bodies.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from pathlib import Path
from typing import Any

from dogbreed.aws import container_images, support

log = logging.getLogger(__name__)

REALTIME_MAX_BODY_BYTES = 6 * 1024 * 1024
SERVERLESS_MAX_BODY_BYTES = 4 * 1024 * 1024
# The Lambda's wait for one answer. Real-time: two tries of 3 + 10 s fit API Gateway's 29 s.
# Serverless: SageMaker answers within 60 s (cold start included) or not at all, so 65 s covers
# it; the function's own timeout must leave room for that, hence its serverless default of 90 s.
REALTIME_LAMBDA_TIMEOUT_S = 30
SERVERLESS_LAMBDA_TIMEOUT_S = 90
SERVERLESS_READ_TIMEOUT_S = 65
LAMBDA_MARGIN_S = 5  # connect, the request's own work and the reply, after the read timeout


def instance_vcpus(instance_type: str) -> int | None:
    """The vCPUs of an ml.* instance from its size (large 2, xlarge 4, Nxlarge 4N); None for others (medium)."""
    size = instance_type.rsplit(".", 1)[-1]
    if size == "large":
        return 2
    match = re.fullmatch(r"(\d*)xlarge", size)
    return 4 * int(match.group(1) or 1) if match else None


def model_environment(d: Any) -> dict[str, str]:
    """The inference container's environment for `deploy` config `d`, by `deploy.image.backend`.

    Both backends run `deploy.container.workers` model copies, each with vCPUs ÷ workers torch threads on
    a real-time instance: unset, every copy's torch would start a thread per vCPU, and N copies would fight
    over the cores (`benchmarks/container_workers.py` measures the split). A serverless endpoint never
    compiles (it would at every cold start) and takes 4 MB bodies; its vCPUs follow the memory size.
    """
    c = d.container
    env = ray_serve_environment(d) if d.image.backend == "rayserve" else torchserve_environment(d)
    if d.serverless.enabled:
        env |= {"DOGBREED_COMPILE": "0", "DOGBREED_MAX_BODY_BYTES": str(SERVERLESS_MAX_BODY_BYTES)}
    elif not c.compile:
        env["DOGBREED_COMPILE"] = "0"
    return env


def threads_per_copy(d: Any) -> int | None:
    """vCPUs ÷ workers on a real-time instance; None on serverless or an instance size not known here."""
    vcpus = instance_vcpus(d.instance_type)
    if vcpus is None or d.serverless.enabled:
        return None
    return max(1, vcpus // int(d.container.workers))


def ray_serve_environment(d: Any) -> dict[str, str]:
    """What `dogbreed.serving.ray_app` and the Ray Serve container's adapter read.

    A serverless container gets one request at a time, so its forwards never wait for company.
    """
    c = d.container
    env = {
        "DOGBREED_REPLICAS": str(c.workers),
        "DOGBREED_MAX_BATCH": "1" if d.serverless.enabled else str(c.max_batch),
        "DOGBREED_BATCH_WAIT_MS": "0" if d.serverless.enabled else str(c.batch_wait_ms),
        "RAYSERVE_BACKEND_TIMEOUT": str(c.response_timeout_s),
    }
    threads = threads_per_copy(d)
    if threads is not None:
        env["DOGBREED_THREADS"] = str(threads)
    return env


def torchserve_environment(d: Any) -> dict[str, str]:
    """What the SageMaker inference toolkit in the TorchServe image reads: `code/inference.py`, the
    workers per model and their response timeout, and each worker's torch threads."""
    c = d.container
    env = {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(c.workers),
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(c.response_timeout_s),
    }
    threads = threads_per_copy(d)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def host_ami(d: Any) -> dict[str, str]:
    """The variant's InferenceAmiVersion where the image needs one: the Ray Serve CUDA image's CUDA is newer
    than the default GPU host's driver. Serverless, CPU and images of one's own (`deploy.image.uri`) take none."""
    gpu = container_images.processor_for(d.instance_type, d.image.processor) == "gpu"
    if d.serverless.enabled or d.image.uri or not gpu:
        return {}
    version = support.image(str(d.image.backend)).get("gpu_inference_ami_version")
    return {"InferenceAmiVersion": version} if version else {}


def variant_timeouts(d: Any) -> dict[str, int]:
    """The real-time variant's model download and container start-up limits (serverless takes neither)."""
    if d.serverless.enabled:
        return {}
    return {
        "ModelDataDownloadTimeoutInSeconds": int(d.container.model_download_timeout_s),
        "ContainerStartupHealthCheckTimeoutInSeconds": int(d.container.startup_health_check_timeout_s),
    }


def lambda_timeout(d: Any) -> int:
    """`deploy.lambda.timeout_s`, or the default for the endpoint type when it is null."""
    timeout = d["lambda"].timeout_s
    if timeout is not None:
        return int(timeout)
    return SERVERLESS_LAMBDA_TIMEOUT_S if d.serverless.enabled else REALTIME_LAMBDA_TIMEOUT_S


def lambda_environment(d: Any, endpoint: str) -> dict[str, str]:
    """The Lambda's environment: the endpoint, and for serverless its body cap and a read timeout
    long enough for a cold start, within the function's own timeout.
    """
    env = {"ENDPOINT_NAME": endpoint}
    if d.serverless.enabled:
        read = max(1, min(SERVERLESS_READ_TIMEOUT_S, lambda_timeout(d) - LAMBDA_MARGIN_S))
        env |= {
            "DOGBREED_MAX_BODY_BYTES": str(SERVERLESS_MAX_BODY_BYTES),
            "ENDPOINT_SERVERLESS": "1",
            "ENDPOINT_READ_TIMEOUT_S": str(read),
            "ENDPOINT_ATTEMPTS": "1",  # a second try of a cold start would not fit; warming is retried instead
        }
    return env


def release(version: str) -> tuple[int, ...]:
    """`2.14.1+cu130` -> (2, 14, 1), `2.6` -> (2, 6, 0): the numeric release, without local or pre-release tags."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    parts = [int(part) for part in match.group(0).split(".")] if match else []
    return tuple(parts + [0] * (3 - len(parts))) if parts else ()


def trained_torch(tarball: Path) -> str | None:
    """The torch version the packaged weights were trained with (serving.json's `trained_with`), if recorded."""
    with tarfile.open(tarball, "r:*") as tar:
        try:
            member = tar.extractfile("serving.json")
        except KeyError:
            return None
        info = json.loads(member.read()) if member else {}
    return info.get("trained_with", {}).get("torch")


def warn_on_torch_gap(tarball: Path, container_torch: str | None) -> str | None:
    """Logs (and returns) a warning when the run was trained with a newer torch than the image serves.

    `container_torch` is the serving image's torch (`dogbreed/aws/support.json`; None for an image URI
    of the user's own, which is not checked). Packaging already loaded the weights the way the container
    does (weights only, strict), so they load; what a newer torch changed in numerics or kernels is not.
    """
    if container_torch is None:
        return None
    trained = trained_torch(tarball)
    if trained is None or not release(container_torch) or release(trained) <= release(container_torch):
        return None
    warning = (
        f"the model was trained with torch {trained} and the endpoint's image serves torch {container_torch} "
        "(deploy.image.backend, dogbreed/aws/support.json). The weights load there (checked when packaging); "
        "compare a few predictions with `python -m deploy invoke` after the deploy"
    )
    log.warning(warning)
    return warning
