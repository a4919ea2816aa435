"""Trained tiny runs and what a run directory holds."""

from __future__ import annotations

from pathlib import Path

from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.config import compose_config, shrunk_overrides

# Every artifact a local run writes.
ARTIFACTS = [
    "model.pth",
    "labels.json",
    "checkpoint.pt",
    "metrics.json",
    "metrics.csv",
    "curves.png",
    "confusion.png",
    "skipped_files.txt",
]


def train_run(output_dir: Path, data_root: Path) -> Path:
    """A ResNet18 trained one epoch on the tiny dataset (4 classes, 32 px): seconds on CPU."""
    cfg = compose_config(shrunk_overrides(output_dir, data_root))
    train(run_settings(cfg))
    return output_dir
