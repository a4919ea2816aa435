"""Watching this project's SageMaker training jobs: status, logs, results; `python -m dogbreed.sagemaker.jobs`.

`python -m dogbreed.sagemaker.jobs list` shows the jobs named `<name>-...` with their status and
what they cost (billable seconds, and the spot saving), `logs JOB [-f]` prints a job's log and
`stop JOB` stops one. The launcher uses the same `Watcher` to follow the jobs it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from dogbreed.sagemaker.role import LOG_GROUP
from dogbreed.storage.location import S3Location, is_not_found

log = logging.getLogger(__name__)

TERMINAL = ("Completed", "Failed", "Stopped")
METRICS_NAME = "metrics.json"


class LogTail:
    """The log events of one job's streams (`<job>/algo-N-...`, one per host) not read yet."""

    def __init__(self, logs: Any, job: str) -> None:
        self.logs, self.job = logs, job
        self.tokens: dict[str, str] = {}

    def streams(self) -> list[str]:
        try:
            found = self.logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job}/")
        except ClientError as err:
            if err.response["Error"]["Code"] == "ResourceNotFoundException":  # no job has logged yet
                return []
            raise
        return sorted(stream["logStreamName"] for stream in found["logStreams"])

    def read(self) -> list[str]:
        lines = []
        for stream in self.streams():
            while True:
                extra = {"nextToken": self.tokens[stream]} if stream in self.tokens else {}
                page = self.logs.get_log_events(
                    logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True, **extra
                )
                lines += [event["message"].rstrip("\n") for event in page["events"]]
                done = page["nextForwardToken"] == self.tokens.get(stream) or not page["events"]
                self.tokens[stream] = page["nextForwardToken"]
                if done:
                    break
        return lines


class Watcher:
    """Follows running jobs: echoes their new log lines and hands back each one that has ended."""

    def __init__(self, sagemaker: Any, logs: Any, echo: Callable[[str], None] | None) -> None:
        self.sagemaker, self.logs, self.echo = sagemaker, logs, echo
        self.active: dict[str, LogTail] = {}

    def add(self, job: str) -> None:
        self.active[job] = LogTail(self.logs, job)

    def poll(self) -> list[dict[str, Any]]:
        """Descriptions of the jobs that ended since the last poll (they are no longer followed)."""
        ended = []
        for job, tail in list(self.active.items()):
            description = self.sagemaker.describe_training_job(TrainingJobName=job)
            if self.echo is not None:
                for line in tail.read():
                    self.echo(f"[{job}] {line}")
            if description["TrainingJobStatus"] in TERMINAL:
                del self.active[job]
                ended.append(description)
        return ended


def failure(description: dict[str, Any]) -> str | None:
    """A one-line account of a job that did not complete; None when it did."""
    status = description["TrainingJobStatus"]
    if status == "Completed":
        return None
    name = description["TrainingJobName"]
    reason = description.get("FailureReason", "no reason given")
    return f"training job {name} {status.lower()}: {reason}; its log: {LOG_GROUP} streams {name}/*"


def job_metrics(s3: Any, description: dict[str, Any]) -> dict[str, Any] | None:
    """The run's metrics.json from the job's model.tar.gz (None if the job wrote none).

    SageMaker wrote the archive, without the SHA-256 the verified download needs; the tar stream
    is read only up to the small metrics file.
    """
    uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not uri:
        return None
    location = S3Location.parse(uri)
    try:
        body = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"]
    except ClientError as err:
        if is_not_found(err):
            return None
        raise
    with tarfile.open(fileobj=body, mode="r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.rsplit("/", 1)[-1] == METRICS_NAME:
                handle = tar.extractfile(member)
                return json.load(handle) if handle is not None else None
    return None


@dataclass(frozen=True)
class JobRow:
    name: str
    status: str
    instance: str
    billable_s: int | None
    spot_saving: str

    @classmethod
    def of(cls, description: dict[str, Any]) -> JobRow:
        billable, training = description.get("BillableTimeInSeconds"), description.get("TrainingTimeInSeconds")
        saving = "-"
        if description.get("EnableManagedSpotTraining") and billable is not None and training:
            saving = f"{100 * (1 - billable / training):.0f}%"
        resources = description["ResourceConfig"]
        return cls(
            description["TrainingJobName"],
            description["TrainingJobStatus"],
            f"{resources['InstanceCount']}x {resources['InstanceType']}",
            billable,
            saving,
        )


def project_jobs(sagemaker: Any, name: str, limit: int) -> list[JobRow]:
    """The newest `limit` jobs named `<name>-...`, newest first."""
    found = sagemaker.list_training_jobs(
        NameContains=f"{name}-", SortBy="CreationTime", SortOrder="Descending", MaxResults=limit
    )["TrainingJobSummaries"]
    ours = [job["TrainingJobName"] for job in found if job["TrainingJobName"].startswith(f"{name}-")]
    return [JobRow.of(sagemaker.describe_training_job(TrainingJobName=job)) for job in ours]


def format_rows(rows: list[JobRow]) -> list[str]:
    lines = [f"{'job':<48} {'status':<11} {'instances':<22} {'billable s':>10} {'spot saving':>11}"]
    for row in rows:
        billable = "-" if row.billable_s is None else str(row.billable_s)
        lines.append(f"{row.name:<48} {row.status:<11} {row.instance:<22} {billable:>10} {row.spot_saving:>11}")
    return lines


def follow(sagemaker: Any, logs: Any, job: str, poll_s: float, echo: Callable[[str], None]) -> dict[str, Any]:
    """Echoes the job's log until it ends; returns its description."""
    watcher = Watcher(sagemaker, logs, echo)
    watcher.add(job)
    while True:
        ended = watcher.poll()
        if ended:
            return ended[0]
        time.sleep(poll_s)


def remove_role(sagemaker: Any, iam_client: Any, name: str) -> str:
    """Deletes `<name>-sagemaker-training`, which the launcher made; ended jobs stay (they bill nothing).

    Raises:
        LaunchError: a job of `name` still runs and needs the role.
    """
    from dogbreed.aws import iam
    from dogbreed.sagemaker.role import role_name
    from dogbreed.sagemaker.settings import LaunchError

    running = [row.name for row in project_jobs(sagemaker, name, 100) if row.status in ("InProgress", "Stopping")]
    if running:
        raise LaunchError(
            f"jobs still running: {', '.join(running)}; stop them first (python -m dogbreed.sagemaker.jobs stop JOB)"
        )
    role = role_name(name)
    return f"deleted role {role}" if iam.delete_role(iam_client, role) else f"no role {role}: nothing to delete"


def main(argv: list[str] | None = None) -> int:
    """`list`, `logs` or `stop`; returns 0, or exits with the status and line of `dogbreed.cli`."""
    import boto3

    from dogbreed.cli import DEBUG_OPTION, reported_errors

    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.sagemaker.jobs", description=__doc__.split("\n\n")[0], parents=[DEBUG_OPTION]
    )
    parser.add_argument("--region", help="AWS region (default: boto3's)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="this project's jobs, newest first", parents=[DEBUG_OPTION])
    listing.add_argument("--name", default="dogbreed", help="hydra.launcher.name of the jobs (default dogbreed)")
    listing.add_argument("--limit", type=int, default=20)
    logs_parser = commands.add_parser("logs", help="print a job's log", parents=[DEBUG_OPTION])
    logs_parser.add_argument("job")
    logs_parser.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    stop_parser = commands.add_parser(
        "stop", help="stop a job (a spot job keeps its checkpoints)", parents=[DEBUG_OPTION]
    )
    stop_parser.add_argument("job")
    down_parser = commands.add_parser(
        "down", help="delete the training role <name>-sagemaker-training once no job of it runs", parents=[DEBUG_OPTION]
    )
    down_parser.add_argument("--name", default="dogbreed", help="hydra.launcher.name of the jobs (default dogbreed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors(getattr(args, "debug", False), region_setting="--region"):
        session = boto3.Session(region_name=args.region)
        sagemaker, logs = session.client("sagemaker"), session.client("logs")
        if args.command == "list":
            print("\n".join(format_rows(project_jobs(sagemaker, args.name, args.limit))))
        elif args.command == "stop":
            sagemaker.stop_training_job(TrainingJobName=args.job)
            print(f"stopping {args.job}")
        elif args.command == "down":
            print(remove_role(sagemaker, session.client("iam"), args.name))
        elif args.follow:
            reason = failure(follow(sagemaker, logs, args.job, 10.0, print))
            if reason is not None:
                print(reason, file=sys.stderr)
        else:
            sagemaker.describe_training_job(TrainingJobName=args.job)  # an unknown job is an error, not silence
            print("\n".join(LogTail(logs, args.job).read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
