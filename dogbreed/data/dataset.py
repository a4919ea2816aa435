"""The Dataset over a checked split: decoded RGB images and their class indices."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from dogbreed.serving.preprocess import decode_image

log = logging.getLogger(__name__)


class ImageFolderDataset(Dataset):
    """Decodes images lazily; `min_decode_size` enables JPEG draft-mode decoding."""

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: Callable[[Image.Image], torch.Tensor],
        min_decode_size: int | None = None,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.min_decode_size = min_decode_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        return self.transform(decode_image(path, self.min_decode_size)), target

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]
