"""Images of every awkward kind, written to disk or as bytes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (200, 30, 30), "L": 128, "CMYK": (0, 200, 200, 0), "RGBA": (0, 0, 255, 128), "P": 3}[mode]
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def jpeg_bytes(size: tuple[int, int] = (160, 120), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (500, 375), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header declaring width x height pixels, with a tiny body: decoding it would allocate GBs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
