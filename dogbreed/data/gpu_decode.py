"""JPEG decoding on the GPU (nvJPEG) for full fine-tunes that outrun the CPU input pipeline.

At thousands of images/s a GPU needs more decoded JPEGs than a CPU instance's
cores can produce. Here DataLoader workers only read file bytes; the main process
decodes the whole batch on the device with `torchvision.io.decode_jpeg` and runs
the same crop/flip/resize/normalise steps as `dogbreed.data.transforms` on device
tensors. Non-JPEG files (PNG) and JPEGs nvJPEG rejects (e.g. CMYK) are decoded
on the CPU and moved over. The same code runs with a CPU device, which is how it
is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2

from dogbreed.serving.preprocess import IMAGENET_MEAN, IMAGENET_STD, resize_size_for

JPEG_MAGIC = b"\xff\xd8"


class EncodedImages(Dataset):
    """(file bytes as a uint8 tensor, target): nothing is decoded in the workers."""

    def __init__(self, samples: list[tuple[Path, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        return read_file(str(path)), target

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]


def collate_encoded(batch: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [data for data, _ in batch], torch.tensor([target for _, target in batch])


class DeviceBatchTransform:
    """Decodes a list of encoded images on `device` and applies the train or eval preset per image."""

    def __init__(self, image_size: int, train: bool, device: torch.device, channels_last: bool = True) -> None:
        self.device = device
        self.channels_last = channels_last
        if train:
            self.geometry = v2.Compose([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()])
        else:
            self.geometry = v2.Compose(
                [v2.Resize(resize_size_for(image_size), antialias=True), v2.CenterCrop(image_size)]
            )
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def decode(self, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        is_jpeg = [bytes(data[:2].tolist()) == JPEG_MAGIC for data in encoded]
        jpegs = [data for data, flag in zip(encoded, is_jpeg, strict=True) if flag]
        try:
            decoded = iter(
                decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True)
                if jpegs
                else []
            )
        except RuntimeError:  # one image nvJPEG cannot handle fails the batch: decode those on the CPU
            decoded = iter(
                [
                    decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True).to(self.device)
                    for data in jpegs
                ]
            )
        return [
            next(decoded)
            if flag
            else decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True).to(self.device)
            for data, flag in zip(encoded, is_jpeg, strict=True)
        ]

    def __call__(self, encoded: list[torch.Tensor]) -> torch.Tensor:
        images = torch.stack([self.geometry(image) for image in self.decode(encoded)])
        images = (images.float().div_(255) - self.mean) / self.std
        return images.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


class DeviceDecodingLoader:
    """Iterates a DataLoader of encoded images, yielding decoded, transformed device batches."""

    def __init__(self, loader: DataLoader, transform: DeviceBatchTransform) -> None:
        self.loader = loader
        self.transform = transform
        self.dataset = loader.dataset
        self.sampler = loader.sampler
        self.generator = loader.generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for encoded, targets in self.loader:
            yield self.transform(encoded), targets
