"""The epoch loop: train, validate, keep the best weights, checkpoint, stop early or on request.

`dogbreed.train.run` builds a `Job` from the run's settings; `fit` runs it to the last epoch,
early stopping, or a stop request (raised as `TrainingInterrupted` after a checkpoint).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dogbreed import files
from dogbreed.storage import run_uploads
from dogbreed.tracking.base import Tracking
from dogbreed.train import checkpoint, distributed
from dogbreed.train.checkpoint import TrainingState
from dogbreed.train.engine import EpochResult, EvalResult, evaluate, train_one_epoch
from dogbreed.train.interrupt import StopRequest
from dogbreed.train.loaders import start_epoch
from dogbreed.train.resume import (
    EpochBatches,
    TrainingInterrupted,
    merge_partial,
    partial_record,
    stop_agreed,
    upload_and_explain_stop,
)
from dogbreed.train.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """How long the loop runs and what it shows (`trainer.*`).

    Attributes:
        epochs: The last epoch to train.
        seed: With the epoch number, fixes each epoch's data order.
        limit_batches: Cap on batches per epoch and per evaluation; None for all.
        patience: Epochs without a lower validation loss before stopping early; None never stops.
        progress: Draw progress bars (on rank 0 only).
        checkpoint_every_s: Least seconds between the checkpoints written after epochs (0: after
            every epoch). The last epoch and a stop always write one.
    """

    epochs: int
    seed: int
    limit_batches: int | None
    patience: int | None
    progress: bool
    checkpoint_every_s: float


@dataclass
class Job:
    """Everything one run trains with and writes to, built once from the config."""

    context: distributed.Context
    runtime: Runtime
    schedule: Schedule
    output_dir: Path
    uploads: run_uploads.RunUploads | None  # None with storage=local, and on ranks other than 0
    class_names: list[str]
    loaders: dict[str, Any]
    model: nn.Module  # the whole network: what checkpoints and model.pth hold
    trained: nn.Module  # what runs forward: the model or its head, possibly wrapped in DDP or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    config: dict[str, Any]  # resolved, saved in every checkpoint
    overrides: tuple[str, ...]  # the command line's, for the command that resumes a stopped run
    model_dir: Path | None  # SageMaker's SM_MODEL_DIR, which also receives the weights and labels
    started: float  # time.perf_counter() when the run began
    tracking: Tracking  # the `logger=` loggers (none on ranks other than 0)

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / checkpoint.CHECKPOINT_NAME

    @property
    def weights_path(self) -> Path:
        return self.output_dir / checkpoint.WEIGHTS_NAME

    def save_checkpoint(self, state: TrainingState) -> None:
        """Rank 0 writes the checkpoint; every rank holds the same weights."""
        if self.context.is_main:
            checkpoint.save_training_checkpoint(
                self.checkpoint_path,
                self.model,
                self.optimizer,
                self.scheduler,
                self.scaler,
                state,
                self.config,
                self.class_names,
            )

    def evaluate(self, split: str) -> EvalResult:
        """The current weights on `split`; under torchrun, summed over every rank's shard."""
        return evaluate(
            self.trained,
            self.loaders[split],
            self.criterion,
            self.runtime,
            len(self.class_names),
            split,
            self.schedule.limit_batches,
            self.schedule.progress,
        )

    def stopped(self, stop: StopRequest, where: str) -> TrainingInterrupted:
        """The exception that ends a stopped run, once its checkpoint is written (and uploaded)."""
        return upload_and_explain_stop(stop, where, self.checkpoint_path, self.output_dir, self.uploads, self.overrides)


def fit(job: Job, state: TrainingState, stop: StopRequest) -> None:
    """Trains from `state` to the last epoch or an early stop, checkpointing after epochs.

    A checkpoint is written after an epoch once `checkpoint_every_s` have passed since the last
    one, and always after the last epoch and on a stop request: a crash loses at most that much
    training. Head-only epochs on cached features take a fraction of a second, less than writing
    the whole network's weights, which every checkpoint holds.

    Raises:
        TrainingInterrupted: A stop was requested; the checkpoint written says where to resume.
    """
    last_checkpoint = time.monotonic()
    while state.epoch < job.schedule.epochs:
        epoch = state.epoch + 1
        lr = job.optimizer.param_groups[0]["lr"]
        result = train_epoch(job, state, stop, epoch)
        valid = job.evaluate("valid")
        job.scheduler.step()
        state.epoch = epoch
        record_epoch(state, job.schedule.epochs, lr, result, valid)
        job.tracking.log_epoch(state.history[-1])
        keep_best(job, state, valid)
        patience = job.schedule.patience
        stopping_early = bool(patience and state.bad_epochs >= patience)
        due = time.monotonic() - last_checkpoint >= job.schedule.checkpoint_every_s
        checkpointed = stopping_early or epoch == job.schedule.epochs or due
        if checkpointed:
            job.save_checkpoint(state)
            last_checkpoint = time.monotonic()
            if job.uploads is not None:  # yields to a stop request at once: the stop's checkpoint comes first
                job.uploads.checkpoint(job.checkpoint_path, stop=stop)
        if stopping_early:
            log.info("early stop: validation loss has not improved for %d epochs", patience)
            return
        if stop_agreed(stop):  # it came during the epoch's end or the upload: the epoch is complete
            if not checkpointed:
                job.save_checkpoint(state)
            raise job.stopped(stop, f"after epoch {epoch}")


def train_epoch(job: Job, state: TrainingState, stop: StopRequest, epoch: int) -> EpochResult:
    """One pass over the training data, continuing a partly trained epoch from `state`.

    Raises:
        TrainingInterrupted: A stop was requested mid-epoch; this step is checkpointed first.
    """
    desc = f"epoch {epoch}/{job.schedule.epochs}"
    start_epoch(job.loaders["train"], job.schedule.seed, epoch)
    # Starts after the batches an interrupted run already trained; ends early on a stop request.
    batches = EpochBatches(job.loaders["train"], state.step, job.schedule.limit_batches, stop, desc)
    result = train_one_epoch(
        job.trained, batches, job.criterion, job.optimizer, job.scaler, job.runtime, desc, None, job.schedule.progress
    )
    result = merge_partial(state.partial, result)
    if batches.stopped:
        state.step, state.partial = batches.done, partial_record(result)
        job.save_checkpoint(state)
        raise job.stopped(stop, f"epoch {epoch}, after batch {batches.done} of {batches.total}")
    state.step, state.partial = 0, None
    return result


def record_epoch(state: TrainingState, epochs: int, lr: float, fit: EpochResult, valid: EvalResult) -> None:
    """Appends the finished epoch `state.epoch` to the history (metrics.csv) and logs it."""
    state.history.append(
        {
            "epoch": state.epoch,
            "lr": lr,
            "train_loss": fit.loss,
            "train_acc": fit.accuracy,
            "valid_loss": valid.loss,
            "valid_top1": valid.top1,
            "valid_top5": valid.top5,
            "train_images_per_s": round(fit.images_per_s, 2),
            "seconds": round(fit.seconds, 2),
        }
    )
    log.info(
        "epoch %d/%d  train loss %.4f acc %.3f | valid loss %.4f top1 %.3f top5 %.3f | %.1f img/s | lr %.2e",
        state.epoch,
        epochs,
        fit.loss,
        fit.accuracy,
        valid.loss,
        valid.top1,
        valid.top5,
        fit.images_per_s,
        lr,
    )


def keep_best(job: Job, state: TrainingState, valid: EvalResult) -> None:
    """Early-stopping bookkeeping: a lower validation loss makes this epoch's weights the best (model.pth)."""
    if valid.loss < state.best_loss:
        state.best_loss, state.best_epoch, state.best_top1, state.bad_epochs = valid.loss, state.epoch, valid.top1, 0
        state.best_model = cpu_state_dict(job.model)
        if job.context.is_main:
            files.atomic_torch_save(state.best_model, job.weights_path)
    else:
        state.bad_epochs += 1


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU, unaffected by later training steps."""
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
