"""`python -m dogbreed.sagemaker.jobs list|logs|stop` against the moto server."""

from __future__ import annotations

import subprocess
import sys
import time

import boto3
import pytest

from dogbreed.sagemaker.jobs import main
from dogbreed.sagemaker.launch import JobSpec, training_job_request
from dogbreed.sagemaker.settings import LaunchSettings
from dogbreed.storage.location import S3Location

ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker-training"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cpu-amzn2023-sagemaker"


def create_job(name: str, spot: bool = False) -> None:
    settings = LaunchSettings(s3_uri="s3://bkt/dogbreed", spot=spot)
    job = JobSpec(name, {"optim.lr": '"0.001"'}, S3Location("bkt", "dogbreed/data/"))
    boto3.client("sagemaker").create_training_job(**training_job_request(settings, job, IMAGE, ROLE))


def test_list_shows_only_this_projects_jobs_and_logs_prints_a_job_log(
    aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create_job("dogbreed-20261202-101500-0", spot=True)
    create_job("other-20261202-101500-0")
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["job", "status", "instances", "billable", "s", "spot", "saving"]
    assert [line.split()[0] for line in out[1:]] == ["dogbreed-20261202-101500-0"]
    assert "Completed" in out[1] and "1x ml.m5.xlarge" in out[1]

    logs = boto3.client("logs")
    group, stream = "/aws/sagemaker/TrainingJobs", "dogbreed-20261202-101500-0/algo-1-1700000000"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    events = [{"timestamp": int(time.time() * 1000), "message": f"line {n}"} for n in range(3)]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    assert main(["logs", "dogbreed-20261202-101500-0"]) == 0
    assert capsys.readouterr().out.splitlines() == ["line 0", "line 1", "line 2"]


def test_an_unknown_job_is_one_line(aws: str, capsys: pytest.CaptureFixture[str]) -> None:
    # (moto has no stop_training_job: `stop` is one boto3 call, left untested here)
    with pytest.raises(SystemExit) as stop:
        main(["logs", "dogbreed-nothing"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_old_module_path_still_runs_the_jobs_command_and_names_the_new_one() -> None:
    # The launcher of 0.1 printed `python -m dogbreed.sagemaker_jobs ...`; it keeps working for one release.
    result = subprocess.run(
        [sys.executable, "-m", "dogbreed.sagemaker_jobs", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "python -m dogbreed.sagemaker.jobs" in result.stdout  # the parser's prog: the new path
    assert "is now python -m dogbreed.sagemaker.jobs" in result.stderr
