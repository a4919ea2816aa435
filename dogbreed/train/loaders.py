"""The data a run trains on: the dataset on disk, its checked splits, and their loaders.

Everything here takes plain values or the small settings below; `dogbreed.train.run`
builds those from the Hydra config once.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dogbreed.data.dataset import ImageFolderDataset
from dogbreed.data.download import fetch_dogimages
from dogbreed.data.folders import SPLITS, printable
from dogbreed.data.gpu_decode import DeviceBatchTransform, DeviceDecodingLoader, EncodedImages, collate_encoded
from dogbreed.data.scan import Split, check_classes_have_images, check_splits, list_split
from dogbreed.data.synthetic import SyntheticSpec, generate
from dogbreed.data.transforms import TrainPreset
from dogbreed.errors import ConfigError, DataError
from dogbreed.serving.preprocess import EvalPreset, resize_size_for
from dogbreed.storage.mirror import sync_to_cache
from dogbreed.train import distributed
from dogbreed.train.features import ExtractionSettings, FeatureCache, FeatureViews, backbone_of, module_digest
from dogbreed.train.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """Where the splits come from (`data.*`).

    Attributes:
        root: A local folder, or an s3:// prefix mirrored into `s3_cache`.
        synthetic: Generate the dataset at `root` instead of reading one.
        download_url: Fetched into `root` when the folder does not exist; empty to refuse.
        expected_classes: Checked against the download.
        s3_cache: The local mirror of an s3:// root.
    """

    root: str
    synthetic: SyntheticSpec | None
    download_url: str | None
    expected_classes: int | None
    s3_cache: Path


@dataclass(frozen=True)
class LoaderSettings:
    """How the split loaders batch, shuffle and decode.

    Attributes:
        image_size: Side of the square crops the model sees.
        batch_size: Training batch per rank.
        eval_batch_size: Validation and test batch per rank.
        workers: DataLoader worker processes (already resolved from `auto`).
        seed: Seeds the training order of each epoch, with the epoch number.
        decode_on_device: Decode JPEGs on the training device instead of in the workers.
    """

    image_size: int
    batch_size: int
    eval_batch_size: int
    workers: int
    seed: int
    decode_on_device: bool = False


@dataclass(frozen=True)
class FeatureCacheSettings:
    """Where backbone features are cached and how they are extracted.

    Attributes:
        directory: Shared by every run and sweep trial on the machine.
        train_views: Stored views per training image; the other splits keep one.
        extraction: How the backbone pass runs.
    """

    directory: Path
    train_views: int
    extraction: ExtractionSettings


def worker_count(setting: int | str) -> int:
    """`auto` is one worker per core, at most 8; an int is taken as is."""
    if setting == "auto":
        return min(os.cpu_count() or 1, 8)
    return int(setting)


def prepare_data_root(source: DataSource) -> Path:
    """Makes sure the source's root holds the splits: sync, generate, download, or use what is there."""
    root = Path(source.root)
    if source.root.startswith("s3://"):  # mirrored into a local cache, then read from there
        return sync_to_cache(source.root, source.s3_cache)
    if source.synthetic is not None:
        return generate(root, source.synthetic)
    if root.exists():
        return root
    if not source.download_url:
        raise DataError(
            f"{root} does not exist and data.download_url is empty; set data.root=... or use data=synthetic"
        )
    return fetch_dogimages(root, source.download_url, source.expected_classes)


def scan_dataset(
    root: Path,
    folders: list[str],
    scan_workers: int,
    record_dir: Path | None = None,
    meanwhile: Callable[[dict[str, int]], object] | None = None,
) -> dict[str, Split]:
    """The checked files of each split of `folders` (from `discover_classes`); recorded verdicts are reused.

    `meanwhile`, given each split's number of candidate images, runs while they are checked:
    only on a dataset that no scan record knows (see `check_splits`).
    """
    started = time.perf_counter()
    listings = [list_split(root, name, folders, record_dir) for name in SPLITS]
    counts = {listing.split: len(listing.candidates) for listing in listings}
    beside = functools.partial(meanwhile, counts) if meanwhile is not None else None
    splits = {split.name: split for split in check_splits(listings, scan_workers, beside)}
    found = ", ".join(f"{name} {len(split.samples)}" for name, split in splits.items())
    how = "checked" if any(listing.needs_checking for listing in listings) else "verdicts from the scan record"
    log.info("%d classes; images %s (%s in %.1f s)", len(folders), found, how, time.perf_counter() - started)
    for split in splits.values():
        for item in split.skipped:
            log.warning("%s %s: %s", "kept" if item.kept else "skipped", printable(item.path), item.reason)
    check_classes_have_images(folders, splits)
    return splits


def prepare_root(source: DataSource, context: distributed.Context) -> Path:
    """One process per machine fetches/generates the data; every rank gets the local root."""
    if context.local_rank == 0:
        root = prepare_data_root(source)
    distributed.barrier()
    if context.local_rank != 0:
        root = prepare_data_root(source)  # already there: returns at once
    return root


def scan_on_main(
    root: Path,
    folders: list[str],
    scan_workers: int,
    context: distributed.Context,
    record_dir: Path | None = None,
    meanwhile: Callable[[dict[str, int]], object] | None = None,
) -> dict[str, Split]:
    """Rank 0's `scan_dataset`, shared by every rank (`meanwhile` runs on rank 0 only)."""
    scanned = scan_dataset(root, folders, scan_workers, record_dir, meanwhile) if context.is_main else None
    return distributed.broadcast_object(scanned)


def sampling(dataset: Any, is_train: bool, context: distributed.Context, seed: int) -> dict[str, Any]:
    """DataLoader sampling arguments: each rank its own shard under torchrun, else plain shuffling."""
    if not context.enabled:
        return {"shuffle": is_train}
    if is_train:  # reshuffled per epoch by set_epoch in start_epoch
        return {"sampler": DistributedSampler(dataset, context.world_size, context.rank, shuffle=True, seed=seed)}
    return {"sampler": distributed.ShardSampler(len(dataset), context)}


def batching(settings: LoaderSettings, dataset: Sized, is_train: bool, context: distributed.Context) -> dict[str, Any]:
    """DataLoader arguments for batch size, order and sharding, the same for images and features."""
    return {
        "batch_size": settings.batch_size if is_train else settings.eval_batch_size,
        # A last batch of one sample breaks BatchNorm in training mode.
        "drop_last": is_train and len(dataset) > settings.batch_size * context.world_size,
        "generator": torch.Generator() if is_train else None,
        **sampling(dataset, is_train, context, settings.seed),
    }


def make_loaders(
    settings: LoaderSettings, splits: dict[str, Split], runtime: Runtime, context: distributed.Context
) -> dict[str, DataLoader | DeviceDecodingLoader]:
    """Image loaders for each split: decoded and augmented in workers, or on the device."""
    common: dict[str, Any] = {
        "num_workers": settings.workers,
        "pin_memory": runtime.device.type == "cuda",
        # Workers are re-created each epoch and seeded from the loader's generator, which
        # is what makes a resumed run draw the same augmentations as an uninterrupted one.
        "persistent_workers": False,
    }
    loaders: dict[str, DataLoader | DeviceDecodingLoader] = {}
    for name in SPLITS:
        is_train = name == "train"
        samples = splits[name].samples
        dataset: Dataset
        if settings.decode_on_device:
            dataset = EncodedImages(samples)
            common["collate_fn"] = collate_encoded
        else:
            preset = TrainPreset(settings.image_size) if is_train else EvalPreset(settings.image_size)
            dataset = ImageFolderDataset(samples, preset, resize_size_for(settings.image_size))
        loader = DataLoader(dataset, **batching(settings, dataset, is_train, context), **common)
        if settings.decode_on_device:
            transform = DeviceBatchTransform(settings.image_size, is_train, runtime.device, runtime.channels_last)
            loaders[name] = DeviceDecodingLoader(loader, transform)
        else:
            loaders[name] = loader
    return loaders


def use_feature_cache(setting: bool | str, freeze: str) -> bool:
    """Whether to train on cached features: `trainer.feature_cache` given `model.freeze`."""
    if setting == "auto":
        return freeze == "backbone"
    if setting and freeze != "backbone":
        raise ConfigError("trainer.feature_cache=true needs model.freeze=backbone (other layers train)")
    return bool(setting)


def compile_while_checking(
    cache_settings: FeatureCacheSettings, cache: FeatureCache, model: nn.Module, runtime: Runtime, world_size: int
) -> Callable[[dict[str, int]], None]:
    """What `scan_dataset` runs while a new dataset's images are checked: compiling the extractor
    for the number of training images this rank will extract (views included)."""

    def compile_ahead(counts: dict[str, int]) -> None:
        images = counts["train"] * cache_settings.train_views // world_size
        cache.compile_ahead(model, images, runtime, cache_settings.extraction)

    return compile_ahead


def make_feature_loaders(
    settings: LoaderSettings,
    cache_settings: FeatureCacheSettings,
    model: nn.Module,
    splits: dict[str, Split],
    runtime: Runtime,
    context: distributed.Context = distributed.SINGLE_PROCESS,
    cache: FeatureCache | None = None,
) -> dict[str, DataLoader]:
    """Loaders over cached backbone features; the model's `fc` head is what trains on them.

    `cache`: one that may have compiled the model's extractor already (`FeatureCache.compile_ahead`).
    """
    cache = cache if cache is not None else FeatureCache(cache_settings.directory)
    digest = module_digest(backbone_of(model))
    loaders = {}
    for name, split in splits.items():
        is_train = name == "train"
        views = cache_settings.train_views if is_train else 1
        dataset = cache.features(model, name, split.samples, views, runtime, cache_settings.extraction, digest, context)
        loaders[name] = DataLoader(dataset, **batching(settings, dataset, is_train, context))
    return loaders


def start_epoch(loader: DataLoader | DeviceDecodingLoader, seed: int, epoch: int) -> None:
    """The data order (and cached view) depends only on (seed, epoch): resumed runs see the same batches."""
    loader.generator.manual_seed(seed + epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if isinstance(loader.dataset, FeatureViews):
        loader.dataset.set_epoch(epoch)
