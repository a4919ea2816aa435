"""One training epoch and one evaluation pass, as plain functions."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sized
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from dogbreed.train.distributed import all_reduce_sum
from dogbreed.train.metrics import ConfusionMatrix, accuracy
from dogbreed.train.network import train_mode
from dogbreed.train.runtime import Runtime


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    images: int
    confusion: ConfusionMatrix


def _batches(loader: Iterable, limit: int | None) -> Iterable:
    return itertools.islice(loader, limit) if limit else loader


def _total(loader: Iterable, limit: int | None) -> int | None:
    length = len(loader) if isinstance(loader, Sized) else None
    return min(length, limit) if (length is not None and limit) else (length or limit)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    desc: str,
    limit_batches: int | None = None,
    progress: bool = True,
) -> EpochResult:
    """Trains for one pass over `loader` (or its first `limit_batches` batches)."""
    train_mode(model)
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    images = 0
    start = time.perf_counter()
    bar = tqdm(
        _batches(loader, limit_batches),
        total=_total(loader, limit_batches),
        desc=desc,
        leave=False,
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    for step, (inputs, targets) in enumerate(bar):
        inputs = runtime.to_device(inputs)
        targets = targets.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            outputs = model(inputs)
            loss = criterion(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        batch = targets.shape[0]
        images += batch
        # Accumulate on the device: a .item() per step would force a sync on GPU.
        loss_sum += loss.detach() * batch
        correct += (outputs.argmax(dim=1) == targets).sum()
        if step % 10 == 0 or images == batch:
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{loss_sum.item() / images:.3f}",
                acc=f"{correct.item() / images:.3f}",
                img_s=f"{images / elapsed:.1f}",
            )
    bar.close()
    seconds = time.perf_counter() - start
    # Under DDP each rank saw its own shard: the epoch's numbers are the sums over ranks.
    loss_total, correct_total, images = all_reduce_sum([loss_sum.item(), correct.item(), images]).tolist()
    if images == 0:
        raise RuntimeError("the training loader produced no batches")
    return EpochResult(loss_total / images, correct_total / images, int(images), seconds)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    runtime: Runtime,
    num_classes: int,
    desc: str,
    limit_batches: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Loss, top-1, top-5 and the confusion matrix over `loader`."""
    model.eval()
    loss_sum = 0.0
    top1_hits = top5_hits = 0.0
    images = 0
    confusion = ConfusionMatrix(num_classes)
    bar = tqdm(
        _batches(loader, limit_batches),
        total=_total(loader, limit_batches),
        desc=desc,
        leave=False,
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    for inputs, targets in bar:
        inputs = runtime.to_device(inputs)
        targets = targets.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            outputs = model(inputs)
        outputs = outputs.float()
        batch = targets.shape[0]
        loss_sum += criterion(outputs, targets).item() * batch
        top1, top5 = accuracy(outputs, targets, topk=(1, 5))
        top1_hits += top1 * batch
        top5_hits += top5 * batch
        images += batch
        confusion.update(outputs.argmax(dim=1), targets)
    bar.close()
    # Each rank evaluated a disjoint shard: summing gives exactly the single-process result.
    loss_sum, top1_hits, top5_hits, images = all_reduce_sum([loss_sum, top1_hits, top5_hits, images]).tolist()
    confusion.counts = all_reduce_sum(confusion.counts).round().long()
    if images == 0:
        raise RuntimeError("the evaluation loader produced no batches")
    return EvalResult(loss_sum / images, top1_hits / images, top5_hits / images, int(images), confusion)
