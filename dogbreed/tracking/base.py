"""The interface the epoch loop calls (start, log_epoch, log_final, close) and the guard around loggers.

Tracking is a convenience beside the run's own files, never a reason to lose a run: a logger that
raises (a tracking server down, a full disk) is warned about once and dropped, and training goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from dogbreed.errors import DogbreedError, TrainingInterrupted

log = logging.getLogger(__name__)

# metrics.csv column -> the name loggers record it under, per epoch.
EPOCH_METRICS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "valid_loss": "valid/loss",
    "valid_top1": "valid/top1",
    "valid_top5": "valid/top5",
    "lr": "lr",
    "train_images_per_s": "train/images_per_s",
}


@dataclass(frozen=True)
class RunInfo:
    """What a logger needs to know about the run it records.

    Attributes:
        name: The run's name (the run dir relative to the output root).
        output_dir: The run dir, where the run's own files are.
        params: The resolved config, nested as in the YAML.
        sweep_dir: The multirun directory when this run is one trial of a sweep, else None.
    """

    name: str
    output_dir: Path
    params: dict[str, Any]
    sweep_dir: Path | None = None


class Logger(Protocol):
    """One tracking backend. Any method may raise; `Tracking` handles it."""

    name: str

    def start(self, run: RunInfo) -> None: ...

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def log_final(self, metrics: dict[str, float], artifacts: list[Path]) -> None: ...

    def close(self, status: str) -> None: ...


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> `{"optim.lr": 0.001, ...}`; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Tracking:
    """The loggers of one run, used as a context manager around the epoch loop.

    Entering starts them, leaving closes them with the run's outcome: FINISHED, KILLED (a stop
    request or Ctrl-C: the run can resume) or FAILED. A failing logger is warned about once and
    dropped, unless it is required (`logger.required=true`): then the run stops with one line.
    """

    def __init__(self, loggers: list[Logger], run: RunInfo | None) -> None:
        self.loggers = list(loggers)
        self.run = run

    def check(self) -> None:
        """Each logger's own check of its settings (those that have one), before the run reads any data.

        Raises:
            DogbreedError: a setting the backend would refuse.
        """
        for logger in self.loggers:
            if hasattr(logger, "check"):
                logger.check()

    def _each(self, method: str, *args: Any) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, method)(*args)
            except Exception as err:  # any failure of a tracking backend; the run matters more
                if getattr(logger, "required", False):  # logger.required=true: without it the run is not wanted
                    first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
                    raise DogbreedError(
                        f"logger {logger.name} failed ({type(err).__name__}: {first}) and logger.required=true; "
                        "fix its settings or set logger.required=false to train without it"
                    ) from None
                where = self.run.output_dir if self.run is not None else "the run dir"
                log.warning(
                    "logger %s failed (%s: %s); training goes on without it, the run's files stay in %s",
                    logger.name,
                    type(err).__name__,
                    str(err).splitlines()[0][:300] if str(err) else "",
                    where,
                )
                self.loggers.remove(logger)

    def __enter__(self) -> Tracking:
        if self.run is not None:
            self._each("start", self.run)
        return self

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One metrics.csv row, its epoch as the step."""
        metrics = {name: float(row[column]) for column, name in EPOCH_METRICS.items() if column in row}
        self._each("log_epoch", int(row["epoch"]), metrics)

    def log_final(self, metrics: dict[str, float], artifacts: list[Path]) -> None:
        """The best weights' evaluation and the files the run left (those that exist)."""
        self._each("log_final", metrics, [path for path in artifacts if path.is_file()])

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, (KeyboardInterrupt, TrainingInterrupted)):
            status = "KILLED"
        else:
            status = "FAILED"
        self._each("close", status)
