"""Decoding and the evaluation preset, shared by evaluation and the inference handler.

What the endpoint does to an image is, by construction, what evaluation did:
both call `decode_image` and `EvalPreset`, and both normalise with `normalize` (the
preset's call, or `Normalize` as a model's first module). The course recipe left
ImageNet normalisation out, which costs accuracy with pretrained weights.

This module must import on both serving containers' versions (PyTorch 2.6 and 2.10,
torchvision 0.21 and 0.25, Python 3.12 and 3.13), so it only uses APIs present in all.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from PIL import Image, ImageFile
from torch import nn

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


# PIL's storage per pixel: 1 byte for 8-bit single-band modes, 2 for 16-bit, 4 for the rest
# (multi-band images are stored 4 bytes a pixel, RGB included).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# EXIF orientation -> the transpose that shows the picture upright (the table ImageOps.exif_transpose uses).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION = 0x0112


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """The most that decoding an image of `mode` and `size` holds at once.

    The decoded pixels, plus, for any mode but RGB, up to two full-size 4-byte copies on the way
    to RGB (a palette with transparency goes through RGBA, then onto a white RGB background).
    """
    pixels = size[0] * size[1]
    return pixels * (_PIXEL_BYTES.get(mode, 4) + (0 if mode == "RGB" else 8))


def _orientation(image: Image.Image) -> int:
    with contextlib.suppress(Exception):  # a broken EXIF block is no reason to refuse the picture
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    return 1


def decode_image(
    source: str | Path | bytes,
    min_size: int | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    reserve: Callable[[int], AbstractContextManager[object]] | None = None,
) -> Image.Image:
    """Decodes a file path or encoded bytes into an upright RGB PIL image.

    With `min_size`, images much larger than needed come out reduced, never below
    `min_size` on the shorter side (the size the eval preset resizes to anyway):
    JPEGs decode at a reduced scale (PIL draft mode, DCT downscaling), other formats
    are box-reduced by an integer factor right after decoding. The EXIF orientation
    is applied, so a phone photo stored sideways comes out upright.

    `reserve(n)` is entered around the decode with the bytes it will hold at its
    peak (from the header), so a caller can bound decodes in flight by memory.

    Raises:
        ValueError: the header declares more than `max_pixels` pixels, or a decode
            that would hold more than `max_bytes`; checked before any pixel is
            decoded, so a decompression bomb costs nothing.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as image:
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ValueError(f"image is {image.width}x{image.height} pixels, more than the limit of {max_pixels:,}")
        if min_size is not None and image.format == "JPEG":
            width, height = image.size
            scale = min_size / min(width, height)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        cost = decoded_bytes(image.mode, image.size)
        if max_bytes is not None and cost > max_bytes:
            raise ValueError(
                f"image is {image.width}x{image.height} {image.mode}, {cost:,} bytes decoded, "
                f"more than the limit of {max_bytes:,}"
            )
        with reserve(cost) if reserve is not None else contextlib.nullcontext():
            image.load()
            orientation = _orientation(image)  # after load: a PNG's getexif() decodes the whole image itself
            rgb = to_rgb(image)
            factor = min(rgb.size) // min_size if min_size else 1
            if factor >= 2:  # box average by an integer factor: the preset's resize then has little to do
                rgb = rgb.reduce(factor)
    if orientation in _ORIENTATION:
        rgb = rgb.transpose(_ORIENTATION[orientation])
    return rgb


# (x / 255 - mean) / std as one subtract and one multiply on the uint8 values.
_OFFSET = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
_SCALE = 1 / (torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255)


def normalize(images: torch.Tensor, offset: torch.Tensor = _OFFSET, scale: torch.Tensor = _SCALE) -> torch.Tensor:
    """uint8 3xHxW or Nx3xHxW -> float32, ImageNet-normalised, in the input's memory layout.

    `offset` and `scale` are the constants on the images' device (`Normalize` keeps them as buffers).
    """
    return (images.float() - offset) * scale


class Normalize(nn.Module):
    """`normalize` as a model's first op, so uint8 batches go in; compiled, it fuses into one pass."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", _OFFSET.clone(), persistent=False)
        self.register_buffer("scale", _SCALE.clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.offset, self.scale)


class EvalPreset:
    """Resize the shorter side, centre crop, normalise: evaluation and serving.

    `crop` is PIL work on uint8 (antialiased bilinear, the filter torchvision's antialiased
    tensor resize copies; one thread, the GIL released), so requests prepare their images
    concurrently without starting torch's thread teams. Calling the preset also normalises
    (`normalize`); the served model and the feature extractor take the uint8 crop and
    normalise as their first module (`Normalize`).
    Sizes and crop offsets are torchvision's `Resize(int)` + `CenterCrop`.
    """

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.resize_size = resize_size_for(image_size)

    def crop(self, image: Image.Image) -> torch.Tensor:
        """The resized, centre-cropped image as a 3xHxW uint8 tensor (a view of HxWx3 memory).

        Only the crop is resampled: PIL's `box` maps it back onto the source with the full
        resize's scale, so its filter taps are the full resize's (within a rounding step of
        resizing everything and cropping) at about half the work for a 4:3 picture.
        """
        image = to_rgb(image)
        width, height = image.size
        short, long = sorted((width, height))
        resized_long = int(self.resize_size * long / short)
        size = (self.resize_size, resized_long) if width <= height else (resized_long, self.resize_size)
        left = round((size[0] - self.image_size) / 2.0)
        top = round((size[1] - self.image_size) / 2.0)
        if size == image.size:
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
        else:
            x_scale, y_scale = width / size[0], height / size[1]
            box = (left * x_scale, top * y_scale, (left + self.image_size) * x_scale, (top + self.image_size) * y_scale)
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR, box=box)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)  # no numpy in the container
        return pixels.view(self.image_size, self.image_size, 3).permute(2, 0, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return normalize(self.crop(image))
