"""The eval preset (PIL resize + crop on uint8, one float op) matches torchvision's tensor pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from dogbreed.data.synthetic import SyntheticSpec, render
from dogbreed.data.transforms import TrainPreset
from dogbreed.serving.preprocess import IMAGENET_MEAN, IMAGENET_STD, EvalPreset

LEVEL = 1 / 255 / min(IMAGENET_STD)  # one uint8 step, normalised


def torchvision_preset(image_size: int) -> v2.Compose:
    """The preset as it was: antialiased tensor resize, centre crop, ToDtype, Normalize."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(round(image_size * 256 / 224), antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


# dogImages-sized both ways, already at the resize size, upsampled, and reduced 8x.
CASES = [((500, 375), 224), ((375, 500), 224), ((341, 256), 224), ((90, 70), 64), ((257, 1000), 32)]


@pytest.mark.parametrize(("size", "image_size"), CASES)
def test_eval_preset_matches_torchvision_within_resampling_rounding(size: tuple[int, int], image_size: int) -> None:
    image = render(3, SyntheticSpec(classes=4, width=size[0], height=size[1]), np.random.default_rng(0))
    ours, theirs = EvalPreset(image_size)(image), torchvision_preset(image_size)(image)
    assert ours.shape == theirs.shape == (3, image_size, image_size)
    difference = (ours - theirs).abs()
    assert difference.max() <= 2 * LEVEL + 1e-5  # the two bilinear filters round differently
    assert difference.mean() <= 0.25 * LEVEL  # mostly the same value: a few pixels one step apart


def test_crop_is_uint8_in_the_models_channels_last_layout() -> None:
    crop = EvalPreset(32).crop(Image.new("RGB", (60, 40), (10, 20, 30)))
    assert crop.dtype == torch.uint8 and crop.shape == (3, 32, 32) and crop.stride() == (1, 96, 3)
    assert crop[:, 0, 0].tolist() == [10, 20, 30]


def test_train_preset_normalises_its_uint8_crop_as_torchvision_would() -> None:
    image = render(1, SyntheticSpec(classes=4, width=500, height=375), np.random.default_rng(0))
    crop = [v2.PILToTensor(), v2.RandomResizedCrop(64, antialias=True), v2.RandomHorizontalFlip()]
    reference = v2.Compose([*crop, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    torch.manual_seed(3)
    theirs = reference(image)
    torch.manual_seed(3)
    ours = TrainPreset(64)(image)
    assert torch.allclose(ours, theirs, atol=1e-5)
