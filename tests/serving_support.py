"""Helpers shared by the serving tests: a trained tiny run and images of every awkward kind."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

import dogbreed.training
from tests.conftest import compose_config, shrunk_overrides


def train_run(output_dir: Path, data_root: Path) -> Path:
    """A ResNet18 trained one epoch on the tiny dataset (4 classes, 32 px): seconds on CPU."""
    cfg = compose_config(shrunk_overrides(output_dir, data_root))
    dogbreed.training.train(cfg)
    return output_dir


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
