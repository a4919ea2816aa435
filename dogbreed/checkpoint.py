"""Self-describing, atomically written checkpoints, and the RNG state they carry."""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torchvision

import dogbreed
from dogbreed.errors import WeightsError

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.pth"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Writes next to `path`, then renames: a crash mid-write never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as out:
            torch.save(obj, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
