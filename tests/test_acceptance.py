"""`make integ` against moto: every step, the tags, the leak sweep, and a run killed midway."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from acceptance import sweep
from deploy.cli import main as deploy_main
from dogbreed.cli import compose_config
from tests.helpers.config import REPO
from tests.helpers.dlami import register_dlami
from tests.helpers.runs import train_run

BUCKET = "dbacc-bucket"
S3_URI = f"s3://{BUCKET}/integ"
BOOT = dt.timedelta(seconds=3)  # how long the fake instance "boots" before it trains and ends


class Compute:
    """What AWS runs and moto does not: a training job's model.tar.gz, and an instance's run, then its end."""

    def __init__(self, run_dir: Path) -> None:
        self.archive = io.BytesIO()
        with tarfile.open(fileobj=self.archive, mode="w:gz") as tar:
            for path in run_dir.iterdir():
                tar.add(path, arcname=path.name)
        self.stop = threading.Event()
        self.done: set[str] = set()  # each job writes its model once, as SageMaker does

    def work(self) -> None:
        sagemaker, s3, ec2 = boto3.client("sagemaker"), boto3.client("s3"), boto3.client("ec2")
        while not self.stop.wait(0.1):
            for job in sagemaker.list_training_jobs(NameContains="dbacc-")["TrainingJobSummaries"]:
                if job["TrainingJobName"] in self.done:
                    continue
                self.done.add(job["TrainingJobName"])
                uri = sagemaker.describe_training_job(TrainingJobName=job["TrainingJobName"])["ModelArtifacts"]
                bucket, key = uri["S3ModelArtifacts"].removeprefix("s3://").split("/", 1)
                s3.put_object(Bucket=bucket, Key=key, Body=self.archive.getvalue())
            tagged = {"Name": "tag-key", "Values": [sweep.TAG_KEY]}
            running = {"Name": "instance-state-name", "Values": ["running"]}
            filters = [tagged, running]
            for reservation in ec2.describe_instances(Filters=filters)["Reservations"]:
                for instance in reservation["Instances"]:
                    if dt.datetime.now(dt.timezone.utc) - instance["LaunchTime"] < BOOT:
                        continue  # `launch` is still waiting for it to run
                    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
                    run_id, name = tags[sweep.TAG_KEY], tags["dogbreed:name"]
                    s3.put_object(Bucket=BUCKET, Key=f"integ/{run_id}/runs/{name}/metrics.json", Body=b"{}")
                    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])  # ami.on_finish=terminate


@pytest.fixture
def account(aws: str, moto_server: str, tmp_path: Path, tiny_dataset: Path) -> Iterator[str]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    deploy_main(["setup", S3_URI])  # the one-time set-up the guide asks for
    register_dlami(str(compose_config("ami", [], "ami.name=x").ami.ami_ssm_parameter))
    # The Lambda's answer (moto runs no function code): what the handler returns for a JPEG.
    reply = json.dumps({"statusCode": 200, "body": json.dumps({"predictions": [{"label": "a", "p": 1.0}]})})
    request = urllib.request.Request(f"{moto_server}/moto-api/static/lambda-simple/response", method="POST",
                                     data=json.dumps({"results": [reply]}).encode())  # fmt: skip
    urllib.request.urlopen(request, timeout=10).close()
    compute = Compute(train_run(tmp_path / "trained", tiny_dataset))
    worker = threading.Thread(target=compute.work, daemon=True)
    worker.start()
    yield moto_server
    compute.stop.set()
    worker.join(timeout=10)


def acceptance(moto_server: str, tmp_path: Path, run_id: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "acceptance", "--yes", "--endpoint-url", moto_server, "--s3-uri", S3_URI,
        "--run-id", run_id, "--workdir", str(tmp_path / "acceptance"), "--poll-s", "0.2",
        "--ssh-cidr", "203.0.113.7/32", *extra,
    ]  # fmt: skip


def test_the_acceptance_run_creates_and_removes_everything_and_reports_each_step(account: str, tmp_path: Path) -> None:
    result = subprocess.run(acceptance(account, tmp_path, "a1b2c3"), cwd=REPO, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    steps = [line.split(" (")[0] for line in result.stdout.splitlines() if line.startswith("done ")]
    assert steps == ["done train", "done training down", "done deploy", "done invoke", "done deploy down",
                     "done ami launch", "done ami down", "done clean up"]  # fmt: skip
    assert result.stdout.splitlines()[-1] == "leak sweep: nothing left"
    report = (tmp_path / "acceptance" / "a1b2c3" / "a1b2c3.md").read_text()
    assert "| train |" in report and "| ami launch |" in report and "Leak sweep: nothing left" in report
    # The job carried the run's tag (the sweep's key), and nothing of the run is left under its prefix.
    sagemaker = boto3.client("sagemaker")
    (job,) = sagemaker.list_training_jobs(NameContains="dbacc-a1b2c3")["TrainingJobSummaries"]
    tags = sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    assert {"Key": sweep.TAG_KEY, "Value": "a1b2c3"} in tags
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="integ/a1b2c3/").get("KeyCount") == 0


def test_a_run_killed_midway_leaves_what_the_sweep_names_and_down_removes(account: str, tmp_path: Path) -> None:
    command = acceptance(account, tmp_path, "d4e5f6")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("done invoke"):
            os.kill(process.pid, signal.SIGKILL)  # as a closed laptop or a lost SSH session would
            break
    process.wait(timeout=60)
    left = sweep.leftovers(boto3.client, "d4e5f6", "dbacc-d4e5f6")
    kinds = {item.split(" ")[0] for item in left}
    assert {"sagemaker", "lambda", "iam"} <= kinds, left
    assert "sagemaker endpoint/dbacc-d4e5f6" in left and "iam role/dbacc-d4e5f6-lambda" in left

    name, where = "deploy.name=dbacc-d4e5f6", f"deploy.s3_uri={S3_URI}/d4e5f6"
    deploy_main(["down", name, where, "deploy.delete_artifacts=true"])
    logs = boto3.client("logs")
    for group in logs.describe_log_groups(logGroupNamePrefix="/aws/")["logGroups"]:
        logs.delete_log_group(logGroupName=group["logGroupName"])
    assert sweep.leftovers(boto3.client, "d4e5f6", "dbacc-d4e5f6") == []


def test_without_a_prefix_or_credentials_it_says_what_to_set_and_creates_nothing(aws: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DOGBREED_INTEG_S3_URI",)}
    result = subprocess.run([sys.executable, "-m", "acceptance", "--yes"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "make integ: skipped; set DOGBREED_INTEG_S3_URI=s3://bucket/prefix and AWS credentials to run it "
        "(nothing created)"
    ]
    assert boto3.client("s3").list_buckets()["Buckets"] == []


def test_without_yes_it_prints_the_plan_and_cost_bound_and_starts_nothing(aws: str, moto_server: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acceptance", "--endpoint-url", moto_server, "--s3-uri", S3_URI, "--run-id", "abc123"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"acceptance run abc123 under {S3_URI}/abc123, every resource tagged dogbreed-acceptance=abc123:"
    assert any(line.strip().startswith("cost bound: about $") for line in lines)
    assert lines[-1] == "nothing created; rerun with --yes (or DOGBREED_INTEG_YES=1) to start"
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
