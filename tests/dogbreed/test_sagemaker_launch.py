"""`python train.py -m hydra/launcher=sagemaker ...` against the moto server: the jobs, the bundle, the sweep.

Moto's training jobs do not run; they are `Completed` at once. Where a test needs a job's output,
moto's backend is wrapped in this process (the server runs here) so that creating a job also
writes what SageMaker would: the job's model.tar.gz with the run's metrics.json, and its log.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from dogbreed.sagemaker import needs
from dogbreed.sagemaker.launch import CHANNEL_ROOT, JOB_REQUIREMENTS, Clients, prepare
from dogbreed.sagemaker.settings import LaunchError, LaunchSettings
from dogbreed.storage.location import S3Location
from tests.helpers.aws_gaps import Gaps
from tests.helpers.config import REPO

BUCKET = "bkt"
S3_URI = f"s3://{BUCKET}/dogbreed"
DATA_URI = f"s3://{BUCKET}/dogbreed/data/dogImages"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cpu-amzn2023-sagemaker"


@pytest.fixture
def project(aws: str) -> str:
    """The bucket and the permissions boundary a first launch needs."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boundary = (REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text()
    boto3.client("iam").create_policy(PolicyName="dogbreed-boundary", PolicyDocument=boundary)
    return aws


def launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            sys.executable, "train.py", "-m", "hydra/launcher=sagemaker", f"hydra.launcher.s3_uri={S3_URI}",
            "hydra.launcher.poll_s=0", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides,
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def jobs() -> list[dict[str, Any]]:
    sagemaker = boto3.client("sagemaker")
    names = [job["TrainingJobName"] for job in sagemaker.list_training_jobs()["TrainingJobSummaries"]]
    return [sagemaker.describe_training_job(TrainingJobName=name) for name in sorted(names)]


def bundles() -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="dogbreed/code/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_a_grid_creates_one_job_per_value_and_spot_and_multi_instance_jobs_resume_and_spread(
    project: str, tmp_path: Path
) -> None:
    first = launch(
        tmp_path, "hydra.launcher.wait=false", f"data.root={DATA_URI}", "optim.lr=0.001,0.0003", "debug=fast"
    )
    assert "end of patch" not in first.stdout + first.stderr  # the default image is inside its support window
    grid = jobs()
    assert len(grid) == 2
    role = boto3.client("iam").get_role(RoleName="dogbreed-sagemaker-training")["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"].endswith(":policy/dogbreed-boundary")
    (bundle,) = bundles()
    for job, lr in zip(grid, ("0.001", "0.0003"), strict=True):
        assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
        assert job["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
        assert job["RoleArn"] == role["Arn"]
        assert job["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
        hyper = {key: json.loads(value) for key, value in job["HyperParameters"].items()}
        assert hyper["optim.lr"] == lr and hyper["debug"] == "fast" and hyper["data.root"] == CHANNEL_ROOT
        assert hyper["sagemaker_program"] == "train.py"
        assert hyper["sagemaker_submit_directory"] == f"s3://{BUCKET}/{bundle}"
        assert "sagemaker_torch_distributed_enabled" not in hyper and "trainer.resume" not in hyper
        (channel,) = job["InputDataConfig"]
        assert channel["ChannelName"] == "training"
        assert channel["DataSource"]["S3DataSource"]["S3Uri"] == DATA_URI + "/"
        assert job["OutputDataConfig"]["S3OutputPath"] == f"{S3_URI}/jobs"
        assert not job.get("EnableManagedSpotTraining")
        tags = boto3.client("sagemaker").list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
        assert {"Key": "dogbreed:name", "Value": "dogbreed"} in tags

    launch(
        tmp_path, "hydra.launcher.wait=false", "hydra.launcher.spot=true", "hydra.launcher.instance_count=2",
        "hydra.launcher.instance_type=ml.g5.xlarge", "hydra.launcher.max_runtime_s=3600", "trainer.epochs=3",
    )  # fmt: skip
    (spot,) = [job for job in jobs() if job["TrainingJobName"] not in {j["TrainingJobName"] for j in grid}]
    assert spot["EnableManagedSpotTraining"] is True
    assert spot["CheckpointConfig"]["S3Uri"] == f"{S3_URI}/checkpoints/{spot['TrainingJobName']}"
    stopping = spot["StoppingCondition"]
    assert stopping["MaxRuntimeInSeconds"] == 3600 and stopping["MaxWaitTimeInSeconds"] >= 3600
    assert spot["ResourceConfig"]["InstanceCount"] == 2
    assert spot["AlgorithmSpecification"]["TrainingImage"].endswith(":2.13.0-cu133-amzn2023-sagemaker")
    hyper = {key: json.loads(value) for key, value in spot["HyperParameters"].items()}
    assert hyper["sagemaker_torch_distributed_enabled"] is True
    assert hyper["trainer.resume"] == "auto" and hyper["paths.output_root"] == "/opt/ml/checkpoints"
    assert "InputDataConfig" not in spot  # data.root is not on S3: the job prepares it itself
    assert bundles() == [bundle]  # an unchanged tree: no second upload


def test_the_bundle_holds_the_training_project_and_what_the_image_lacks(project: str, tmp_path: Path) -> None:
    launch(tmp_path, "hydra.launcher.wait=false")
    (key,) = bundles()
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode().split()  # type: ignore[union-attr]
    assert {"train.py", "conf/train.yaml", "dogbreed/train/run.py", "dogbreed/serving/handler.py"} <= names
    assert not any(name.startswith(("deploy/", "ami/", "tests/", "hydra_plugins/")) for name in names)
    assert any(line.startswith("hydra-core") for line in requirements)
    assert not any(line.startswith(("torch", "torchvision")) for line in requirements)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert all(f'"{line}"' in pyproject for line in JOB_REQUIREMENTS)  # the same specifiers as the project


@pytest.fixture
def sagemaker_runs_jobs(project: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, float]]:
    """Creating a job also writes its model.tar.gz (metrics.json: valid top-1 = 1 - 10 * lr) and a log line."""
    from moto.sagemaker.models import SageMakerModelBackend

    objectives: dict[str, float] = {}
    create = SageMakerModelBackend.create_training_job

    def create_and_run(self: Any, training_job_name: str, hyper_parameters: dict[str, str], *args: Any, **kw: Any):
        job = create(self, training_job_name, hyper_parameters, *args, **kw)
        top1 = 1 - 10 * float(json.loads(hyper_parameters["optim.lr"]))
        objectives[training_job_name] = top1
        metrics = {"valid": {"top1": top1}, "test": {"top1": top1}, "best_epoch": 1, "seconds": 1.0}
        write_model_tarball(job.model_artifacts["S3ModelArtifacts"], metrics)
        logs = boto3.client("logs")
        group, stream = "/aws/sagemaker/TrainingJobs", f"{training_job_name}/algo-1-1700000000"
        if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
            logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        message = f"epoch 1/1  train loss 1.0000 acc 0.500 | valid loss 0.9000 top1 {top1:.3f} top5 1.000"
        event = {"timestamp": int(time.time() * 1000), "message": message}
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[event],
        )
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_and_run)
    yield objectives


def write_model_tarball(uri: str, metrics: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("model.pth", b"\0" * 64), ("metrics.json", json.dumps(metrics).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def test_an_optuna_sweep_optimises_over_parallel_jobs_and_writes_its_summary(
    sagemaker_runs_jobs: dict[str, float], tmp_path: Path
) -> None:
    result = launch(
        tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.storage=null", "hydra.launcher.max_parallel=2",
    )  # fmt: skip
    assert len(sagemaker_runs_jobs) == 4
    best = max(sagemaker_runs_jobs.values())
    sweep = tmp_path / "sweep"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best)
    best_job = max(sagemaker_runs_jobs, key=sagemaker_runs_jobs.__getitem__)
    best_trial = int(best_job.rsplit("-", 1)[1])
    summary = (sweep / "sweep_summary.md").read_text()
    assert f"Best trial: **{best_trial}**" in summary and "optim.lr=" in summary
    assert f"[{best_job}] epoch 1/1" in result.stdout  # the job's log, streamed
    for job in jobs():  # the search itself ran here: no job runs a sweep of its own
        assert "hparams_search" not in job["HyperParameters"]


def test_a_failed_job_reports_sagemakers_reason_and_its_log(project: str, tmp_path: Path, monkeypatch) -> None:
    from moto.sagemaker.models import SageMakerModelBackend

    create = SageMakerModelBackend.create_training_job

    def create_and_fail(self: Any, *args: Any, **kw: Any):
        job = create(self, *args, **kw)
        job.training_job_status = "Failed"
        job.failure_reason = "AlgorithmError: ExecuteUserScriptError: exit code 1"
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_and_fail)
    result = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=sagemaker", f"hydra.launcher.s3_uri={S3_URI}",
         "hydra.launcher.poll_s=0", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    (job,) = jobs()
    assert f"training job {job['TrainingJobName']} failed: AlgorithmError: ExecuteUserScriptError" in result.stderr
    assert f"/aws/sagemaker/TrainingJobs streams {job['TrainingJobName']}/*" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_launcher_settings_are_refused_before_anything_is_created(project: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=sagemaker", "hydra.launcher.s3_uri=bucket/prefix",
         "hydra.launcher.spot=true", "hydra.launcher.max_wait_s=10", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: hydra.launcher.s3_uri must look like s3://bucket/prefix, got 'bucket/prefix'"
    )
    assert "Traceback" not in result.stderr
    assert jobs() == [] and bundles() == []


def test_a_training_quota_below_the_instances_asked_stops_the_sweep_before_anything_is_made(
    project: str, gaps: Gaps, tmp_path: Path
) -> None:
    gaps.applied[("sagemaker", "L-CCE2AFA6")] = 1  # ml.m5.xlarge for training job usage
    result = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=sagemaker", f"hydra.launcher.s3_uri={S3_URI}",
         "hydra.launcher.instance_count=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: quota L-CCE2AFA6 'ml.m5.xlarge for training job usage' is 1 in us-east-1, "
        "hydra.launcher.instance_type=ml.m5.xlarge with instance_count=2 and 1 job(s) at once needs 2; ask for more: "
        "aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code L-CCE2AFA6 "
        "--desired-value 2 --region us-east-1"
    )
    assert jobs() == [] and bundles() == [] and boto3.client("iam").list_roles()["Roles"] == []


def test_spot_sweeps_count_the_jobs_running_at_once_against_the_spot_quota() -> None:
    spot = LaunchSettings(s3_uri=S3_URI, spot=True, instance_count=2, max_parallel=3)
    (per_type, total, per_job) = needs.needs(spot, jobs=5)
    assert (per_type.name, per_type.value) == ("ml.m5.xlarge for spot training job usage", 6)
    assert (total.name, total.value) == ("Number of instances across all spot training jobs", 6)
    assert (per_job.name, per_job.value) == ("Maximum number of instances per spot training job", 2)


def test_a_prefix_the_boundary_denies_is_refused_before_anything_is_uploaded(project: str) -> None:
    # The role the launcher creates may only reach the prefixes the account's boundary names: the job
    # would start, bill, and fail at its first S3 call.
    clients = Clients.create(None)
    outside = LaunchSettings(s3_uri="s3://bkt/runs")
    with pytest.raises(LaunchError, match=r"^hydra.launcher.s3_uri: s3://bkt/runs is outside .* setup s3://bkt/runs$"):
        prepare(outside, clients, channels=[])
    inside = LaunchSettings(s3_uri=S3_URI)
    with pytest.raises(LaunchError, match=r"^data.root: s3://bkt/dogImages is outside"):
        prepare(inside, clients, channels=[S3Location("bkt", "dogImages")])
    assert bundles() == [] and boto3.client("iam").list_roles()["Roles"] == []


def test_launcher_keys_compose_with_their_documented_defaults() -> None:
    import dataclasses

    from hydra import compose, initialize_config_dir

    from dogbreed.sagemaker.settings import LaunchSettings

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=sagemaker"], return_hydra_config=True)
    keys = {key: value for key, value in cfg.hydra.launcher.items() if key != "_target_"}
    defaults = dataclasses.asdict(LaunchSettings())
    assert keys == {**defaults, "s3_uri": None}
    assert keys["instance_type"] == "ml.m5.xlarge" and keys["max_parallel"] == 4 and keys["wait"] is True


def test_ctrl_c_while_waiting_detaches_and_says_how_to_stop_the_jobs(
    project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.sagemaker.models import SageMakerModelBackend

    create = SageMakerModelBackend.create_training_job

    def create_running(self: Any, *args: Any, **kw: Any):
        job = create(self, *args, **kw)
        job.training_job_status = "InProgress"
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_running)
    process = subprocess.Popen(
        [sys.executable, "train.py", "-m", "hydra/launcher=sagemaker", f"hydra.launcher.s3_uri={S3_URI}",
         "hydra.launcher.poll_s=0.2", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As from a terminal: a test run started in the background inherits SIGINT ignored, and
        # Python then never turns Ctrl-C into KeyboardInterrupt, so the child would wait forever.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        output.append(line)
        if "created training job" in line:
            process.send_signal(signal.SIGINT)
            break
    output.append(process.stdout.read())
    assert process.wait(timeout=60) == 130
    (job,) = jobs()
    text = "".join(output)
    assert "detached; the jobs keep running" in text and job["TrainingJobName"] in text
    assert "python -m dogbreed.sagemaker.jobs stop JOB" in text and "Traceback" not in text


def test_an_image_past_its_end_of_patch_is_one_warning_with_its_date(project: str, tmp_path: Path) -> None:
    old = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-cpu-py312"
    result = launch(tmp_path, "hydra.launcher.wait=false", f"hydra.launcher.image_uri={old}", "debug=fast")
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "end of patch" in line]
    assert len(warnings) == 1 and "(2026-01-29" in warnings[0] and "hydra.launcher.image_uri unset" in warnings[0]
    (job,) = jobs()
    assert job["AlgorithmSpecification"]["TrainingImage"] == old  # a warning, not a refusal: the user chose it
