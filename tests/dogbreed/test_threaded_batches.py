"""Batches decoded on threads in turn with the model: order, layout, and errors as DataLoader gives them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dogbreed.data.dataset import ImageFolderDataset
from dogbreed.data.threaded_batches import ThreadedBatches, stack_crops
from dogbreed.serving.preprocess import EvalPreset


def pictures(folder: Path, count: int) -> list[tuple[Path, int]]:
    samples = []
    for index in range(count):
        path = folder / f"{index}.jpg"
        Image.new("RGB", (60 + index, 40), (index * 20, 0, 255 - index * 20)).save(path)
        samples.append((path, index))
    return samples


def test_batches_come_in_order_as_channels_last_uint8_like_a_dataloaders(tmp_path: Path) -> None:
    preset = EvalPreset(32)
    dataset = ImageFolderDataset(pictures(tmp_path, 10), preset.crop, preset.resize_size)
    batches = list(ThreadedBatches(dataset, batch_size=4, threads=3))
    reference = list(DataLoader(dataset, batch_size=4, collate_fn=stack_crops))
    assert [images.shape[0] for images, _ in batches] == [4, 4, 2]
    assert torch.cat([targets for _, targets in batches]).tolist() == list(range(10))
    for (images, _), (expected, _) in zip(batches, reference, strict=True):
        assert images.dtype == torch.uint8 and images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(images, expected)


def test_an_unreadable_image_stops_the_iteration_with_its_error(tmp_path: Path) -> None:
    samples = pictures(tmp_path, 5)
    samples[3][0].write_bytes(b"not a picture")
    preset = EvalPreset(32)
    batches = ThreadedBatches(ImageFolderDataset(samples, preset.crop, preset.resize_size), batch_size=2, threads=2)
    with pytest.raises(OSError, match=r"3\.jpg"):
        list(batches)
