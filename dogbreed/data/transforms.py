"""Training preprocessing: the random-crop train preset.

Decoding and the evaluation preset are `dogbreed.serving.preprocess`, shared with
the inference handler; the train preset normalises with the same ImageNet statistics.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

from dogbreed.serving.preprocess import normalize


class TrainPreset:
    """Random resized crop + flip on uint8 (`crop`), then normalisation (`__call__`)."""

    def __init__(self, image_size: int) -> None:
        self.transform = v2.Compose(
            [v2.PILToTensor(), v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        )

    def crop(self, image: Image.Image) -> torch.Tensor:
        """The augmented crop, 3xHxW uint8, for a model that normalises itself (`preprocess.Normalize`)."""
        return self.transform(image)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return normalize(self.crop(image))
