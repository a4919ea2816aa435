"""A generated dogImages-shaped dataset whose classes differ in visual structure.

Each class is a shape (ellipse, rectangle, triangle, ...) filled with stripes
at a class-specific angle and period, in a class-specific hue; position, size,
colours, background and noise vary per image. A CNN learns it from scratch in
a few epochs, so it makes a real, fast check that training works — unlike
random labels, which test nothing. Deterministic by seed.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dogbreed.data.folders import SPLITS
from dogbreed.errors import DataError

log = logging.getLogger(__name__)

SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "ring", "cross")
MANIFEST = "synthetic.json"


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the manifest stores it so a matching folder is reused."""

    classes: int = 10
    train_per_class: int = 30
    valid_per_class: int = 8
    test_per_class: int = 8
    width: int = 160
    height: int = 120
    seed: int = 0
    # Every Nth image is rendered 4x larger (like dogImages' occasional 2000x1500+ photos); 0 = none.
    large_every: int = 0

    def per_class(self, split: str) -> int:
        return {"train": self.train_per_class, "valid": self.valid_per_class, "test": self.test_per_class}[split]


def class_folder(index: int, classes: int) -> str:
    shape, angle, _ = class_style(index, classes)
    return f"{index + 1:03d}.{shape.capitalize()}_{angle}deg"


def class_style(index: int, classes: int) -> tuple[str, int, float]:
    """(shape, stripe angle in degrees, hue in [0, 1)) of one class."""
    shape = SHAPES[index % len(SHAPES)]
    angles_needed = math.ceil(classes / len(SHAPES))
    angle = (index // len(SHAPES)) * 180 // max(angles_needed, 1)
    hue = (index * 0.618034) % 1.0  # golden-ratio spacing keeps neighbouring hues apart
    return shape, angle, hue


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    image = Image.new("HSV", (1, 1), (int(hue * 255) % 256, int(saturation * 255), int(value * 255)))
    return np.asarray(image.convert("RGB"), dtype=np.float32)[0, 0]


def _shape_mask(shape: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    size = rng.uniform(0.45, 0.75) * min(width, height)
    cx = rng.uniform(size / 2, width - size / 2)
    cy = rng.uniform(size / 2, height - size / 2)
    half = size / 2
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "ellipse":
        draw.ellipse(box, fill=255)
    elif shape == "rectangle":
        draw.rectangle((cx - half, cy - half * 0.6, cx + half, cy + half * 0.6), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        inner = half * 0.5
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif shape == "cross":
        arm = half * 0.35
        draw.rectangle((cx - half, cy - arm, cx + half, cy + arm), fill=255)
        draw.rectangle((cx - arm, cy - half, cx + arm, cy + half), fill=255)
    return np.asarray(mask, dtype=np.float32)[..., None] / 255.0


def render(index: int, spec: SyntheticSpec, rng: np.random.Generator, scale: int = 1) -> Image.Image:
    """One image of class `index`, `scale` times the spec's size."""
    shape, angle, hue = class_style(index, spec.classes)
    width, height = spec.width * scale, spec.height * scale
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)

    theta = math.radians(angle + rng.uniform(-8, 8))
    period = min(width, height) / rng.uniform(7, 9)
    phase = rng.uniform(0, 2 * math.pi)
    stripes = np.sin(2 * math.pi * (xs * math.cos(theta) + ys * math.sin(theta)) / period + phase)
    stripes = (stripes > 0).astype(np.float32)[..., None]
    light = _hsv_to_rgb(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.6, 0.9), rng.uniform(0.8, 1.0))
    dark = light * rng.uniform(0.2, 0.4)
    foreground = stripes * light + (1 - stripes) * dark

    base = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.7))
    gradient = (xs / width)[..., None] * rng.uniform(-40, 40, size=3).astype(np.float32)
    background = base + gradient + rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)

    mask = _shape_mask(shape, width, height, rng)
    pixels = mask * foreground + (1 - mask) * background
    pixels += rng.normal(0, 6, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def generate(root: Path, spec: SyntheticSpec) -> Path:
    """Writes the dataset to `root` unless a folder made from the same spec is there."""
    manifest = root / MANIFEST
    if manifest.exists() and json.loads(manifest.read_text()) == asdict(spec):
        return root
    if root.exists() and not manifest.exists():
        raise DataError(
            f"{root} exists and was not made by the synthetic generator, so it is left alone; "
            "point data.root at another folder"
        )
    log.info("generating synthetic dataset at %s (%s)", root, spec)
    staging = root.with_name(root.name + ".generating")
    shutil.rmtree(staging, ignore_errors=True)
    for split_number, split in enumerate(SPLITS):
        for index in range(spec.classes):
            folder = staging / split / class_folder(index, spec.classes)
            folder.mkdir(parents=True)
            for item in range(spec.per_class(split)):
                rng = np.random.default_rng([spec.seed, split_number, index, item])
                large = spec.large_every > 0 and (index * 7919 + item) % spec.large_every == 0
                render(index, spec, rng, scale=4 if large else 1).save(folder / f"img_{item:05d}.jpg", quality=90)
    (staging / MANIFEST).write_text(json.dumps(asdict(spec), indent=2))
    shutil.rmtree(root, ignore_errors=True)
    staging.replace(root)
    return root
