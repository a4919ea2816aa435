"""TensorBoard: per-epoch scalars, the hyperparameters with the final metrics, the plots as images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dogbreed.tracking.base import RunInfo, flatten


def hparam_value(value: Any) -> int | float | str | bool:
    """TensorBoard's hparams take numbers, strings and booleans; anything else is shown as JSON."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


class TensorBoardLogger:
    """Event files under `log_dir` (the run dir's `tensorboard/` by default)."""

    name = "tensorboard"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self.hparams: dict[str, int | float | str | bool] = {}

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter  # loaded only when this logger is chosen

        self.writer = SummaryWriter(str(self.log_dir))
        self.hparams = {key: hparam_value(value) for key, value in flatten(run.params).items()}

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()  # a crash or a stop later still leaves every finished epoch readable

    def log_final(self, metrics: dict[str, float], artifacts: list[Path]) -> None:
        # run_name="." keeps the hparams entry in this run's directory (the default adds a timestamped one).
        self.writer.add_hparams(self.hparams, metrics, run_name=".")
        for path in artifacts:
            if path.suffix == ".png":
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                self.writer.add_image(path.stem, pixels, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()
