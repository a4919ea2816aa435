"""Self-describing, atomically written checkpoints, and the RNG state they carry."""

from __future__ import annotations

import copy
import logging
import platform
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torchvision
from torch import nn

import dogbreed
from dogbreed.errors import DataError, WeightsError
from dogbreed.files import atomic_torch_save

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.pth"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, in a form `weights_only` loading accepts."""
    # The legacy form is a tuple (kind, keys, position, has_gauss, cached); numpy's stubs also allow a dict.
    kind, keys, position, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions() -> dict[str, str]:
    return {
        "dogbreed": dogbreed.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint written by `atomic_torch_save`, tensors only (no pickled code)."""
    if not path.is_file():
        raise WeightsError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise WeightsError(f"{path} is not a readable checkpoint ({err})") from None


def find_resumable(output_root: Path) -> Path | None:
    """The newest checkpoint under `output_root` whose run did not finish (no metrics.json)."""
    candidates = [
        path for path in output_root.glob(f"**/{CHECKPOINT_NAME}") if not (path.parent / "metrics.json").exists()
    ]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


@dataclass
class TrainingState:
    """Everything besides model/optimizer/scheduler that a resumed run needs."""

    epoch: int = 0
    best_loss: float = float("inf")
    best_epoch: int = 0
    best_top1: float = 0.0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_model: dict[str, torch.Tensor] | None = None
    # An interrupted epoch: batches of epoch `epoch + 1` already trained, and their loss/accuracy sums.
    step: int = 0
    partial: dict[str, float] | None = None


def save_training_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    state: TrainingState,
    config: dict[str, Any],
    class_names: list[str],
) -> None:
    """Writes everything a resumed run needs to `path`, atomically.

    The model's whole state_dict is saved, also when only its head trains. `config`, the
    run's resolved configuration as plain containers, and the library versions are kept
    for whoever reads the checkpoint later.
    """
    atomic_torch_save(
        {
            "format": 1,
            "epoch": state.epoch,
            "step": state.step,
            "partial_epoch": state.partial,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "early_stopping": {
                "best_loss": state.best_loss,
                "best_epoch": state.best_epoch,
                "best_top1": state.best_top1,
                "bad_epochs": state.bad_epochs,
            },
            # Omitted when the current weights are the best, to keep checkpoints small.
            "best_model": None if state.best_epoch == state.epoch and not state.step else state.best_model,
            "history": state.history,
            "config": config,
            "class_names": class_names,
            "versions": versions(),
        },
        path,
    )


def restore_training_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    class_names: list[str],
) -> TrainingState:
    """Loads a `save_training_checkpoint` file into the given objects and returns the rest.

    Raises:
        DataError: The checkpoint was trained on other classes than `class_names`.
    """
    saved = load_checkpoint(path)
    if saved["class_names"] != class_names:
        raise DataError(
            f"cannot resume from {path}: it was trained on {len(saved['class_names'])} classes "
            f"that differ from the {len(class_names)} in data.root"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    restore_rng_state(saved["rng"])
    stopping = saved["early_stopping"]
    best_model = saved["best_model"] if saved["best_model"] is not None else copy.deepcopy(saved["model"])
    log.info("resumed from %s after epoch %d, batch %d", path, saved["epoch"], saved.get("step", 0))
    return TrainingState(
        epoch=saved["epoch"],
        best_loss=stopping["best_loss"],
        best_epoch=stopping["best_epoch"],
        best_top1=stopping["best_top1"],
        bad_epochs=stopping["bad_epochs"],
        history=saved["history"],
        best_model=best_model,
        step=saved.get("step", 0),
        partial=saved.get("partial_epoch"),
    )
