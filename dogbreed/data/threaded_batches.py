"""Batches decoded on a pool of threads, one batch at a time, for models that run on the CPU.

When the model runs on the same cores as the decoding, DataLoader worker processes that
decode the next batch while the model runs take cores from the model's thread team,
whose threads then wait at every barrier for the one that was preempted; on 2 cores that
cost a third of the throughput. Here decoding and the model take turns, each with every
core: the decode (PIL, which releases the GIL) runs on `threads` threads, then the model
runs on its own. Items come back as uint8 HxWx3 crops; the batch is their stack, viewed
as NCHW, which is the channels_last layout the model wants, without a copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import torch

Item = tuple[torch.Tensor, int]


class Items(Protocol):
    """A map-style dataset: its length, and an item per index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Item: ...


def stack_crops(items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
    """(3xHxW uint8 views of HxWx3 memory, target) pairs -> an NCHW channels_last uint8 batch and targets."""
    images = torch.stack([image.permute(1, 2, 0) for image, _ in items]).permute(0, 3, 1, 2)
    return images, torch.tensor([target for _, target in items], dtype=torch.long)


class ThreadedBatches:
    """Iterates `dataset` in order, `batch_size` items a batch, each batch's items loaded on `threads` threads."""

    def __init__(self, dataset: Items, batch_size: int, threads: int) -> None:
        if batch_size < 1 or threads < 1:
            raise ValueError(f"batch_size and threads must be at least 1, got {batch_size} and {threads}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.threads = threads

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="decode") as pool:
            for start in range(0, len(self.dataset), self.batch_size):
                indices = range(start, min(start + self.batch_size, len(self.dataset)))
                yield stack_crops(list(pool.map(self.dataset.__getitem__, indices)))
