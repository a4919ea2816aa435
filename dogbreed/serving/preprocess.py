"""Decoding and the evaluation preset, shared by evaluation and the inference handler.

What the endpoint does to an image is, by construction, what evaluation did:
both call `decode_image` and `EvalPreset`. ImageNet normalisation is part of the
preset (the course recipe left it out, which costs accuracy with pretrained
weights).

This module must import on the serving container's versions (PyTorch 2.6,
torchvision 0.21, Python 3.12), so it only uses APIs present there.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image, ImageFile
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A dataset image that ends early (dogImages has one) still decodes into a
# usable picture with a grey tail; the scan reports such files, and every
# later decode accepts them instead of failing mid-epoch.
ImageFile.LOAD_TRUNCATED_IMAGES = True


def resize_size_for(image_size: int) -> int:
    """Shorter-side size before the centre crop (256 for 224, as torchvision)."""
    return round(image_size * 256 / 224)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts grayscale, CMYK, palette and alpha images to RGB.

    Transparent areas become white rather than whatever colour the hidden
    pixels happen to hold.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_image(source: str | Path | bytes, min_size: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decodes a file path or encoded bytes into an RGB PIL image.

    With `min_size`, JPEGs much larger than needed are decoded at a reduced
    scale (PIL draft mode, DCT downscaling), never below `min_size` on the
    shorter side, which is the size the eval preset resizes to anyway.

    Raises:
        ValueError: the header declares more than `max_pixels` pixels; checked
            before any pixel is decoded, so a decompression bomb costs nothing.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as image:
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ValueError(f"image is {image.width}x{image.height} pixels, more than the limit of {max_pixels:,}")
        if min_size is not None and image.format == "JPEG":
            width, height = image.size
            scale = min_size / min(width, height)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        image.load()
        return to_rgb(image)


class EvalPreset:
    """Resize the shorter side, centre crop, normalise: evaluation and serving."""

    def __init__(self, image_size: int) -> None:
        self.resize_size = resize_size_for(image_size)
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize(self.resize_size, antialias=True),
                v2.CenterCrop(image_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)
