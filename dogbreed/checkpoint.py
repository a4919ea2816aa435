"""Self-describing, atomically written checkpoints, and the RNG state they carry."""

from __future__ import annotations

import copy
import errno
import logging
import os
import platform
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import torch
import torchvision
from torch import nn

import dogbreed
from dogbreed.errors import DataError, DogbreedError, WeightsError

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.pth"


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# `.<name>.<pid>.tmp`: the temporary file of an atomic write by process <pid>.
TEMPORARY_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
# Temporaries older than this process were left by an earlier one, even when their pid was reused.
PROCESS_STARTED = time.time()


class DiskFullError(DogbreedError):
    """A write ran out of disk space or quota; the previous version of the file is untouched."""


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes next to `path`, then renames: a crash or a full disk never leaves a torn file.

    Raises:
        DiskFullError: The disk or the quota is full; names the path, the space needed and free.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as err:  # torch.save wraps the OSError of a write in a RuntimeError
        if _disk_full(err):
            raise _disk_full_error(path, temporary) from err
        raise
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: Path) -> None:
    atomic_write(path, lambda out: out.write(data))


def atomic_write_text(text: str, path: Path) -> None:
    """UTF-8; characters that do not encode (lone surrogates from odd file names) as backslash escapes."""
    atomic_write_bytes(text.encode("utf-8", errors="backslashreplace"), path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` through `atomic_write`."""
    atomic_write(path, lambda out: torch.save(obj, out))


def _disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from or while handling, is ENOSPC or EDQUOT."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _disk_full_error(path: Path, temporary: Path) -> DiskFullError:
    """Names the path, how much was written before the disk filled (or the last version's size), and what is free."""
    needed = max((p.stat().st_size for p in (temporary, path) if p.exists()), default=0)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    return DiskFullError(
        f"no space left on the disk holding {path}: writing it needs at least {_megabytes(needed)}"
        f" and {_megabytes(free)} is free (disk or quota full); free some space and rerun"
        " (trainer.resume=auto continues from the last checkpoint)"
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def remove_stale_temporaries(*directories: Path) -> list[Path]:
    """Deletes the `.<name>.<pid>.tmp` files that killed atomic writes left in `directories`.

    Only ours (that name pattern), and only when their process is gone or the file is older
    than this process (the pid was reused, as in a restarted container); returns what was removed.
    """
    removed = []
    for entry in (e for directory in directories for e in directory.glob(".*.tmp")):
        match = TEMPORARY_PATTERN.match(entry.name)
        if match is None or not entry.is_file():
            continue
        try:
            stale = not _process_alive(int(match["pid"])) or entry.stat().st_mtime < PROCESS_STARTED
            if stale:
                entry.unlink()
                removed.append(entry)
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes: %s", len(removed), removed)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OverflowError, OSError):
        return False
    return True


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
