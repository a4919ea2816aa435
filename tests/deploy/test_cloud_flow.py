"""`up` / `down` / `status` end to end against the moto server (../shared/AWS_LOCAL.md).

Moto lacks `sagemaker.update_endpoint` and Lambda provisioned concurrency; only those
operations go to a botocore Stubber, which also checks the parameters sent.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from botocore.stub import ANY, Stubber

from deploy.cli import main as deploy_main
from deploy.cloud import orchestrator
from deploy.cloud.config import load_config
from deploy.cloud.errors import DeployError
from deploy.cloud.orchestrator import Clients
from dogbreed.errors import DogbreedError, WeightsError
from tests.helpers.aws_gaps import Gaps

REPO = Path(__file__).resolve().parents[2]
BUCKET = "dogbreed-deploy-test"
ACCOUNT = "123456789012"  # moto's default account
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/ray:serve-ml-sagemaker-cpu-v1.4"
TORCHSERVE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
COURSE_EVENT = {"url": "https://s3.amazonaws.com/cdn-origin-etl-tool/BlogImages/2019/06/13/dog.jpg"}
PC_OPS = (
    "get_provisioned_concurrency_config",
    "put_provisioned_concurrency_config",
    "delete_provisioned_concurrency_config",
)


class Routed:
    """A boto3 client whose named operations go to a Stubber-backed twin, everything else to moto.

    A stubbed `update_endpoint` also lands in moto (the endpoint recreated on the new config, as
    SageMaker's finished update leaves it) unless `land_updates` is False (an update rolled back).
    """

    def __init__(self, real: Any, operations: tuple[str, ...]) -> None:
        self.real = real
        self.twin = boto3.client(real.meta.service_model.service_name, region_name=real.meta.region_name)
        self.stubber = Stubber(self.twin)
        self.stubber.activate()
        self.operations = operations
        self.land_updates = True

    def __getattr__(self, name: str) -> Any:
        if name == "update_endpoint" and name in self.operations:
            return self._update_endpoint
        return getattr(self.twin if name in self.operations else self.real, name)

    def _update_endpoint(self, **params: Any) -> Any:
        reply = self.twin.update_endpoint(**params)  # the Stubber checks the request
        if self.land_updates:
            self.real.delete_endpoint(EndpointName=params["EndpointName"])
            self.real.create_endpoint(
                EndpointName=params["EndpointName"], EndpointConfigName=params["EndpointConfigName"]
            )
        return reply


class ProvisionedConcurrency:
    """Queues the replies Lambda gives for provisioned concurrency on the `live` alias."""

    def __init__(self, routed: Routed, function: str) -> None:
        self.stubber = routed.stubber
        self.key = {"FunctionName": function, "Qualifier": "live"}

    def absent(self) -> None:
        self.stubber.add_client_error(
            "get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException", http_status_code=404
        )

    def present(self, count: int) -> None:
        reply = {"RequestedProvisionedConcurrentExecutions": count, "Status": "READY"}
        self.stubber.add_response("get_provisioned_concurrency_config", reply, self.key)

    def put(self, count: int) -> None:
        reply = {"RequestedProvisionedConcurrentExecutions": count, "Status": "IN_PROGRESS"}
        self.stubber.add_response(
            "put_provisioned_concurrency_config", reply, {**self.key, "ProvisionedConcurrentExecutions": count}
        )

    def delete(self) -> None:
        self.stubber.add_response("delete_provisioned_concurrency_config", {}, self.key)


@pytest.fixture
def handler_dir() -> Path:
    """The real Lambda function code, as `up` zips it."""
    return REPO / "deploy" / "lambda_function"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pth").write_bytes(b"weights" * 100)
    (run / "labels.json").write_text(json.dumps({"0": "Affenpinscher", "1": "Afghan_hound"}))
    return run


def package(run: str) -> Path:
    """model.tar.gz like deploy.model_archive makes; fresh timestamps each call, as a real repackage has."""
    out = Path(run) / "model.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        members = [("model.pth", None), ("labels.json", None), ("code/inference.py", b"def model_fn(d):\n    pass\n")]
        for name, data in members:
            data = data if data is not None else (Path(run) / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), time.time()
            tar.addfile(info, io.BytesIO(data))
    return out


BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/dogbreed-boundary"


def create_boundary(name: str = "dogbreed-boundary") -> str:
    """The one-time set-up README asks for: the shipped boundary policy, created in the account."""
    document = (REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text()
    return boto3.client("iam").create_policy(PolicyName=name, PolicyDocument=document)["Policy"]["Arn"]


def boundary_of(iam_client: Any, role: str) -> str | None:
    return iam_client.get_role(RoleName=role)["Role"].get("PermissionsBoundary", {}).get("PermissionsBoundaryArn")


@pytest.fixture
def deploy_env(aws: str, handler_dir: Path) -> Callable[..., Any]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    create_boundary()

    def make(*overrides: str) -> Any:
        base = [f"deploy.s3_uri=s3://{BUCKET}/deploys", f"deploy.lambda.source_dir={handler_dir}"]
        base.append("deploy.wait.poll_s=0")
        return load_config([*base, *overrides])

    return make


@pytest.fixture
def clients(aws: str) -> Clients:
    made = Clients.create()
    made.lambda_ = Routed(made.lambda_, PC_OPS)
    made.sagemaker = Routed(made.sagemaker, ("update_endpoint",))
    return made


def snapshot(c: Clients) -> dict[str, Any]:
    """Everything a deploy can create, as AWS describes it."""
    sm, lam, aas = c.sagemaker.real, c.lambda_.real, c.autoscaling
    functions = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    return {
        "models": [m["ModelName"] for m in sm.list_models()["Models"]],
        "configs": [e["EndpointConfigName"] for e in sm.list_endpoint_configs()["EndpointConfigs"]],
        "endpoints": [(e["EndpointName"], e["EndpointStatus"]) for e in sm.list_endpoints()["Endpoints"]],
        "targets": aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"],
        "policies": aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"],
        "functions": {f: lam.get_function(FunctionName=f)["Configuration"]["CodeSha256"] for f in functions},
        "versions": {f: len(lam.list_versions_by_function(FunctionName=f)["Versions"]) for f in functions},
        "roles": sorted(r["RoleName"] for r in c.iam.list_roles()["Roles"] if r["RoleName"].startswith("dogbreed")),
    }


def test_up_creates_every_resource_with_the_configured_numbers(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    cfg = deploy_env()
    pc = ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke")
    pc.absent()
    pc.put(3)
    orchestrator.up(cfg, str(run_dir), clients, package)
    sm, lam, aas = clients.sagemaker.real, clients.lambda_.real, clients.autoscaling

    endpoint = sm.describe_endpoint(EndpointName="dogbreed")
    assert endpoint["EndpointStatus"] == "InService"
    variant = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 1)
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["ExecutionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/dogbreed-sagemaker"
    model_url = model["PrimaryContainer"]["ModelDataUrl"]
    assert model_url.startswith(f"s3://{BUCKET}/deploys/dogbreed/") and model_url.endswith("/model.tar.gz")

    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in target] == [
        ("endpoint/dogbreed/variant/AllTraffic", 1, 3)
    ]
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 25.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (300, 30)

    function = lam.get_function(FunctionName="dogbreed-invoke")
    conf = function["Configuration"]
    assert (conf["Timeout"], conf["MemorySize"], conf["Runtime"]) == (30, 256, "python3.12")
    assert conf["Handler"] == "lambda_function.lambda_handler"
    assert conf["Environment"]["Variables"] == {"ENDPOINT_NAME": "dogbreed"}
    assert function["Concurrency"]["ReservedConcurrentExecutions"] == 5
    assert lam.get_alias(FunctionName="dogbreed-invoke", Name="live")["FunctionVersion"] == "1"
    assert lam.get_function_url_config(FunctionName="dogbreed-invoke")["AuthType"] == "AWS_IAM"
    clients.lambda_.stubber.assert_no_pending_responses()  # provisioned concurrency 3 was put on `live`

    role_policy = clients.iam.get_role_policy(RoleName="dogbreed-lambda", PolicyName="dogbreed-lambda")
    invoke = role_policy["PolicyDocument"]["Statement"][0]
    assert invoke["Action"] == "sagemaker:InvokeEndpoint"
    assert invoke["Resource"] == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/dogbreed"
    assert clients.iam.list_attached_role_policies(RoleName="dogbreed-lambda")["AttachedPolicies"] == []
    # Both roles carry the project boundary: no inline policy can lift them above it.
    assert boundary_of(clients.iam, "dogbreed-lambda") == BOUNDARY
    assert boundary_of(clients.iam, "dogbreed-sagemaker") == BOUNDARY

    key = model_url.removeprefix(f"s3://{BUCKET}/")
    head = clients.s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert "ChecksumSHA256" in head
    remote_state = json.loads(
        clients.s3.get_object(Bucket=BUCKET, Key="deploys/dogbreed/deploy-state.json")["Body"].read()
    )
    assert remote_state == json.loads((run_dir / "deploy-state.json").read_text())
    assert remote_state["endpoint_config"] == endpoint["EndpointConfigName"]


def test_second_up_changes_nothing_and_down_leaves_nothing(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    cfg = deploy_env()
    pc = ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke")
    pc.absent()
    pc.put(3)
    assert orchestrator.up(cfg, str(run_dir), clients, package)
    before = snapshot(clients)
    state_before = (run_dir / "deploy-state.json").read_text()

    pc.present(3)
    assert orchestrator.up(cfg, str(run_dir), clients, package) == []
    assert snapshot(clients) == before
    assert (run_dir / "deploy-state.json").read_text() == state_before

    # Left by an interrupted update (config made, never cleaned), and another deploy's model that must survive.
    sm = clients.sagemaker.real
    container = {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/x/model.tar.gz"}
    role = f"arn:aws:iam::{ACCOUNT}:role/dogbreed-sagemaker"
    for model in ("dogbreed-00000000aa", "dogbreed-dev-00000000aa"):
        sm.create_model(ModelName=model, PrimaryContainer=container, ExecutionRoleArn=role)
    variant = {"VariantName": "AllTraffic", "ModelName": "dogbreed-00000000aa", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName="dogbreed-00000000bb", ProductionVariants=[variant])

    pc.present(3)
    pc.delete()
    removed = orchestrator.down(cfg, clients)
    assert "endpoint dogbreed" in removed and "function dogbreed-invoke" in removed
    clients.lambda_.stubber.assert_no_pending_responses()
    after = snapshot(clients)
    assert after == {
        "models": ["dogbreed-dev-00000000aa"], "configs": [], "endpoints": [], "targets": [], "policies": [],
        "functions": {}, "versions": {}, "roles": [],
    }  # fmt: skip
    keys = [o["Key"] for o in clients.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert len(keys) == 1 and keys[0].endswith("/model.tar.gz")  # artifacts stay unless asked; state is gone
    assert not (run_dir / "deploy-state.json").exists()

    pc.absent()
    assert orchestrator.down(cfg, clients) == []  # already gone is fine


def test_changed_instance_type_updates_the_endpoint_in_place(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    pc = ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke")
    pc.absent()
    pc.put(3)
    orchestrator.up(deploy_env(), str(run_dir), clients, package)
    sm = clients.sagemaker.real
    old_config = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]

    cfg = deploy_env("deploy.instance_type=ml.c5.xlarge", "deploy.rollout.mode=all_at_once")
    pc.present(3)
    clients.sagemaker.stubber.add_response(
        "update_endpoint",
        {"EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/dogbreed"},
        {"EndpointName": "dogbreed", "EndpointConfigName": ANY, "RetainAllVariantProperties": False},
    )
    changes = orchestrator.up(cfg, str(run_dir), clients, package)
    clients.sagemaker.stubber.assert_no_pending_responses()

    configs = [e["EndpointConfigName"] for e in sm.list_endpoint_configs()["EndpointConfigs"]]
    assert old_config not in configs and len(configs) == 1  # the old config is deleted after the update
    (new_config,) = configs
    variant = sm.describe_endpoint_config(EndpointConfigName=new_config)["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.c5.xlarge"
    assert f"updated endpoint dogbreed with {new_config}" in changes
    assert len(sm.list_models()["Models"]) == 1  # same model, still used by the new config
    # The scaling target was lifted for the instance-type change and put back afterwards.
    assert any(change.startswith("scalable target") for change in changes)
    targets = clients.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 3)]
    state = json.loads((run_dir / "deploy-state.json").read_text())
    assert state["endpoint_config"] == new_config


def test_serverless_up_makes_no_scaling_target_and_down_can_drop_artifacts(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    cfg = deploy_env("deploy.serverless.enabled=true", "deploy.lambda.provisioned_concurrency=0")
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    orchestrator.up(cfg, str(run_dir), clients, package)
    sm = clients.sagemaker.real
    config = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
    assert "InstanceType" not in variant
    assert clients.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == IMAGE

    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    orchestrator.down(deploy_env("deploy.serverless.enabled=true", "deploy.delete_artifacts=true"), clients)
    assert clients.s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) == []  # model and state both gone


def load_handler(handler_dir: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Lambda handler module imported afresh under the environment `up` gave the function."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("deployed_handler", handler_dir / "lambda_function.py")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    return handler


def test_realtime_up_sets_the_container_start_and_model_server_limits(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    cfg = deploy_env("deploy.lambda.provisioned_concurrency=0", "deploy.container.startup_health_check_timeout_s=900")
    orchestrator.up(cfg, str(run_dir), clients, package)
    sm = clients.sagemaker.real
    config = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 600
    env = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]["Environment"]
    # The Ray Serve app's settings (dogbreed.serving.ray_app) and its adapter's response timeout.
    assert env["DOGBREED_REPLICAS"] == "1" and env["RAYSERVE_BACKEND_TIMEOUT"] == "60"
    assert env["DOGBREED_THREADS"] == "2"  # the one replica has both vCPUs of the ml.m5.large
    assert (env["DOGBREED_MAX_BATCH"], env["DOGBREED_BATCH_WAIT_MS"]) == ("8", "5")
    assert "DOGBREED_COMPILE" not in env and "DOGBREED_MAX_BODY_BYTES" not in env  # compiled, 6 MB


def test_serverless_up_turns_compile_off_and_caps_bodies_at_4_mb_in_container_and_lambda(
    deploy_env: Callable[..., Any],
    clients: Clients,
    run_dir: Path,
    handler_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    cfg = deploy_env("deploy.serverless.enabled=true", "deploy.lambda.provisioned_concurrency=0")
    orchestrator.up(cfg, str(run_dir), clients, package)
    sm = clients.sagemaker.real
    config = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    assert "ContainerStartupHealthCheckTimeoutInSeconds" not in variant  # SageMaker refuses it on serverless
    env = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]["Environment"]
    assert env["DOGBREED_COMPILE"] == "0" and env["DOGBREED_MAX_BODY_BYTES"] == str(4 * 1024 * 1024)

    function = clients.lambda_.real.get_function_configuration(FunctionName="dogbreed-invoke")
    lambda_env = function["Environment"]["Variables"]
    assert lambda_env["DOGBREED_MAX_BODY_BYTES"] == str(4 * 1024 * 1024)
    # A cold start is waited out in one call, inside the function's own timeout.
    assert function["Timeout"] == 90 and float(lambda_env["ENDPOINT_READ_TIMEOUT_S"]) + 3 < function["Timeout"]
    handler = load_handler(handler_dir, lambda_env, monkeypatch)
    five_mb = {"body": base64.b64encode(b"\xff" * 5_000_000).decode(), "isBase64Encoded": True}
    five_mb["headers"] = {"content-type": "image/jpeg"}
    reply = handler.lambda_handler(five_mb, None)
    assert reply["statusCode"] == 413 and "4,194,304-byte endpoint limit" in json.loads(reply["body"])["message"]


def test_a_gpu_instance_gets_the_published_gpu_image_tag(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    cfg = deploy_env("deploy.instance_type=ml.g4dn.xlarge", "deploy.lambda.provisioned_concurrency=0")
    orchestrator.up(cfg, str(run_dir), clients, package)
    sm = clients.sagemaker.real
    config = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    image = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]["Image"]
    assert image == "763104351884.dkr.ecr.us-east-1.amazonaws.com/ray:serve-ml-sagemaker-cuda-v1.4"
    # Its CUDA 12.9 needs a newer NVIDIA driver than SageMaker's default GPU host has.
    assert variant["InferenceAmiVersion"] == "al2-ami-sagemaker-inference-gpu-3-1"


def test_weights_the_container_cannot_load_stop_up_before_anything_is_made(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    torch.save({"module.fc.weight": torch.zeros(2, 512)}, run_dir / "model.pth")  # a DDP wrapper's state_dict
    with pytest.raises(WeightsError, match=r"every key starts with 'module\.'"):
        orchestrator.up(deploy_env(), str(run_dir), clients)  # the real packaging step
    made = snapshot(clients)
    assert made["models"] == [] and made["functions"] == {} and made["roles"] == []


def test_a_newer_training_torch_than_the_image_serves_is_a_warning_naming_both(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def package_trained_with_newer_torch(run: str) -> Path:
        tarball = package(run)
        with tarfile.open(tarball) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        info = json.dumps({"trained_with": {"torch": "2.14.1+cu130"}}).encode()
        with tarfile.open(tarball, "w:gz") as tar:
            for member, data in [*members, (tarfile.TarInfo("serving.json"), info)]:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        return tarball

    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    cfg = deploy_env("deploy.lambda.provisioned_concurrency=0")
    orchestrator.up(cfg, str(run_dir), clients, package_trained_with_newer_torch)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "torch" in r.getMessage()]
    assert len(warnings) == 1
    assert "trained with torch 2.14.1+cu130" in warnings[0] and "serves torch 2.10.0" in warnings[0]


def test_lambda_handler_reaches_the_endpoint_with_the_deployed_environment(
    deploy_env: Callable[..., Any],
    clients: Clients,
    run_dir: Path,
    handler_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    orchestrator.up(deploy_env("deploy.lambda.provisioned_concurrency=0"), str(run_dir), clients, package)
    env = clients.lambda_.real.get_function_configuration(FunctionName="dogbreed-invoke")["Environment"]["Variables"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reply = {"predictions": [{"breed": "Afghan_hound", "index": 1, "probability": 0.9}]}
    queue = {"results": [{"Body": json.dumps(reply), "ContentType": "application/json"}]}
    request = urllib.request.Request(
        f"{clients.s3.meta.endpoint_url}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps(queue).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()

    spec = importlib.util.spec_from_file_location("deployed_handler", handler_dir / "lambda_function.py")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    response = handler.lambda_handler(COURSE_EVENT, None)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["predictions"][0]["breed"] == "Afghan_hound"


def test_cli_status_shows_each_resource_and_bad_overrides_fail_before_aws(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path, handler_dir: Path
) -> None:
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    cfg = deploy_env("deploy.lambda.provisioned_concurrency=0", "deploy.lambda.url_auth=null")
    orchestrator.up(cfg, str(run_dir), clients, package)
    overrides = [f"deploy.s3_uri=s3://{BUCKET}/deploys", "deploy.lambda.provisioned_concurrency=0"]
    cli = [sys.executable, "-m", "deploy"]
    status = subprocess.run([*cli, "status", *overrides], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines()]
    assert ["endpoint", "dogbreed", "InService"] in rows
    assert ["scalable", "target", "endpoint/dogbreed/variant/AllTraffic", "1..3"] in rows
    assert ["function", "dogbreed-invoke", "Active"] in rows
    assert ["role", "dogbreed-lambda", "present"] in rows
    assert ["function", "URL", "dogbreed-invoke", "none"] in rows  # url_auth=null made none

    bad = subprocess.run(
        [*cli, "up", str(run_dir), *overrides, "deploy.autoscaling.min_capacity=4"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "deploy.autoscaling.min_capacity=4 is above max_capacity=3" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_up_refused_by_aws_prints_one_line_naming_the_operation_and_code(
    deploy_env: Callable[..., Any],
    clients: Clients,
    run_dir: Path,
    handler_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deploy_env()  # the bucket
    denied = "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: iam:CreateRole"
    clients.iam = Routed(clients.iam, ("create_role",))
    clients.iam.stubber.add_client_error("create_role", "AccessDenied", denied, http_status_code=403)
    monkeypatch.setattr(orchestrator.Clients, "create", classmethod(lambda cls, region=None: clients))
    monkeypatch.setattr(orchestrator, "_default_package", lambda run, model: package(run))
    overrides = [f"deploy.s3_uri=s3://{BUCKET}/deploys", f"deploy.lambda.source_dir={handler_dir}"]

    with pytest.raises(SystemExit) as stop:
        deploy_main(["up", str(run_dir), *overrides])

    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: AWS refused CreateRole: AccessDenied: {denied} — check the credentials' permissions "
        "(`aws sts get-caller-identity` shows whose they are)"
    ]
    clients.iam.stubber.assert_no_pending_responses()


def test_retrained_model_updates_in_place_keeping_the_scaled_count(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    pc = ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke")
    pc.absent()
    pc.put(3)
    cfg = deploy_env("deploy.rollout.mode=all_at_once")  # as before canaries: no DeploymentConfig
    orchestrator.up(cfg, str(run_dir), clients, package)
    sm = clients.sagemaker.real
    (old_model,) = [m["ModelName"] for m in sm.list_models()["Models"]]

    (run_dir / "model.pth").write_bytes(b"better weights" * 100)
    pc.present(3)
    clients.sagemaker.stubber.add_response(
        "update_endpoint",
        {"EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/dogbreed"},
        {"EndpointName": "dogbreed", "EndpointConfigName": ANY, "RetainAllVariantProperties": True},
    )
    changes = orchestrator.up(cfg, str(run_dir), clients, package)
    clients.sagemaker.stubber.assert_no_pending_responses()

    (new_model,) = [m["ModelName"] for m in sm.list_models()["Models"]]
    assert new_model != old_model  # the old model went with its config
    assert f"deleted model {old_model}" in changes
    assert not any("scalable target" in change for change in changes)  # same instance type: scaling untouched
    artifacts = [o["Key"] for o in clients.s3.list_objects_v2(Bucket=BUCKET, Prefix="deploys/dogbreed/")["Contents"]]
    assert sum(key.endswith("model.tar.gz") for key in artifacts) == 2


def test_public_url_is_only_made_when_asked_and_warns(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pc = ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke")
    pc.absent()
    cfg = deploy_env("deploy.lambda.url_auth=NONE", "deploy.lambda.provisioned_concurrency=0")
    with caplog.at_level("WARNING", logger="deploy.cloud.lambda_"):
        orchestrator.up(cfg, str(run_dir), clients, package)
    assert "takes unsigned requests from anyone (deploy.lambda.url_auth=NONE)" in caplog.text
    lam = clients.lambda_.real
    assert lam.get_function_url_config(FunctionName="dogbreed-invoke")["AuthType"] == "NONE"
    policy = json.loads(lam.get_policy(FunctionName="dogbreed-invoke", Qualifier="live")["Policy"])
    actions = sorted(s["Action"] for s in policy["Statement"])
    assert actions == ["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"]

    pc.absent()
    orchestrator.up(deploy_env("deploy.lambda.provisioned_concurrency=0"), str(run_dir), clients, package)
    assert lam.get_function_url_config(FunctionName="dogbreed-invoke")["AuthType"] == "AWS_IAM"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName="dogbreed-invoke", Qualifier="live")


def test_repackaging_a_trained_run_gives_the_same_model_version(make_cfg: Callable[..., Any], tmp_path: Path) -> None:
    """`up` is a no-op only if packaging the same run twice yields the same content (timestamps aside)."""
    from deploy.model_archive import package_run
    from dogbreed.train.run import train
    from dogbreed.train.settings import run_settings

    cfg = make_cfg(["trainer.epochs=1"])
    train(run_settings(cfg))
    first = package_run(str(cfg.paths.output_dir), tmp_path / "first" / "model.tar.gz")
    time.sleep(1.1)  # two real `up`s are at least seconds apart: second-resolution stamps must not matter
    second = package_run(str(cfg.paths.output_dir), tmp_path / "second" / "model.tar.gz")
    assert orchestrator.content_version(first) == orchestrator.content_version(second)


def test_a_given_execution_role_is_used_and_never_deleted(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "sagemaker.amazonaws.com"}}]}  # fmt: skip
    role = clients.iam.create_role(RoleName="team-sagemaker", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    cfg = deploy_env(f"deploy.role_arn={role['Arn']}", "deploy.lambda.provisioned_concurrency=0")
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    orchestrator.up(cfg, str(run_dir), clients, package)
    (model,) = clients.sagemaker.real.list_models()["Models"]
    assert clients.sagemaker.real.describe_model(ModelName=model["ModelName"])["ExecutionRoleArn"] == role["Arn"]
    assert snapshot(clients)["roles"] == ["dogbreed-lambda"]  # no execution role of our own

    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    orchestrator.down(deploy_env("deploy.lambda.provisioned_concurrency=0"), clients)  # role_arn forgotten here
    assert clients.iam.get_role(RoleName="team-sagemaker")["Role"]["Arn"] == role["Arn"]


def test_missing_boundary_policy_is_one_line_with_the_set_up_command_and_nothing_is_made(
    aws: str,
    clients: Clients,
    run_dir: Path,
    handler_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boto3.client("s3").create_bucket(Bucket=BUCKET)  # but no boundary policy
    monkeypatch.setattr(orchestrator.Clients, "create", classmethod(lambda cls, region=None: clients))
    monkeypatch.setattr(orchestrator, "_default_package", lambda run, model: package(run))
    overrides = [f"deploy.s3_uri=s3://{BUCKET}/deploys", f"deploy.lambda.source_dir={handler_dir}"]

    with pytest.raises(SystemExit) as stop:
        deploy_main(["up", str(run_dir), *overrides])

    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: permissions boundary {BOUNDARY} does not exist (deploy.permissions_boundary); create it once for "
        f"your S3 prefix with python -m deploy setup s3://{BUCKET}/deploys"
    ]
    assert snapshot(clients)["roles"] == [] and snapshot(clients)["functions"] == {}
    assert clients.s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) == []  # nothing uploaded either

    # The set-up it names, for a layout of the user's own (no dogbreed/ folder), and `up` goes through.
    deploy_main(["setup", f"s3://{BUCKET}/models"])
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    models = [f"deploy.s3_uri=s3://{BUCKET}/models", f"deploy.lambda.source_dir={handler_dir}", "deploy.wait.poll_s=0"]
    deploy_main(["up", str(run_dir), *models, "deploy.lambda.provisioned_concurrency=0"])
    assert snapshot(clients)["endpoints"] == [("dogbreed", "InService")]
    assert boundary_of(clients.iam, "dogbreed-sagemaker") == BOUNDARY
    keys = [item["Key"] for item in clients.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys and all(key.startswith("models/dogbreed/") for key in keys)


def test_an_existing_role_gets_the_boundary_and_one_with_another_boundary_is_refused(
    deploy_env: Callable[..., Any], clients: Clients, run_dir: Path
) -> None:
    """A role an older `up` made has no boundary: it gets ours (that only narrows it). A foreign one is left alone."""
    lambda_service = {"Service": "lambda.amazonaws.com"}
    trust = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Principal": lambda_service, "Action": "sts:AssumeRole"}]}  # fmt: skip
    clients.iam.create_role(RoleName="dogbreed-lambda", AssumeRolePolicyDocument=json.dumps(trust))
    cfg = deploy_env("deploy.lambda.provisioned_concurrency=0")
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    orchestrator.up(cfg, str(run_dir), clients, package)
    assert boundary_of(clients.iam, "dogbreed-lambda") == BOUNDARY

    wider = create_boundary("wider-boundary")
    clients.iam.put_role_permissions_boundary(RoleName="dogbreed-lambda", PermissionsBoundary=wider)
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    with pytest.raises(DeployError, match=r"role dogbreed-lambda has permissions boundary .*wider-boundary"):
        orchestrator.up(cfg, str(run_dir), clients, package)
    assert boundary_of(clients.iam, "dogbreed-lambda") == wider


def test_another_boundary_name_is_configurable_and_checked(deploy_env: Callable[..., Any]) -> None:
    assert deploy_env().deploy.permissions_boundary == "dogbreed-boundary"
    assert deploy_env("deploy.permissions_boundary=team-boundary").deploy.permissions_boundary == "team-boundary"
    with pytest.raises(DeployError, match=r"deploy\.permissions_boundary"):
        deploy_env("deploy.permissions_boundary=no/slashes")


def deployed_model(sm: Any, endpoint: str) -> dict[str, Any]:
    config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    return sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]


def test_default_up_serves_from_the_ray_serve_image_and_torchserve_is_kept_with_a_warning(
    make_cfg: Callable[..., Any],
    deploy_env: Callable[..., Any],
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dogbreed.train.run import train
    from dogbreed.train.settings import run_settings

    trained = make_cfg(["trainer.epochs=1"])
    train(run_settings(trained))
    run = str(trained.paths.output_dir)
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    with caplog.at_level("WARNING"):
        orchestrator.up(deploy_env("deploy.lambda.provisioned_concurrency=0"), run, clients)
    assert "end of patch" not in caplog.text  # the Ray Serve image is patched
    container = deployed_model(clients.sagemaker.real, "dogbreed")
    assert container["Image"] == IMAGE
    assert {"DOGBREED_REPLICAS", "DOGBREED_THREADS", "DOGBREED_MAX_BATCH"} <= container["Environment"].keys()
    bucket, key = container["ModelDataUrl"].removeprefix("s3://").split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = set(tar.getnames())
        config = tar.extractfile("config.yaml").read().decode()  # type: ignore[union-attr]
    # What the Ray Serve container runs: config.yaml naming the app at route `/`, its code under code/.
    assert "import_path: dogbreed.serving.ray_app:app" in config and "route_prefix: /" in config
    assert {"code/dogbreed/serving/ray_app.py", "code/dogbreed/serving/handler.py", "model.pth"} <= names

    caplog.clear()
    ProvisionedConcurrency(clients.lambda_, "legacy-invoke").absent()
    legacy = deploy_env("deploy.name=legacy", f"deploy.s3_uri=s3://{BUCKET}/dogbreed/deploys",
                        "deploy.image.backend=torchserve", "deploy.serverless.enabled=true",
                        "deploy.lambda.provisioned_concurrency=0")  # fmt: skip
    with caplog.at_level("WARNING"):
        orchestrator.up(legacy, run, clients)
    container = deployed_model(clients.sagemaker.real, "legacy")
    assert container["Image"] == TORCHSERVE_IMAGE  # serverless: the CPU image
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["DOGBREED_MAX_BODY_BYTES"] == str(4 * 1024 * 1024)
    warnings = [line for line in caplog.text.splitlines() if "end of patch" in line]
    assert len(warnings) == 1 and "(2026-06-30" in warnings[0] and "deploy.image.backend=rayserve" in warnings[0]


def test_a_hosting_quota_below_the_scaling_maximum_stops_up_before_anything_is_made(
    deploy_env: Callable[..., Any],
    clients: Clients,
    gaps: Gaps,
    run_dir: Path,
    handler_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A new account: 0 instances of ml.g5.xlarge for endpoints.
    gaps.applied[("sagemaker", "L-1928E07B")] = 0
    monkeypatch.setattr(orchestrator.Clients, "create", classmethod(lambda cls, region=None: clients))
    monkeypatch.setattr(orchestrator, "_default_package", lambda run, model: package(run))
    overrides = [f"deploy.s3_uri=s3://{BUCKET}/deploys", f"deploy.lambda.source_dir={handler_dir}"]
    with pytest.raises(SystemExit) as stop:
        deploy_main(["up", str(run_dir), *overrides, "deploy.instance_type=ml.g5.xlarge"])
    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: quota L-1928E07B 'ml.g5.xlarge for endpoint usage' is 0 in us-east-1, "
        "deploy.instance_type=ml.g5.xlarge with deploy.autoscaling.max_capacity=3 needs 3; ask for more: "
        "aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code L-1928E07B "
        "--desired-value 3 --region us-east-1"
    ]
    made = snapshot(clients)
    assert (made["models"], made["configs"], made["roles"], made["functions"]) == ([], [], [], {})
    assert clients.s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) == []


def test_serverless_checks_the_account_s_concurrency_and_a_denied_call_stops_up(
    deploy_env: Callable[..., Any], clients: Clients, gaps: Gaps, run_dir: Path
) -> None:
    gaps.applied[("sagemaker", "L-96300102")] = 4
    with pytest.raises(
        DogbreedError, match=r"^quota L-96300102 .* is 4 in us-east-1, deploy.serverless.max_concurrency needs 5;"
    ):
        orchestrator.up(deploy_env("deploy.serverless.enabled=true"), str(run_dir), clients, package)
    gaps.reset()
    gaps.denied["lambda:CreateFunction"] = "implicitDeny"
    with pytest.raises(DogbreedError, match=r"^AWS would refuse lambda:CreateFunction on .*:function:dogbreed-invoke "):
        orchestrator.up(deploy_env(), str(run_dir), clients, package)
    assert snapshot(clients)["roles"] == [] and snapshot(clients)["models"] == []


def test_skip_preflight_reads_no_quota_and_says_what_it_leaves_unchecked(
    deploy_env: Callable[..., Any], clients: Clients, gaps: Gaps, run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gaps.refused.update({"GetServiceQuota", "GetAWSDefaultServiceQuota", "ListAWSDefaultServiceQuotas"})
    with pytest.raises(DogbreedError, match=r"may not read Service Quotas .* or rerun with --skip-preflight"):
        orchestrator.up(deploy_env(), str(run_dir), clients, package)
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    with caplog.at_level(logging.WARNING):
        orchestrator.up(
            deploy_env("deploy.preflight=false", "deploy.lambda.provisioned_concurrency=0"),
            str(run_dir),
            clients,
            package,
        )
    assert "preflight skipped (deploy.preflight=false): quotas and permissions are not checked" in caplog.text
    assert snapshot(clients)["endpoints"] == [("dogbreed", "InService")]
