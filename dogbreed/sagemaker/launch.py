"""`train.py` runs as SageMaker training jobs: the code bundle, the job's hyperparameters and request.

The launcher (hydra_plugins/dogbreed_sagemaker_launcher) turns each Hydra job into one
CreateTrainingJob request. The job runs the PyTorch training image, whose toolkit downloads
the bundle (train.py, conf/, dogbreed/ and a requirements.txt of what the image lacks),
installs the requirements and calls `train.py --key value ...`; `dogbreed.sagemaker.entry_point`
turns those back into the overrides given here. Several instances run under the toolkit's
torchrun launcher (`torch_distributed`), one process per GPU (or one per CPU host).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dogbreed.aws import code_bundle, container_images, preflight, support
from dogbreed.aws.iam import retry_while_role_propagates
from dogbreed.sagemaker import entry_point, needs, role
from dogbreed.sagemaker.jobs import Watcher, failure, job_metrics
from dogbreed.sagemaker.settings import LaunchError, LaunchSettings
from dogbreed.storage.location import S3Location

log = logging.getLogger(__name__)

PROGRAM = "train.py"
BUNDLE_SOURCES = ("train.py", "conf", "dogbreed")
# What the training image may lack (tests/data/pytorch-2.13-cpu-amzn2023-sagemaker-packages.txt
# lists what it has: hydra-core is missing), with the specifiers of pyproject.toml, so a rebuilt
# image that drops one still runs. Never torch or torchvision: the image's builds are the ones for
# its CUDA.
JOB_REQUIREMENTS = ("hydra-core>=1.3.2,<1.4", "omegaconf>=2.3,<2.4", "matplotlib>=3.8")
# Installed only when a job's `logger` group uses them (the image has neither; pip adds ~20 s).
TRACKER_REQUIREMENTS = {"tensorboard": "tensorboard>=2.15", "mlflow": "mlflow-skinny>=2.16"}
UNPATCHED_IMAGE_REMEDY = "leave hydra.launcher.image_uri unset for the training image in dogbreed/aws/support.json"
CHANNEL = "training"
# The toolkit puts the channel at SM_CHANNEL_TRAINING (/opt/ml/input/data/training).
CHANNEL_ROOT = "${oc.env:SM_CHANNEL_TRAINING}"
CHECKPOINT_DIR = "/opt/ml/checkpoints"
# Groups that configure the launching side: `hparams_search` turns on the sweeper and MULTIRUN,
# which must not happen again inside each job (the search runs here, the jobs are its trials).
LAUNCHER_ONLY_GROUPS = ("hparams_search",)
# Matched against the job's log (fitting.record_epoch and training.finish), shown in the
# SageMaker console and CloudWatch under /aws/sagemaker/TrainingJobs.
METRIC_DEFINITIONS = (
    {"Name": "train:loss", "Regex": r"train loss ([0-9.]+)"},
    {"Name": "valid:loss", "Regex": r"valid loss ([0-9.]+)"},
    {"Name": "valid:top1", "Regex": r"valid loss [0-9.]+ top1 ([0-9.]+)"},
    {"Name": "valid:best_top1", "Regex": r"best epoch \d+: valid top1 ([0-9.]+)"},
)


def requirements_txt(trackers: Iterable[str] = ()) -> bytes:
    """What the image lacks: JOB_REQUIREMENTS, plus the packages of the `trackers` (logger names) used."""
    extra = sorted({TRACKER_REQUIREMENTS[name] for name in trackers if name in TRACKER_REQUIREMENTS})
    return ("\n".join([*JOB_REQUIREMENTS, *extra]) + "\n").encode()


def build_bundle(root: Path = code_bundle.PROJECT, trackers: Iterable[str] = ()) -> bytes:
    """The job's source directory as a reproducible tar.gz: BUNDLE_SOURCES plus requirements.txt."""
    return code_bundle.build_archive(root, BUNDLE_SOURCES, {"requirements.txt": requirements_txt(trackers)})


def bundle_location(settings: LaunchSettings, bundle: bytes) -> S3Location:
    """`<s3_uri>/code/train-<content hash>.tar.gz`: an unchanged tree has the same key."""
    return settings.location().child(f"code/{code_bundle.archive_name('train', bundle)}")


def job_name(name: str, stamp: str, number: int) -> str:
    """`<name>-<stamp>-<number>`: one sweep's jobs share the stamp (UTC `%Y%m%d-%H%M%S`)."""
    return f"{name}-{stamp}-{number}"


def utc_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def data_channel(data_root: str) -> S3Location | None:
    """The S3 prefix behind `data.root`, which becomes the job's `training` channel; None for a local root."""
    if not data_root.startswith("s3://"):
        return None
    return S3Location.parse(data_root).as_prefix()


def job_overrides(overrides: Sequence[str], settings: LaunchSettings, channel: S3Location | None) -> list[str]:
    """The overrides the job runs with: launcher-only groups dropped, data from the channel.

    A spot job keeps its run directory in CHECKPOINT_DIR, which SageMaker syncs with S3 and
    restores after an interruption, and resumes from it (`trainer.resume=auto`); an explicit
    `paths.output_root` or `trainer.resume` override wins.
    """
    kept = [item for item in overrides if item.split("=", 1)[0].lstrip("+~") not in LAUNCHER_ONLY_GROUPS]
    kept = [item for item in kept if item.split("=", 1)[0] != "data.root"]
    extra = [f"data.root={CHANNEL_ROOT}"] if channel is not None else []
    keys = {item.split("=", 1)[0] for item in kept}
    if settings.spot:
        spot = {"paths.output_root": CHECKPOINT_DIR, "trainer.resume": "auto"}
        extra += [f"{key}={value}" for key, value in spot.items() if key not in keys]
    return kept + extra


def hyperparameters(overrides: Sequence[str], submit: S3Location, region: str, distributed: bool) -> dict[str, str]:
    """The job's HyperParameters: each override as `key: json(value)`, plus the toolkit's own.

    Values are JSON strings, as the SageMaker SDK writes them: the toolkit decodes each one, so
    `null` or `1e-3` arrive at train.py as the text given here. Every key must be one train.py
    accepts (`entry_point.hydra_key`), which is checked before any job is created.

    Raises:
        HyperparameterError: an override train.py would refuse on SageMaker.
        LaunchError: an override that is not `key=value`.
    """
    values: dict[str, str] = {}
    for item in overrides:
        key, has_value, value = item.partition("=")
        if not has_value or key.startswith(("+", "~")):
            raise LaunchError(f"override {item!r} cannot be passed to a SageMaker job; use key=value")
        entry_point.hydra_key(key)
        values[key] = json.dumps(value)
    values.update(
        {
            "sagemaker_program": json.dumps(PROGRAM),
            "sagemaker_submit_directory": json.dumps(submit.uri),
            "sagemaker_region": json.dumps(region),
            "sagemaker_container_log_level": "20",
        }
    )
    if distributed:
        values["sagemaker_torch_distributed_enabled"] = "true"
    return values


@dataclass(frozen=True)
class JobSpec:
    """What differs between the jobs of one launch."""

    name: str
    hyperparameters: dict[str, str]
    channel: S3Location | None


def training_job_request(settings: LaunchSettings, job: JobSpec, image_uri: str, role_arn: str) -> dict[str, Any]:
    """The CreateTrainingJob parameters for one job."""
    base = settings.location()
    request: dict[str, Any] = {
        "TrainingJobName": job.name,
        "AlgorithmSpecification": {
            "TrainingImage": image_uri,
            "TrainingInputMode": settings.input_mode,
            "MetricDefinitions": [dict(item) for item in METRIC_DEFINITIONS],
        },
        "RoleArn": role_arn,
        "HyperParameters": job.hyperparameters,
        "OutputDataConfig": {"S3OutputPath": base.child("jobs").uri},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": settings.instance_count,
            "VolumeSizeInGB": settings.volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_s},
        "Tags": role.tag_list(settings),
    }
    if job.channel is not None:
        request["InputDataConfig"] = [
            {
                "ChannelName": CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": job.channel.uri,
                        # Every host gets the whole set; the DDP sampler shards it.
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": settings.input_mode,
            }
        ]
    if settings.spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = settings.wait_s()
        request["CheckpointConfig"] = {
            "S3Uri": base.child(f"checkpoints/{job.name}").uri,
            "LocalPath": CHECKPOINT_DIR,
        }
    return request


@dataclass(frozen=True)
class Clients:
    sagemaker: Any
    s3: Any
    iam: Any
    sts: Any
    logs: Any
    quotas: Any

    @classmethod
    def create(cls, region: str | None) -> Clients:
        """Clients from the standard boto3 chain (AWS_ENDPOINT_URL, profiles, instance roles)."""
        import boto3

        session = boto3.Session(region_name=region)
        return cls(*(session.client(name) for name in ("sagemaker", "s3", "iam", "sts", "logs", "service-quotas")))


@dataclass(frozen=True)
class Prepared:
    """What every job of a launch shares."""

    submit: S3Location
    image_uri: str
    role_arn: str


def prepare(
    settings: LaunchSettings,
    clients: Clients,
    channels: Sequence[S3Location],
    trackers: Iterable[str] = (),
    jobs: int = 1,
) -> Prepared:
    """Checks the settings and the account, uploads the code bundle (once per content), resolves the image and the role.

    `trackers` are the logger names the jobs use; their packages go into requirements.txt; `jobs` is
    how many the sweep has (the quotas must hold the ones running at once).
    """
    settings.check()
    if settings.role_arn is None:  # the role made below must reach the prefix and the data channels
        role.check_boundary_covers(clients.iam, clients.sts, settings, channels)
    region = clients.sagemaker.meta.region_name
    check_account(settings, clients, region, jobs)
    try:
        image = settings.image_uri or container_images.training_image_uri(region, settings.instance_type)
    except ValueError as err:
        raise LaunchError(f"{err}; set hydra.launcher.image_uri") from None
    support.warn(support.for_image_uri(image), UNPATCHED_IMAGE_REMEDY)
    bundle = build_bundle(trackers=trackers)
    submit = bundle_location(settings, bundle)
    if code_bundle.upload_once(clients.s3, submit, bundle):
        log.info("uploaded the code to %s", submit.uri)
    role_arn = settings.role_arn or role.ensure_training_role(
        clients.iam,
        clients.sts,
        settings.name,
        settings.permissions_boundary,
        region,
        settings.location(),
        channels,
        image,
        LaunchError,
        role.tag_list(settings),
    )
    return Prepared(submit, image, role_arn)


def check_account(settings: LaunchSettings, clients: Clients, region: str, jobs: int) -> None:
    """The shared preflight for these jobs, unless `hydra.launcher.preflight` is off."""
    if not settings.preflight:
        preflight.skipped("hydra.launcher.preflight=false")
        return
    caller = clients.sts.get_caller_identity()["Arn"]
    partition, account = caller.split(":")[1], caller.split(":")[4]
    calls = needs.calls(settings, partition, account, region)
    preflight.run(clients.quotas, clients.iam, caller, needs.needs(settings, jobs), calls, needs.SKIP)


@dataclass(frozen=True)
class JobResult:
    """How one job ended: its run's metrics.json when it completed, else the one-line failure."""

    name: str
    metrics: dict[str, Any] | None
    failure: str | None


def role_not_ready(err: ClientError) -> bool:
    return err.response["Error"]["Code"] == "ValidationException" and "assume" in str(err).lower()


def create_job(clients: Clients, settings: LaunchSettings, job: JobSpec, prepared: Prepared) -> None:
    request = training_job_request(settings, job, prepared.image_uri, prepared.role_arn)
    retry_while_role_propagates(lambda: clients.sagemaker.create_training_job(**request), role_not_ready)
    log.info("created training job %s", job.name)


def run_jobs(
    settings: LaunchSettings,
    clients: Clients,
    jobs: Sequence[JobSpec],
    prepared: Prepared,
    echo: Callable[[str], None] | None,
) -> list[JobResult] | None:
    """Creates the jobs, at most `max_parallel` at a time, and follows them to their end.

    With `wait=false` every job is created at once and None is returned. Otherwise each job's
    log lines go to `echo` (None: not streamed) as they arrive.
    """
    if not settings.wait:
        for job in jobs:
            create_job(clients, settings, job, prepared)
        return None
    pending = list(jobs)
    watcher = Watcher(clients.sagemaker, clients.logs, echo)
    results: dict[str, JobResult] = {}
    while pending or watcher.active:
        while pending and len(watcher.active) < settings.max_parallel:
            job = pending.pop(0)
            create_job(clients, settings, job, prepared)
            watcher.add(job.name)
        for description in watcher.poll():
            name, reason = description["TrainingJobName"], failure(description)
            metrics = job_metrics(clients.s3, description) if reason is None else None
            results[name] = JobResult(name, metrics, reason)
        if watcher.active:
            time.sleep(settings.poll_s)
    return [results[job.name] for job in jobs]
