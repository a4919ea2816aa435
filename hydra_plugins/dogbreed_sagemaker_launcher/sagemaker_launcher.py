"""The Hydra side of the SageMaker launcher: composes each job's config, records it, returns results.

Everything that talks to AWS is `dogbreed.sagemaker.launch`; this class only turns Hydra's
jobs into `JobSpec`s and the jobs' outcomes into `JobReturn`s. Each job gets its trial
directory (`<sweep dir>/<n>/`) with `.hydra/overrides.yaml`, and its run's `metrics.json` once
the job has completed, so the sweep summary reads SageMaker trials like local ones.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from dogbreed.cli import Progress, reported_errors
from dogbreed.sagemaker import launch as sagemaker_launch  # `launch` is also the Launcher's method
from dogbreed.sagemaker.launch import JobResult, JobSpec
from dogbreed.sagemaker.settings import LaunchError, LaunchSettings
from dogbreed.storage.location import S3Location

log = logging.getLogger(__name__)
EXIT_DETACHED = 130
STOP_COMMAND = "python -m dogbreed.sagemaker.jobs stop"


class SageMakerLauncher(Launcher):
    def __init__(self, **keys: Any) -> None:
        self.settings = LaunchSettings(**keys)
        self.stamp = sagemaker_launch.utc_stamp()
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        configs = [self.job_config(list(overrides), initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        Progress.job_started = True  # the command line composed; what fails now is not bad usage
        # Hydra would print a launcher's error as a stack trace: one line and exit 1, as every CLI here.
        with reported_errors(region_setting="hydra.launcher.region=<region>"):
            return self.run(configs)

    def run(self, configs: list[DictConfig]) -> list[JobReturn]:
        self.settings.check()  # before any AWS client exists
        logging.getLogger("botocore").setLevel(logging.WARNING)  # its INFO lines would drown the jobs' logs
        clients = sagemaker_launch.Clients.create(self.settings.region)
        jobs, prepared = self.prepare_jobs(configs, clients)
        try:
            results = sagemaker_launch.run_jobs(self.settings, clients, jobs, prepared, echo)
        except KeyboardInterrupt:
            names = " ".join(job.name for job in jobs)
            log.warning("detached; the jobs keep running (%s). Stop one with: %s JOB", names, STOP_COMMAND)
            raise SystemExit(EXIT_DETACHED) from None
        if results is None:
            log.info("jobs created; follow them with python -m dogbreed.sagemaker.jobs list")
            return [self.job_return(config, None) for config in configs]
        check_all_completed(results)
        return [self.job_return(config, result) for config, result in zip(configs, results, strict=True)]

    def prepare_jobs(
        self, configs: list[DictConfig], clients: sagemaker_launch.Clients
    ) -> tuple[list[JobSpec], sagemaker_launch.Prepared]:
        """The code bundle, image and role every job shares, then one JobSpec per config."""
        channels = [sagemaker_launch.data_channel(str(config.data.root)) for config in configs]
        trackers = {name for config in configs for name in (config.get("logger") or {})}
        given = [c for c in channels if c is not None]
        prepared = sagemaker_launch.prepare(self.settings, clients, given, trackers, jobs=len(configs))
        region = clients.sagemaker.meta.region_name
        jobs = [self.job_spec(config, channels[i], prepared, region) for i, config in enumerate(configs)]
        for job, config in zip(jobs, configs, strict=True):
            log.info("#%d %s: %s", config.hydra.job.num, job.name, " ".join(config.hydra.overrides.task))
        return jobs, prepared

    def job_config(self, overrides: list[str], number: int) -> DictConfig:
        """The job's composed config (as a local job would get it) and its trial dir with overrides.yaml."""
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.num = number
            config.hydra.job.id = sagemaker_launch.job_name(self.settings.name, self.stamp, number)
        hydra_dir = trial_dir(config) / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(list(config.hydra.overrides.task)))
        return config

    def job_spec(
        self, config: DictConfig, channel: S3Location | None, prepared: sagemaker_launch.Prepared, region: str
    ) -> JobSpec:
        overrides = sagemaker_launch.job_overrides(config.hydra.overrides.task, self.settings, channel)
        distributed = self.settings.instance_count > 1
        hyperparameters = sagemaker_launch.hyperparameters(overrides, prepared.submit, region, distributed)
        return JobSpec(str(config.hydra.job.id), hyperparameters, channel)

    def job_return(self, config: DictConfig, result: JobResult | None) -> JobReturn:
        """COMPLETED with the validation top-1 (None without waiting); the run's metrics.json in the trial dir."""
        outcome = JobReturn(
            overrides=list(config.hydra.overrides.task),
            cfg=config,
            hydra_cfg=config,
            working_dir=str(trial_dir(config)),
            task_name=str(config.hydra.job.name),
            status=JobStatus.COMPLETED,
        )
        if result is None or result.metrics is None:
            return outcome
        (trial_dir(config) / "metrics.json").write_text(json.dumps(result.metrics, indent=2))
        outcome.return_value = float(result.metrics["valid"]["top1"])
        return outcome


def check_all_completed(results: list[JobResult]) -> None:
    """A failed job ends the multirun as a failed local job does (one line, exit 1), naming every failure.

    Raises:
        LaunchError: a job failed, stopped or wrote no metrics.json.
    """
    failures = [result.failure or f"training job {result.name} wrote no metrics.json" for result in results]
    failures = [line for line, result in zip(failures, results, strict=True) if result.metrics is None]
    for line in failures[1:]:
        log.error("%s", line)
    if failures:
        raise LaunchError(failures[0])


def trial_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)


def echo(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
