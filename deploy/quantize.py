"""`deploy.model.precision=int8`: the trained network quantised at package time, checked against the float one.

Calibration runs a bounded, seeded sample of the run's own training images through the network as the
endpoint prepares them (decode, eval preset, uint8 in, normalised by `ServedModel`). Then the float and
the int8 network answer the run's whole validation split; the package is refused unless their top-1
answers agree on at least `min_agreement` of the images and the int8 top-1 accuracy is at most
`max_top1_drop` below the float one. The report (calibration size and digest, agreement, both
accuracies) goes into serving.json.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploy.precision import FLOAT, INT8, ModelSettings
from dogbreed.data.folders import breed_name, discover_classes
from dogbreed.data.scan import scan_split
from dogbreed.errors import DogbreedError
from dogbreed.serving import int8
from dogbreed.serving.handler import ServedModel, to_batch
from dogbreed.serving.preprocess import EvalPreset, decode_image

log = logging.getLogger(__name__)

BATCH = 32


class QuantizeError(DogbreedError):
    """The run cannot be packaged as int8: no data to calibrate on, or the int8 model answers too differently."""


@dataclass(frozen=True)
class Images:
    """Image files and their class indices, read and cropped as the endpoint would."""

    samples: Sequence[tuple[Path, int]]
    preset: EvalPreset

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 NCHW batch, targets) of at most BATCH images."""
        for start in range(0, len(self.samples), BATCH):
            chunk = self.samples[start : start + BATCH]
            crops = [self.preset.crop(decode_image(path, min_size=self.preset.resize_size)) for path, _ in chunk]
            yield to_batch(crops, torch.device("cpu")), torch.tensor([target for _, target in chunk])


def calibration_sample(samples: Sequence[tuple[Path, int]], settings: ModelSettings) -> list[tuple[Path, int]]:
    """`calibration_images` training images drawn with `calibration_seed`, in a fixed order.

    Raises:
        QuantizeError: the split has fewer images than that.
    """
    if len(samples) < settings.calibration_images:
        raise QuantizeError(
            f"int8 calibration needs deploy.model.calibration_images={settings.calibration_images} training images "
            f"and the run's training split has {len(samples)}; lower it, or set deploy.model.data_root; nothing written"
        )
    ordered = sorted(samples)
    return random.Random(settings.calibration_seed).sample(ordered, settings.calibration_images)


def digest(samples: Sequence[tuple[Path, int]], root: Path) -> str:
    """SHA-256 of the calibration files: their paths under the data root and their bytes, in order."""
    hasher = hashlib.sha256()
    for path, _ in samples:
        hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def splits(root: Path, labels: list[str]) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """The checked training and validation images of `root`, whose classes must be the run's labels.

    Raises:
        QuantizeError: the folder holds other classes than the run was trained on.
    """
    folders = discover_classes(root, ("train", "valid"))
    if [breed_name(folder) for folder in folders] != labels:
        raise QuantizeError(
            f"{root} holds {len(folders)} classes that are not the run's {len(labels)} (labels.json); "
            "set deploy.model.data_root to the data the run trained on; nothing written"
        )
    return scan_split(root, "train", folders).samples, scan_split(root, "valid", folders).samples


def quantize(network: nn.Module, labels: list[str], image_size: int, root: Path, settings: ModelSettings) -> Any:
    """The int8 network of a float one, and the report for serving.json.

    Raises:
        QuantizeError: too few training images, other classes, or agreement or accuracy below the limits.
    """
    if (reason := int8.unsupported()) is not None:
        raise QuantizeError(f"deploy.model.precision=int8: {reason}")
    train, valid = splits(root, labels)
    chosen = calibration_sample(train, settings)
    preset = EvalPreset(image_size)
    network = network.float().cpu().eval()
    prepared = int8.prepare(network, image_size)
    observing = ServedModel(prepared, torch.float32).eval()
    with torch.inference_mode():
        for batch, _ in Images(chosen, preset).batches():
            observing(batch)
    quantized = int8.convert(prepared)
    log.info("calibrated int8 on %d training images; checking it on %d validation images", len(chosen), len(valid))
    checked = compare(ServedModel(network, torch.float32), ServedModel(quantized, torch.float32), Images(valid, preset))
    report = {
        "scheme": int8.SCHEME,
        "engine": int8.ENGINE,
        "calibration": {"images": len(chosen), "seed": settings.calibration_seed, "sha256": digest(chosen, root)},
        **checked,
    }
    check_agreement(checked, settings)
    return quantized, report


def compare(float_model: nn.Module, int8_model: nn.Module, images: Images) -> dict[str, Any]:
    """Top-1 agreement of the two models and each one's top-1 accuracy on `images`."""
    agree = float_right = int8_right = 0
    with torch.inference_mode():
        for batch, targets in images.batches():
            float_top1 = float_model(batch).argmax(dim=1)
            int8_top1 = int8_model(batch).argmax(dim=1)
            agree += int((float_top1 == int8_top1).sum())
            float_right += int((float_top1 == targets).sum())
            int8_right += int((int8_top1 == targets).sum())
    count = max(1, len(images.samples))
    return {
        "validation_images": len(images.samples),
        "top1_agreement": round(agree / count, 4),
        "top1": {FLOAT: round(float_right / count, 4), INT8: round(int8_right / count, 4)},
    }


def check_agreement(checked: dict[str, Any], settings: ModelSettings) -> None:
    """Raises QuantizeError when the int8 model answers too differently; logs the figures either way."""
    agreement, top1 = checked["top1_agreement"], checked["top1"]
    figures = (
        f"top-1 agreement {agreement:.4f} on {checked['validation_images']} validation images, "
        f"top-1 float {top1[FLOAT]:.4f} vs int8 {top1[INT8]:.4f}"
    )
    log.info("int8 check: %s", figures)
    if agreement < settings.min_agreement:
        raise QuantizeError(
            f"int8 refused: {figures}; the agreement is below deploy.model.min_agreement={settings.min_agreement} "
            "(more deploy.model.calibration_images may help); nothing written"
        )
    if top1[FLOAT] - top1[INT8] > settings.max_top1_drop:
        raise QuantizeError(
            f"int8 refused: {figures}; the accuracy drops more than deploy.model.max_top1_drop="
            f"{settings.max_top1_drop}; nothing written"
        )
