"""The deploy config contract and the DLC image URI: defaults, typed overrides, refusals before any AWS call."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from deploy.cloud import container, cost
from deploy.cloud.config import load_config
from dogbreed.aws import container_images
from dogbreed.errors import DogbreedError

S3 = "deploy.s3_uri=s3://bkt/deploys"
IMAGE = {"uri": None, "backend": "rayserve", "processor": "auto"}
TORCHSERVE = {**IMAGE, "backend": "torchserve"}


def test_defaults_are_the_documented_numbers() -> None:
    d = load_config([S3]).deploy
    assert (d.name, d.instance_type, d.instance_count, d.serverless.enabled) == ("dogbreed", "ml.m5.large", 1, False)
    a = d.autoscaling
    assert (a.min_capacity, a.max_capacity, a.target_invocations, a.scale_in_cooldown, a.scale_out_cooldown) == (
        1, 3, 25, 300, 30,
    )  # fmt: skip
    lam = d["lambda"]
    assert (lam.reserved_concurrency, lam.provisioned_concurrency, lam.timeout_s, lam.memory_mb, lam.url_auth) == (
        5, 3, None, 256, "AWS_IAM",
    )  # fmt: skip
    c = d.container
    sized_for_m5_large = (c.workers, c.response_timeout_s, c.model_download_timeout_s, c.startup_health_check_timeout_s)
    assert sized_for_m5_large == (1, 60, 600, 600) and c.compile is True


def test_overrides_are_typed() -> None:
    d = load_config([S3, "deploy.instance_count=2", "deploy.serverless.enabled=true", "deploy.lambda.url_auth=null"])
    assert d.deploy.instance_count == 2 and d.deploy.serverless.enabled is True and d.deploy["lambda"].url_auth is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "deploy.s3_uri must be set"),
        (["deploy.s3_uri=bkt/deploys"], "deploy.s3_uri must be set"),
        ([S3, "deploy.name=dog_breed"], "deploy.name='dog_breed'"),
        ([S3, "deploy.autoscaling.min_capacity=4"], "deploy.autoscaling.min_capacity=4 is above max_capacity=3"),
        ([S3, "deploy.autoscaling.min_capacity=0"], "deploy.autoscaling.min_capacity=0"),
        ([S3, "deploy.autoscaling.target_invocations=0"], "deploy.autoscaling.target_invocations=0"),
        ([S3, "deploy.autoscaling.scale_in_cooldown=-1"], "deploy.autoscaling.scale_in_cooldown=-1"),
        ([S3, "deploy.lambda.url_auth=PUBLIC"], "deploy.lambda.url_auth='PUBLIC'"),
        ([S3, "deploy.lambda.timeout_s=0"], "deploy.lambda.timeout_s=0"),
        ([S3, "deploy.lambda.provisioned_concurrency=6"], "provisioned_concurrency=6 is above"),
        ([S3, "deploy.serverless.enabled=true", "deploy.serverless.memory_mb=3000"], "deploy.serverless.memory_mb"),
        ([S3, "deploy.instance_tpye=ml.c5.large"], "bad override"),
        ([S3, "deploy.container.workers=0"], "deploy.container.workers=0: 1 to 64"),
        ([S3, "deploy.container.response_timeout_s=0"], "deploy.container.response_timeout_s=0"),
        # SageMaker's ProductionVariant accepts 60..3600 for both start-up limits.
        ([S3, "deploy.container.startup_health_check_timeout_s=30"], "startup_health_check_timeout_s=30: 60 to 3600"),
        ([S3, "deploy.container.model_download_timeout_s=4000"], "model_download_timeout_s=4000: 60 to 3600"),
        ([S3, "deploy.container.compile=sometimes"], "deploy.container.compile='sometimes'"),
        ([S3, "deploy.container.max_batch=0"], "deploy.container.max_batch=0: 1 to 64"),
        ([S3, "deploy.container.batch_wait_ms=5000"], "deploy.container.batch_wait_ms=5000: 0 to 1000"),
        ([S3, "deploy.image.backend=triton"], "deploy.image.backend='triton': one of rayserve, torchserve"),
    ],
)
def test_bad_config_is_refused_with_the_key_to_fix(overrides: list[str], message: str) -> None:
    with pytest.raises(DogbreedError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(overrides)


def test_any_bucket_layout_loads_the_account_s_boundary_decides_at_up() -> None:
    # The prefixes a created role may use are the account's set-up (python -m deploy setup), not a
    # layout this file imposes; `up` checks them against the boundary the account holds.
    assert load_config(["deploy.s3_uri=s3://bkt/deploys", "deploy.name=prod"]).deploy.s3_uri == "s3://bkt/deploys"


def test_serverless_skips_the_autoscaling_checks() -> None:
    # Serverless endpoints have no scaling target, so its numbers cannot block a serverless deploy.
    cfg = load_config([S3, "deploy.serverless.enabled=true", "deploy.autoscaling.min_capacity=9"])
    assert cfg.deploy.serverless.enabled


RAY, TS = "ray:serve-ml-sagemaker", "pytorch-inference:2.6.0"
US_EAST_1 = "763104351884.dkr.ecr.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    ("region", "instance_type", "serverless", "image", "expected"),
    [
        ("us-east-1", "ml.m5.large", False, IMAGE, f"{US_EAST_1}/{RAY}-cpu-v1.4"),
        ("eu-west-1", "ml.g5.xlarge", False, IMAGE, f"763104351884.dkr.ecr.eu-west-1.amazonaws.com/{RAY}-cuda-v1.4"),
        ("eu-west-1", "ml.g5.xlarge", True, IMAGE, f"763104351884.dkr.ecr.eu-west-1.amazonaws.com/{RAY}-cpu-v1.4"),
        ("af-south-1", "ml.m5.large", False, IMAGE, f"626614931356.dkr.ecr.af-south-1.amazonaws.com/{RAY}-cpu-v1.4"),
        ("cn-north-1", "ml.m5.large", False, IMAGE, f"727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/{RAY}-cpu-v1.4"),
        ("us-east-1", "ml.m5.large", False, TORCHSERVE, f"{US_EAST_1}/{TS}-cpu-py312"),
        ("us-east-1", "ml.g5.xlarge", False, TORCHSERVE, f"{US_EAST_1}/{TS}-gpu-py312"),
        ("us-east-1", "ml.g5.xlarge", True, TORCHSERVE, f"{US_EAST_1}/{TS}-cpu-py312"),
    ],
)  # fmt: skip
def test_image_uri_follows_backend_region_and_instance(
    region: str, instance_type: str, serverless: bool, image: dict, expected: str
) -> None:
    assert container_images.image_uri(region, image, instance_type, serverless) == expected


def test_image_uri_override_wins_and_unknown_regions_are_refused() -> None:
    custom = "111122223333.dkr.ecr.us-east-1.amazonaws.com/mine:1"
    assert container_images.image_uri("mars-north-1", {**IMAGE, "uri": custom}, "ml.m5.large", False) == custom
    with pytest.raises(ValueError, match=r"mars-north-1; set deploy.image.uri"):
        container_images.image_uri("mars-north-1", IMAGE, "ml.m5.large", False)


def test_training_images_are_the_amazon_linux_2023_line_with_its_own_tag_forms() -> None:
    # The AL2023 repository `pytorch` puts no Python version in its tags and the CUDA version in its GPU ones.
    cpu = container_images.training_image_uri("us-east-1", "ml.m5.xlarge")
    gpu = container_images.training_image_uri("us-west-2", "ml.g5.2xlarge")
    assert cpu == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cpu-amzn2023-sagemaker"
    assert gpu == "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch:2.13.0-cu133-amzn2023-sagemaker"


def test_the_served_torch_is_the_backend_images_and_unknown_for_an_image_of_ones_own() -> None:
    assert container_images.served_torch(IMAGE) == "2.10.0"
    assert container_images.served_torch(TORCHSERVE) == "2.6.0"
    assert container_images.served_torch({**IMAGE, "uri": "111122223333.dkr.ecr.us-east-1.amazonaws.com/m:1"}) is None


def test_repository_arn_scopes_the_execution_role_to_one_repository() -> None:
    uri = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
    assert (
        container_images.repository_arn(uri, "aws") == "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-inference"
    )
    with pytest.raises(ValueError, match="not an ECR image"):
        container_images.repository_arn("docker.io/library/python:3.12", "aws")


@pytest.mark.parametrize(
    ("trained", "image", "warned"),
    [
        ("2.14.1+cu130", "2.6.0", True),
        ("2.6.0+cpu", "2.6", False),  # the same release, written differently
        ("2.5.1", "2.6.0", False),
        (None, "2.6.0", False),  # nothing recorded: a run packaged without a checkpoint or model_info.json
    ],
)
def test_torch_gap_warns_only_when_training_was_newer(
    tmp_path: Path, trained: str | None, image: str, warned: bool
) -> None:
    info = json.dumps({"trained_with": {"torch": trained} if trained else {}}).encode()
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        member = tarfile.TarInfo("serving.json")
        member.size = len(info)
        tar.addfile(member, io.BytesIO(info))
    warning = container.warn_on_torch_gap(tarball, image)
    assert (warning is not None) == warned
    if warned:
        assert f"torch {trained}" in warning and f"torch {image}" in warning


@pytest.mark.parametrize(
    ("instance_type", "workers", "threads"),
    [("ml.m5.large", 1, "2"), ("ml.c5.xlarge", 2, "2"), ("ml.m5.4xlarge", 4, "4"), ("ml.c5.large", 4, "1")],
)
def test_each_container_worker_gets_its_share_of_the_vcpus(instance_type: str, workers: int, threads: str) -> None:
    sized = [S3, f"deploy.instance_type={instance_type}", f"deploy.container.workers={workers}"]
    ray = container.model_environment(load_config(sized).deploy)
    assert (ray["DOGBREED_REPLICAS"], ray["DOGBREED_THREADS"]) == (str(workers), threads)
    torchserve = container.model_environment(load_config([*sized, "deploy.image.backend=torchserve"]).deploy)
    assert (torchserve["SAGEMAKER_MODEL_SERVER_WORKERS"], torchserve["OMP_NUM_THREADS"]) == (str(workers), threads)


def test_serverless_and_unknown_sizes_leave_the_thread_count_to_torch() -> None:
    for backend in ("rayserve", "torchserve"):
        serverless = load_config([S3, "deploy.serverless.enabled=true", f"deploy.image.backend={backend}"])
        medium = load_config([S3, "deploy.instance_type=ml.t2.medium", f"deploy.image.backend={backend}"])
        for env in (container.model_environment(serverless.deploy), container.model_environment(medium.deploy)):
            assert "OMP_NUM_THREADS" not in env and "DOGBREED_THREADS" not in env


def test_ray_serve_batches_real_time_requests_and_answers_serverless_ones_alone() -> None:
    realtime = container.model_environment(load_config([S3, "deploy.container.max_batch=4"]).deploy)
    assert (realtime["DOGBREED_MAX_BATCH"], realtime["DOGBREED_BATCH_WAIT_MS"]) == ("4", "5")
    assert realtime["RAYSERVE_BACKEND_TIMEOUT"] == "60" and "SAGEMAKER_PROGRAM" not in realtime
    serverless = container.model_environment(load_config([S3, "deploy.serverless.enabled=true"]).deploy)
    assert (serverless["DOGBREED_MAX_BATCH"], serverless["DOGBREED_BATCH_WAIT_MS"]) == ("1", "0")
    assert serverless["DOGBREED_MAX_BODY_BYTES"] == str(4 * 1024 * 1024) and serverless["DOGBREED_COMPILE"] == "0"


def test_only_the_ray_serve_gpu_image_asks_for_a_newer_gpu_host() -> None:
    def host(*overrides: str) -> dict[str, str]:
        return container.host_ami(load_config([S3, *overrides]).deploy)

    assert host("deploy.instance_type=ml.g5.xlarge") == {"InferenceAmiVersion": "al2-ami-sagemaker-inference-gpu-3-1"}
    assert host() == {} and host("deploy.instance_type=ml.g5.xlarge", "deploy.image.backend=torchserve") == {}
    assert host("deploy.instance_type=ml.g5.xlarge", "deploy.image.uri=1.dkr.ecr.us-east-1.amazonaws.com/mine:1") == {}


def test_the_cost_of_a_million_answers_names_its_figures() -> None:
    realtime = cost.summary(load_config([S3]).deploy)
    prices, measured = cost.table("prices.json"), cost.table("throughput.json")
    # ml.m5.large at $0.115/h answering 25 a minute: 0.115 / 1500 x 1e6 = $76.67.
    assert realtime[0].startswith("cost: $76.67 per 1M answers at the autoscaling target (25/min per instance")
    rate = measured["served"]["float"]["rps_per_vcpu"] * 2
    assert f"${0.115 / (rate * 3600) * 1e6:.2f} per 1M answers at saturation" in realtime[1]
    assert measured["as_of"] in realtime[1] and prices["as_of"] in realtime[2]
    int8 = cost.summary(load_config([S3, "deploy.model.precision=int8"]).deploy)
    assert "int8" in int8[1] and int8[1] != realtime[1]
    serverless = cost.summary(load_config([S3, "deploy.serverless.enabled=true"]).deploy)
    assert serverless[0].startswith("cost: $") and "3 GB x" in serverless[0] and "idle costs nothing" in serverless[0]
    gpu = cost.summary(load_config([S3, "deploy.instance_type=ml.g5.xlarge"]).deploy)
    assert "no measured float figure for ml.g5.xlarge" in gpu[1]
    unknown = cost.summary(load_config([S3, "deploy.instance_type=ml.c7i.large"]).deploy)
    assert unknown[0] == "cost: no price for ml.c7i.large in deploy/prices.json; see the SageMaker pricing page"
