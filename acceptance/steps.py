"""The acceptance run's steps, each the command a user would type, timed, with what it cost in billed seconds."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from acceptance.sweep import LOG_PREFIXES, TAG_KEY
from deploy import loadtest
from dogbreed.errors import DogbreedError
from dogbreed.sagemaker import jobs
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import delete_prefix, head_or_none

REPO = Path(__file__).resolve().parents[1]
TRAINING_TYPE, TRAINING_MAX_S = "ml.m5.large", 1800
EC2_TYPE, EC2_MAX_S = "c6i.large", 1800
RUN_WAIT_S = 1800
ARTIFACT_TRIES = 20


class AcceptanceError(DogbreedError):
    """A step of the acceptance run failed; the message names it."""


@dataclass
class Run:
    """One acceptance run: where it writes, what it is called, how its clients are made."""

    s3_uri: str
    run_id: str
    workdir: Path
    endpoint_url: str | None = None
    poll_s: float = 15.0
    ssh_cidr: str | None = None  # None: this machine's public address, as `ami launch` finds it
    timings: list[tuple[str, float, str]] = field(default_factory=list)
    billed: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"dbacc-{self.run_id}"

    @property
    def prefix(self) -> S3Location:
        return S3Location.parse(self.s3_uri.rstrip("/")).child(self.run_id)

    def tag(self, flow: str) -> str:
        """The override that puts the run's tag on what `flow` (deploy, ami, hydra.launcher) creates."""
        return f"+{flow}.tags.{TAG_KEY}={self.run_id}"

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint_url) if self.endpoint_url else boto3.client(service)

    def command(self, *argv: str) -> str:
        """Runs one of the project's CLIs as a user would; its output, or AcceptanceError with its last lines."""
        env = {**os.environ, **({"AWS_ENDPOINT_URL": self.endpoint_url} if self.endpoint_url else {})}
        result = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise AcceptanceError(f"{' '.join(argv[:3])} exited {result.returncode}: {' | '.join(tail)}")
        return result.stdout


def train(run: Run) -> None:
    """A SageMaker training job on the generated images, spot, on the smallest CPU type; its model fetched."""
    run.command(
        "train.py", "-m", "hydra/launcher=sagemaker", "experiment=demo", f"hydra.launcher.s3_uri={run.prefix.uri}",
        f"hydra.launcher.name={run.name}", f"hydra.launcher.instance_type={TRAINING_TYPE}", "hydra.launcher.spot=true",
        f"hydra.launcher.max_runtime_s={TRAINING_MAX_S}", f"hydra.launcher.max_wait_s={2 * TRAINING_MAX_S}",
        "hydra.launcher.wait=false", run.tag("hydra.launcher"), f"hydra.sweep.dir={run.workdir / 'sweep'}",
    )  # fmt: skip
    name = training_job(run)["TrainingJobName"]
    job = jobs.follow(run.client("sagemaker"), run.client("logs"), name, run.poll_s, lambda line: None)
    reason = jobs.failure(job)
    if reason is not None:
        raise AcceptanceError(reason)
    run.billed["training job (spot)"] = float(job.get("BillableTimeInSeconds", 0))
    model = S3Location.parse(job["ModelArtifacts"]["S3ModelArtifacts"])
    s3 = run.client("s3")
    for _ in range(ARTIFACT_TRIES):  # SageMaker has written it when the job ends; an emulator's worker may lag
        if head_or_none(s3, model) is not None:
            break
        time.sleep(run.poll_s)
    body = s3.get_object(Bucket=model.bucket, Key=model.key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        tar.extractall(run.workdir / "model", filter="data")


def training_down(run: Run) -> None:
    run.command("-m", "dogbreed.sagemaker.jobs", "down", "--name", run.name)


def training_job(run: Run) -> dict[str, Any]:
    sagemaker = run.client("sagemaker")
    jobs = sagemaker.list_training_jobs(NameContains=run.name)["TrainingJobSummaries"]
    if len(jobs) != 1:
        raise AcceptanceError(f"expected one training job named {run.name}-*, found {len(jobs)}")
    return dict(sagemaker.describe_training_job(TrainingJobName=jobs[0]["TrainingJobName"]))


def deploy_settings(run: Run) -> list[str]:
    return [f"deploy.name={run.name}", f"deploy.s3_uri={run.prefix.uri}", run.tag("deploy")]


def deploy(run: Run) -> None:
    """The job's model as a serverless endpoint behind the Lambda and its URL."""
    run.command(
        "-m", "deploy", "up", str(run.workdir / "model"), *deploy_settings(run), "deploy.serverless.enabled=true"
    )


def invoke(run: Run) -> None:
    """One JPEG through the function URL (AWS_IAM, signed); an emulator has no URL listener: the function then."""
    function = f"{run.name}-invoke"
    if run.endpoint_url:
        send = loadtest.lambda_sender(function, 1)
    else:
        url = run.client("lambda").get_function_url_config(FunctionName=function, Qualifier="live")["FunctionUrl"]
        send = loadtest.http_sender(url, sign_region=loadtest.function_url_region(url))
    status, message = send(sample_jpeg(), "image/jpeg")
    if status != 200:
        raise AcceptanceError(f"the function answered {status}: {message}")


def sample_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def deploy_down(run: Run) -> None:
    run.command("-m", "deploy", "down", *deploy_settings(run), "deploy.delete_artifacts=true")


def ami_settings(run: Run) -> list[str]:
    given = [f"ami.ssh_cidr={run.ssh_cidr}"] if run.ssh_cidr else []
    return [f"ami.name={run.name}", f"ami.s3_uri={run.prefix.uri}", f"ami.key_dir={run.workdir / 'keys'}",
            run.tag("ami"), *given]  # fmt: skip


def ami_launch(run: Run) -> None:
    """A small CPU instance training `debug=fast`, terminating itself when done; waits for its run in S3."""
    started = time.monotonic()
    run.command(
        "-m", "ami", "launch", *ami_settings(run), f"ami.instance_type={EC2_TYPE}", "ami.on_finish=terminate",
        f"ami.run_name={run.name}", "ami.train_overrides=['experiment=demo','debug=fast']", "ami.idle_timeout_min=30",
    )  # fmt: skip
    metrics = run.prefix.child(f"runs/{run.name}/metrics.json")
    s3 = run.client("s3")
    while time.monotonic() - started < RUN_WAIT_S:
        if s3.list_objects_v2(Bucket=metrics.bucket, Prefix=metrics.key).get("KeyCount", 0):
            run.billed["EC2 instance (at most)"] = time.monotonic() - started
            return
        time.sleep(run.poll_s)
    raise AcceptanceError(f"no {metrics.uri} within {RUN_WAIT_S} s; `python -m ami logs` shows why")


def ami_down(run: Run) -> None:
    run.command("-m", "ami", "down", *ami_settings(run))


def clean_up(run: Run) -> None:
    """What no `down` removes because it is the user's: the run's S3 prefix and the services' log groups."""
    delete_prefix(run.client("s3"), run.prefix)
    logs = run.client("logs")
    for prefix in LOG_PREFIXES:
        for group in logs.describe_log_groups(logGroupNamePrefix=prefix.format(name=run.name))["logGroups"]:
            logs.delete_log_group(logGroupName=group["logGroupName"])


STEPS: list[tuple[str, Callable[[Run], None]]] = [
    ("train", train),
    ("training down", training_down),
    ("deploy", deploy),
    ("invoke", invoke),
    ("deploy down", deploy_down),
    ("ami launch", ami_launch),
    ("ami down", ami_down),
    ("clean up", clean_up),
]


def plan(run: Run, prices: dict[str, float]) -> list[str]:
    """What the run will create and the most it can cost, before anything starts."""
    training = prices.get("training", 0) * TRAINING_MAX_S / 3600
    ec2 = prices.get("ec2", 0) * EC2_MAX_S / 3600
    return [
        f"acceptance run {run.run_id} under {run.prefix.uri}, every resource tagged {TAG_KEY}={run.run_id}:",
        f"  SageMaker training job {run.name}-* on {TRAINING_TYPE}, spot, at most {TRAINING_MAX_S} s",
        f"  serverless endpoint {run.name} (3 GB), roles {run.name}-sagemaker and {run.name}-lambda,"
        f" function {run.name}-invoke with its URL; one request, then `deploy down`",
        f"  EC2 {EC2_TYPE} {run.name} from the Deep Learning AMI, security group, key pair, role and profile"
        f" {run.name}, at most {EC2_MAX_S} s; then `ami down`",
        f"  cost bound: about ${training + ec2 + 0.05:.2f} (on-demand hourly prices of the shipped tables;"
        " spot and serverless bill less)",
    ]


def report(run: Run, path: Path, leftovers: list[str]) -> None:
    """The Markdown report: each step's time and outcome, the billed seconds, the sweep."""
    lines = [f"# Acceptance run {run.run_id}", "", "| step | seconds | result |", "|---|---:|---|"]
    lines += [f"| {step} | {seconds:.1f} | {result} |" for step, seconds, result in run.timings]
    lines += ["", "| billed | seconds |", "|---|---:|"]
    lines += [f"| {what} | {seconds:.0f} |" for what, seconds in run.billed.items()]
    lines += ["", "Leak sweep: " + ("nothing left" if not leftovers else f"{len(leftovers)} left"), ""]
    lines += [f"- {item}" for item in leftovers]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
