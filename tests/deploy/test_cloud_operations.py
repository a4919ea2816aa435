"""Operating the endpoint against moto: registry, deploying a version, canary rollout, alarms, rollback.

Moto has the model registry (except deletes, which `down` never makes) and CloudWatch alarms;
`update_endpoint` goes to a Stubber that checks its DeploymentConfig, then lands in moto.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY

from deploy.cli import main as deploy_main
from deploy.cloud import operating, orchestrator, releases
from deploy.cloud.config import load_config
from deploy.cloud.errors import DeployError
from deploy.cloud.orchestrator import Clients
from tests.deploy.test_cloud_flow import BUCKET, PC_OPS, ProvisionedConcurrency, Routed, create_boundary, package

ENDPOINT_ALARMS = ["dogbreed-5xx", "dogbreed-latency-p99", "dogbreed-4xx-rate"]
ALARMS = [*ENDPOINT_ALARMS, "dogbreed-invoke-errors", "dogbreed-invoke-throttles"]
ENDPOINT_ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dogbreed"


@pytest.fixture
def deploy_env(aws: str) -> Callable[..., Any]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    create_boundary()
    handler_dir = Path(__file__).resolve().parents[2] / "deploy" / "lambda_function"

    def make(*overrides: str) -> Any:
        base = [f"deploy.s3_uri=s3://{BUCKET}/deploys", f"deploy.lambda.source_dir={handler_dir}"]
        return load_config([*base, "deploy.wait.poll_s=0", "deploy.lambda.provisioned_concurrency=0", *overrides])

    return make


@pytest.fixture
def clients(aws: str) -> Clients:
    made = Clients.create()
    made.lambda_ = Routed(made.lambda_, PC_OPS)
    made.sagemaker = Routed(made.sagemaker, ("update_endpoint",))
    return made


def finished_run(root: Path, weights: bytes, test_top1: float) -> Path:
    """A run directory as training leaves it: weights, labels, metrics and its config."""
    root.mkdir(parents=True)
    (root / "model.pth").write_bytes(weights * 100)
    (root / "labels.json").write_text(json.dumps({"0": "Affenpinscher", "1": "Afghan_hound"}))
    metrics = {
        "best_epoch": 3,
        "valid": {"top1": test_top1 + 0.01, "top5": 0.99},
        "test": {"top1": test_top1, "top5": 0.98},
        "versions": {"dogbreed": "0.1.0", "torch": "2.6.0"},
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    (root / ".hydra").mkdir()
    (root / ".hydra" / "config.yaml").write_text(f"model:\n  arch: resnet50\nseed: {test_top1}\n")
    return root


def hand_to_cli(clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds its own clients; give it these (moto, with the stubbed operations)."""
    monkeypatch.setattr(orchestrator.Clients, "create", classmethod(lambda cls, region=None: clients))


def up_quietly(cfg: Any, clients: Clients, source: str) -> list[str]:
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    release = releases.resolve(cfg, source, clients)
    return orchestrator.up(cfg, release.run if release else source, clients, package, release)


def live_model_data(clients: Clients) -> str:
    sm = clients.sagemaker.real
    config = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    model = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]["ModelName"]
    return str(sm.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"])


def expect_canary_update(clients: Clients, canary: bool = True) -> None:
    """The update a two-instance fleet gets; a one-instance fleet cannot have a canary of at most half."""
    routing: dict[str, Any] = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300}
    if canary:
        size = {"Type": "CAPACITY_PERCENT", "Value": 10}
        routing = {"Type": "CANARY", "CanarySize": size, "WaitIntervalInSeconds": 300}
    deployment = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": 300,
            "MaximumExecutionTimeoutInSeconds": 2400,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in ENDPOINT_ALARMS]},
    }
    clients.sagemaker.stubber.add_response(
        "update_endpoint",
        {"EndpointArn": ENDPOINT_ARN},
        {
            "EndpointName": "dogbreed",
            "EndpointConfigName": ANY,
            "RetainAllVariantProperties": True,
            "DeploymentConfig": deployment,
        },
    )


def test_register_records_the_model_its_metrics_and_the_training_config(
    deploy_env: Callable[..., Any],
    clients: Clients,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = finished_run(tmp_path / "run", b"weights", 0.91)
    cfg = deploy_env()
    registered, changes = releases.register(cfg, str(run), clients, package)
    assert "created model package group dogbreed" in changes
    assert registered["ModelPackageVersion"] == 1 and registered["ModelApprovalStatus"] == "PendingManualApproval"

    container = registered["InferenceSpecification"]["Containers"][0]
    model_data = container["ModelDataUrl"]
    assert model_data.startswith(f"s3://{BUCKET}/deploys/dogbreed/") and model_data.endswith("/model.tar.gz")
    metrics_uri = registered["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    assert metrics_uri == model_data.removesuffix("model.tar.gz") + "metrics.json"
    key = metrics_uri.removeprefix(f"s3://{BUCKET}/")
    uploaded = json.loads(clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert uploaded == json.loads((run / "metrics.json").read_text())
    meta = registered["CustomerMetadataProperties"]
    assert (meta["test_top1"], meta["valid_top1"], meta["test_top5"]) == ("0.9100", "0.9200", "0.9800")
    assert meta["run"] == str(run) and meta["version_torch"] == "2.6.0" and len(meta["config_sha256"]) == 64

    again, changes = releases.register(cfg, str(run), clients, package)
    assert again["ModelPackageVersion"] == 1 and changes == []  # the same model is not registered twice

    hand_to_cli(clients, monkeypatch)
    assert deploy_main(["models", f"deploy.s3_uri=s3://{BUCKET}/deploys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["version", "status", "valid_top1", "test_top1", "test_top5"]
    assert lines[1].split()[:5] == ["1", "PendingManualApproval", "0.9200", "0.9100", "0.9800"]


def test_up_deploys_the_latest_approved_version_with_alarms_and_down_removes_them(
    deploy_env: Callable[..., Any], clients: Clients, tmp_path: Path
) -> None:
    cfg = deploy_env()
    first, _ = releases.register(cfg, str(finished_run(tmp_path / "a", b"first", 0.8)), clients, package)
    second, _ = releases.register(cfg, str(finished_run(tmp_path / "b", b"second", 0.9)), clients, package)
    with pytest.raises(DeployError, match="no approved version in model package group dogbreed"):
        releases.resolve(cfg, "latest-approved", clients)
    with pytest.raises(DeployError, match="version 2 is PendingManualApproval; approve it first"):
        releases.resolve(cfg, "2", clients)
    releases.approve(cfg, "1", clients)

    changes = up_quietly(cfg, clients, "latest-approved")
    assert live_model_data(clients) == first["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert not any(c.startswith("uploaded") for c in changes)  # the registered tarball, not a new one
    assert [f"alarm {name}" for name in ALARMS] == [c for c in changes if c.startswith("alarm ")]
    cw = clients.cloudwatch
    described = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix="dogbreed")["MetricAlarms"]}
    assert sorted(described) == sorted(ALARMS)
    assert described["dogbreed-latency-p99"]["ExtendedStatistic"] == "p99"
    assert described["dogbreed-latency-p99"]["Threshold"] == 2_000_000  # 2000 ms, in microseconds
    assert {d["Name"]: d["Value"] for d in described["dogbreed-5xx"]["Dimensions"]} == {
        "EndpointName": "dogbreed", "VariantName": "AllTraffic",
    }  # fmt: skip
    assert described["dogbreed-4xx-rate"]["Threshold"] == 0.2
    state = json.loads(clients.s3.get_object(Bucket=BUCKET, Key="deploys/dogbreed/deploy-state.json")["Body"].read())
    assert (state["model_version"], state["model_package"]) == (1, first["ModelPackageArn"])
    assert up_quietly(cfg, clients, "latest-approved") == []  # alarms unchanged: nothing to report

    rows = orchestrator.status(cfg, clients)
    assert ("live model", "version 1", state["model_data"]) in rows
    assert [(kind, name) for kind, name, _ in rows if kind == "alarm"] == [("alarm", name) for name in ALARMS]

    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    removed = orchestrator.down(cfg, clients)
    assert all(f"alarm {name}" in removed for name in ALARMS)
    assert cw.describe_alarms(AlarmNamePrefix="dogbreed")["MetricAlarms"] == []
    assert second["ModelPackageArn"]  # the registry outlives the deploy


def test_a_new_version_rolls_out_as_a_canary_and_rollback_returns_to_the_earlier_one(
    deploy_env: Callable[..., Any],
    clients: Clients,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = deploy_env("deploy.registry.approval=Approved", "deploy.instance_count=2")
    first, _ = releases.register(cfg, str(finished_run(tmp_path / "a", b"first", 0.8)), clients, package)
    second, _ = releases.register(cfg, str(finished_run(tmp_path / "b", b"second", 0.9)), clients, package)
    up_quietly(cfg, clients, "1")
    config_one = clients.sagemaker.real.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]

    expect_canary_update(clients)
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    hand_to_cli(clients, monkeypatch)
    overrides = [
        f"deploy.s3_uri=s3://{BUCKET}/deploys",
        "deploy.wait.poll_s=0",
        "deploy.lambda.provisioned_concurrency=0",
        f"deploy.lambda.source_dir={cfg.deploy['lambda'].source_dir}",
        "deploy.instance_count=2",
    ]
    assert deploy_main(["up", "--model", "latest-approved", *overrides]) == 0
    clients.sagemaker.stubber.assert_no_pending_responses()  # the update carried the canary and the alarms
    assert live_model_data(clients) == second["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]

    expect_canary_update(clients)
    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    assert deploy_main(["rollback", *overrides]) == 0
    assert "rolling back to version 1" in capsys.readouterr().out
    first_data = first["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert live_model_data(clients) == first_data
    endpoint_config = clients.sagemaker.real.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    assert endpoint_config == config_one  # same model and variant: the very config version 1 had
    state = json.loads(clients.s3.get_object(Bucket=BUCKET, Key="deploys/dogbreed/deploy-state.json")["Body"].read())
    assert (state["model_version"], state["model_data"], state["endpoint_config"]) == (1, first_data, config_one)
    assert state["previous"]["model_version"] == 2  # a second rollback goes forward again


def test_an_update_rolled_back_by_an_alarm_fails_and_keeps_the_old_config(
    deploy_env: Callable[..., Any], clients: Clients, tmp_path: Path
) -> None:
    cfg = deploy_env("deploy.registry.approval=Approved")
    releases.register(cfg, str(finished_run(tmp_path / "a", b"first", 0.8)), clients, package)
    releases.register(cfg, str(finished_run(tmp_path / "b", b"second", 0.9)), clients, package)
    up_quietly(cfg, clients, "1")
    sm = clients.sagemaker.real
    old_config = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    clients.cloudwatch.set_alarm_state(AlarmName="dogbreed-5xx", StateValue="ALARM", StateReason="canary 5XX")

    expect_canary_update(clients, canary=False)  # one instance: all at once, baked, with the same alarms
    clients.sagemaker.land_updates = False  # SageMaker moved the traffic back to the old fleet
    with pytest.raises(DeployError, match=r"was rolled back \(alarm dogbreed-5xx fired\); it still serves "):
        up_quietly(cfg, clients, "2")
    assert sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"] == old_config
    assert sm.describe_endpoint_config(EndpointConfigName=old_config)  # not deleted as if the update had landed
    state = json.loads(clients.s3.get_object(Bucket=BUCKET, Key="deploys/dogbreed/deploy-state.json")["Body"].read())
    assert state["model_version"] == 1


def test_serverless_and_all_at_once_updates_send_no_deployment_config() -> None:
    def deployment(override: str, instances: int = 4) -> dict[str, Any] | None:
        d = load_config(["deploy.s3_uri=s3://b/p", override]).deploy
        return operating.deployment(d, ENDPOINT_ALARMS, instances)

    assert deployment("deploy.serverless.enabled=true") is None
    assert deployment("deploy.rollout.mode=all_at_once") is None
    canary = deployment("deploy.rollout.canary_percent=50")
    assert canary is not None
    assert canary["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["CanarySize"]["Value"] == 50
    one = deployment("deploy.rollout.canary_percent=50", instances=1)
    assert one is not None and one["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert one["AutoRollbackConfiguration"] == canary["AutoRollbackConfiguration"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("deploy.rollout.canary_percent=60", "deploy.rollout.canary_percent=60: 1 to 50"),
        ("deploy.rollout.mode=linear", "deploy.rollout.mode='linear': canary or all_at_once"),
        ("deploy.alarms.enabled=false", "deploy.rollout.mode=canary rolls back on the alarms"),
        ("deploy.rollout.wait_s=1000", "deploy.rollout.wait_s=1000: twice that"),
        ("deploy.registry.approval=Yes", "deploy.registry.approval='Yes': one of PendingManualApproval, Approved"),
        ("deploy.alarms.email=nobody", "deploy.alarms.email='nobody': an e-mail address"),
        ("deploy.alarms.error_4xx_rate=0", "deploy.alarms.error_4xx_rate=0"),
        ("deploy.data_capture.percent=101", "deploy.data_capture.percent=101: 0 (off) to 100"),
        ("deploy.data_capture.percent=5 deploy.serverless.enabled=true", "serverless endpoints cannot capture data"),
    ],
)
def test_operating_settings_are_refused_before_any_aws_call(override: str, message: str) -> None:
    with pytest.raises(DeployError) as refused:
        load_config(["deploy.s3_uri=s3://b/p", *override.split()])
    assert message in str(refused.value)


def test_operating_defaults_compose() -> None:
    d = load_config(["deploy.s3_uri=s3://b/p"]).deploy
    assert (d.registry.approval, d.rollout.mode, d.rollout.canary_percent, d.rollout.wait_s) == (
        "PendingManualApproval", "canary", 10, 300,
    )  # fmt: skip
    assert (d.alarms.enabled, d.alarms.latency_p99_ms, d.alarms.error_4xx_rate, d.alarms.email) == (
        True, 2000, 0.2, None,
    )  # fmt: skip
    assert d.data_capture.percent == 0
    load_config(["deploy.s3_uri=s3://b/p", "deploy.alarms.enabled=false", "deploy.rollout.mode=all_at_once"])


def test_an_alarm_email_makes_a_topic_the_alarms_notify_and_down_deletes_it(
    deploy_env: Callable[..., Any], clients: Clients, tmp_path: Path
) -> None:
    cfg = deploy_env("deploy.alarms.email=oncall@example.com")
    changes = up_quietly(cfg, clients, str(finished_run(tmp_path / "a", b"first", 0.8)))
    assert "topic dogbreed-alarms: confirm the e-mail AWS sent to oncall@example.com" in changes
    (topic,) = [t["TopicArn"] for t in clients.sns.list_topics()["Topics"]]
    assert topic.endswith(":dogbreed-alarms")
    (subscription,) = clients.sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", "oncall@example.com")
    alarm = clients.cloudwatch.describe_alarms(AlarmNames=["dogbreed-5xx"])["MetricAlarms"][0]
    assert alarm["AlarmActions"] == [topic]

    ProvisionedConcurrency(clients.lambda_, "dogbreed-invoke").absent()
    assert "topic dogbreed-alarms" in orchestrator.down(cfg, clients)
    assert clients.sns.list_topics()["Topics"] == []


def test_up_takes_a_run_or_a_model_not_both_and_not_neither(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["up"], "give a run to deploy, or --model latest-approved|VERSION|RUN"),
        (["up", "outputs/run", "--model", "2"], "give a run (outputs/run) or --model 2, not both"),
    ):
        with pytest.raises(SystemExit) as stop:
            deploy_main(argv)
        assert stop.value.code == 1
        assert capsys.readouterr().err == f"error: {message}\n"


def test_data_capture_samples_to_the_capture_prefix_and_the_role_may_write_only_there(
    deploy_env: Callable[..., Any], clients: Clients, tmp_path: Path
) -> None:
    run = str(finished_run(tmp_path / "a", b"first", 0.8))
    up_quietly(deploy_env(), clients, run)
    sm = clients.sagemaker.real
    plain = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    assert not sm.describe_endpoint_config(EndpointConfigName=plain).get("DataCaptureConfig")  # moto: {}

    clients.sagemaker.stubber.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN}, None)
    up_quietly(deploy_env("deploy.data_capture.percent=20"), clients, run)
    captured = sm.describe_endpoint(EndpointName="dogbreed")["EndpointConfigName"]
    assert captured != plain  # a capture setting is a new endpoint config
    capture = sm.describe_endpoint_config(EndpointConfigName=captured)["DataCaptureConfig"]
    assert capture["InitialSamplingPercentage"] == 20
    assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/deploys/dogbreed/capture"
    assert [o["CaptureMode"] for o in capture["CaptureOptions"]] == ["Input", "Output"]
    policy = clients.iam.get_role_policy(RoleName="dogbreed-sagemaker", PolicyName="dogbreed-sagemaker")
    (write,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Sid"] == "WriteCapture"]
    assert (write["Action"], write["Resource"]) == ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/deploys/dogbreed/capture/*")
