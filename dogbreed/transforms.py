"""Training preprocessing: the random-crop train preset.

Decoding and the evaluation preset are `dogbreed.serving.preprocess`, shared with
the inference handler; the train preset normalises with the same ImageNet statistics.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

from dogbreed.serving.preprocess import IMAGENET_MEAN, IMAGENET_STD


class TrainPreset:
    """Random resized crop + flip, then tensor conversion and normalisation."""

    def __init__(self, image_size: int) -> None:
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.RandomResizedCrop(image_size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)
