"""MLflow: one run per training run, with params, metrics and artifacts; a sweep is a parent run.

Uses `MlflowClient` with explicit run ids rather than MLflow's active-run globals: Hydra's basic
launcher runs a sweep's trials one after another in one process, and each trial must be its own
run. The trials find their parent through a file in the sweep dir, written by the first trial.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

from dogbreed.errors import DogbreedError
from dogbreed.tracking.base import RunInfo, flatten

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run_id"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
BATCH = 100  # MLflow's cap on params (and on metrics) in one log_batch call
MAX_PARAM_CHARS = 6000


class MlflowLogger:
    """Records the run at `tracking_uri` (sqlite:///..., http(s)://..., or a SageMaker MLflow ARN)."""

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        request_attempts: int = 3,
        request_timeout_s: float = 10.0,
        required: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.required = required
        self.experiment = experiment
        self.request_attempts = request_attempts
        self.request_timeout_s = request_timeout_s
        self.client: Any = None
        self.run_id = ""
        self.parent_id: str | None = None

    def check(self) -> None:
        """Refuses, before any data is read, a tracking URI MLflow would refuse at the run's start.

        Raises:
            DogbreedError: a file store (`file://` or a bare path), which MLflow 3 no longer serves.
        """
        scheme = self.tracking_uri.split(":", 1)[0] if "://" in self.tracking_uri else ""
        if scheme in ("", "file") and not self.tracking_uri.startswith("arn:"):
            raise DogbreedError(
                f"logger.tracking_uri={self.tracking_uri}: MLflow 3 keeps runs in a database or on a server, not in "
                "files; use sqlite:///mlruns/mlflow.db (the default) or http(s)://host:port"
            )

    def start(self, run: RunInfo) -> None:
        if self.tracking_uri.startswith("arn:") and importlib.util.find_spec("sagemaker_mlflow") is None:
            raise DogbreedError(
                "a SageMaker MLflow tracking server ARN needs its plugin; install it with pip install sagemaker-mlflow"
            )
        limit_http_requests(self.request_attempts, self.request_timeout_s)
        from mlflow import MlflowClient  # loaded only when this logger is chosen (about a second)

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment_id = self.experiment_id()
        tags = {}
        if run.sweep_dir is not None:
            self.parent_id = self.sweep_parent(experiment_id, run.sweep_dir)
            tags[PARENT_TAG] = self.parent_id
        self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
        self.log_params(flatten(run.params))
        log.info("mlflow run %s (%s) at %s", self.run_id, run.name, self.tracking_uri)

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(self.client.create_experiment(self.experiment, artifact_location=artifact_root(self.tracking_uri)))

    def sweep_parent(self, experiment_id: str, sweep_dir: Path) -> str:
        """The sweep's parent run: the one an earlier trial recorded in the sweep dir, else a new one."""
        marker = sweep_dir / PARENT_FILE
        if marker.is_file():
            return marker.read_text().strip()
        parent = self.client.create_run(experiment_id, run_name=str(sweep_dir.name), tags={"sweep_dir": str(sweep_dir)})
        sweep_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(parent.info.run_id + "\n")
        return str(parent.info.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)[:MAX_PARAM_CHARS]) for key, value in sorted(params.items())]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log_metrics(metrics, epoch)

    def log_final(self, metrics: dict[str, float], artifacts: list[Path]) -> None:
        self.log_metrics(metrics, 0)
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)
        if self.parent_id is not None:  # the parent ends with its latest trial
            self.client.set_terminated(self.parent_id, "FINISHED")


def artifact_root(tracking_uri: str) -> str | None:
    """A sqlite store keeps artifacts beside its database; MLflow would put them in ./mlruns of whatever dir runs."""
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server (or the SageMaker plugin) chooses its own artifact store
    return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()


def limit_http_requests(attempts: int, timeout_s: float) -> None:
    """Bounds MLflow's HTTP retries (by default 7 tries with exponential backoff: minutes on a dead server).

    MLflow reads these from the environment on each request; a value the user set wins.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max(attempts - 1, 0)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
