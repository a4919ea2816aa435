"""What `deploy.model` asks of the packaged network: its precision, and for int8 its calibration and checks.

Plain values only (no torch), so the commands that never package load fast.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT, INT8 = "float", "int8"
PRECISIONS = (FLOAT, INT8)


@dataclass(frozen=True)
class ModelSettings:
    """`deploy.model` (conf/deploy.yaml): the precision of the packaged network and, for int8, its
    calibration and checks."""

    precision: str
    calibration_images: int
    calibration_seed: int
    min_agreement: float
    max_top1_drop: float
    data_root: str | None  # null: the run's own data.root
