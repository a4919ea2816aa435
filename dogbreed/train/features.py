"""Feature cache for frozen-backbone runs: run the backbone once, train the head on tensors.

With `model.freeze=backbone` every epoch of the course recipe recomputed the same
backbone outputs. Here each split's 2048-d features are extracted once, at
inference speed (inference mode, channels_last, bf16, optionally compiled with
freezing), stored on disk, and reused by every later run and sweep trial with the
same backbone weights, files and transform. `views > 1` stores augmented views of
the training images (view 0 is the clean centre crop), cycled through by epoch,
so augmentation is not lost.

The cache file name is a digest of everything that determines its content, so a
stale cache is never used: changed weights, files (path, size, mtime), image
size, views, precision or format give a different name. A file that fails to
load or has the wrong shape is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dogbreed.data.dataset import ImageFolderDataset
from dogbreed.data.scan import files_digest
from dogbreed.data.threaded_batches import ThreadedBatches, stack_crops
from dogbreed.data.transforms import TrainPreset
from dogbreed.errors import ConfigError
from dogbreed.files import atomic_torch_save
from dogbreed.serving.preprocess import EvalPreset, Normalize
from dogbreed.train import distributed
from dogbreed.train.runtime import Runtime

log = logging.getLogger(__name__)

# 2: the eval preset resizes with PIL on uint8 (features within a rounding step of version 1's).
# 3: it resamples only the centre crop (within a rounding step of version 2's).
FORMAT_VERSION = 3
# Below this many images the ~20 s compile of the backbone does not pay for itself on CPU.
COMPILE_MIN_IMAGES = 3000


def backbone_of(model: nn.Module) -> nn.Module:
    """The network up to (not including) the `fc` head, sharing the model's parameters."""
    children = dict(model.named_children())
    if "fc" not in children:
        raise ConfigError("the feature cache needs a torchvision ResNet-style model with an `fc` head")
    return nn.Sequential(*(module for name, module in children.items() if name != "fc"), nn.Flatten(1))


def extractor(model: nn.Module) -> nn.Module:
    """The backbone behind `Normalize`, in eval mode: uint8 batches in, features out.

    A quarter of the bytes to move than float input, and compiled, the normalisation fuses
    into one pass instead of three over the batch.
    """
    return nn.Sequential(Normalize(), backbone_of(model)).eval()


def module_digest(module: nn.Module) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every parameter and buffer."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().view(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ExtractionSettings:
    image_size: int
    batch_size: int
    num_workers: int
    compile: str  # auto | true | false
    seed: int
    progress: bool = True


class FeatureViews(Dataset):
    """(feature, target) pairs of one stored view; `set_epoch` moves to the next view."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        self.features = features  # [views, N, D]
        self.targets = targets
        self.view = 0

    def set_epoch(self, epoch: int) -> None:
        self.view = (epoch - 1) % self.features.shape[0]

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[self.view, index].float(), self.targets[index]


class FeatureCache:
    """Per-split feature files in one directory, shared across runs and sweep trials."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._model: nn.Module | None = None
        self._extractor: nn.Module | None = None
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _forward_for(
        self, model: nn.Module, images: int, runtime: Runtime, setting: str
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """`model`'s extractor, compiled the first time a split is worth it, then reused by every split."""
        if self._extractor is None or self._model is not model:
            self._model, self._extractor, self._compiled = model, extractor(model).to(runtime.device), None
        if self._compiled is None and should_compile(setting, images, runtime):
            self._compiled = compiled(self._extractor)
        return self._compiled if self._compiled is not None else self._extractor

    def compile_ahead(self, model: nn.Module, images: int, runtime: Runtime, settings: ExtractionSettings) -> None:
        """Compiles `model`'s extractor now, on a batch of zeros, if extracting `images` images would.

        For a run on a new dataset, while worker processes check its images: the compile keeps
        one core busy for 10-20 s, the check fills the others, and the extraction reuses it.
        """
        forward = self._forward_for(model, images, runtime, settings.compile)
        if forward is self._extractor:  # not worth compiling
            return
        side = settings.image_size
        with torch.inference_mode(), runtime.autocast():
            # Made as extraction batches are (an NHWC stack viewed as NCHW, under inference mode),
            # or the first real batch would compile again.
            zeros = torch.zeros(settings.batch_size, side, side, 3, dtype=torch.uint8).permute(0, 3, 1, 2)
            forward(runtime.to_device(zeros))

    def features(
        self,
        model: nn.Module,
        split: str,
        samples: list[tuple[Path, int]],
        views: int,
        runtime: Runtime,
        settings: ExtractionSettings,
        backbone_digest: str,
        context: distributed.Context = distributed.SINGLE_PROCESS,
    ) -> FeatureViews:
        """Loads the split's features, extracting and storing them first if needed.

        Under torchrun rank 0 decides whether the cache is usable, for everyone; on a miss
        each rank extracts every world_size-th image and the shards are gathered, so N
        ranks extract each image once in total, about N times faster.
        """
        description = {
            "format": FORMAT_VERSION,
            "split": split,
            "backbone": backbone_digest,
            "files": files_digest(samples),
            "count": len(samples),
            "image_size": settings.image_size,
            "views": views,
            "precision": runtime.precision,
            "seed": settings.seed if views > 1 else None,
        }
        name = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
        path = self.directory / f"{split}-{name}.pt"
        cached = self._load(path, description) if context.is_main else None
        if distributed.broadcast_object(cached is not None):
            log.info("feature cache hit: %s (%d images x %d views)", path.name, len(samples), views)
            stored = (cached.features, cached.targets) if cached is not None else None
            return FeatureViews(*distributed.broadcast_object(stored))
        started = time.perf_counter()
        shard_samples = samples[context.rank :: context.world_size]
        forward = self._forward_for(model, len(shard_samples) * views, runtime, settings.compile)
        shard = extract_views(forward, shard_samples, views, runtime, settings)
        shards = distributed.gather_objects(shard)
        features = torch.empty(views, len(samples), shard.shape[2], dtype=shard.dtype)
        for rank, part in enumerate(shards):
            features[:, rank :: context.world_size] = part
        targets = torch.tensor([target for _, target in samples], dtype=torch.long)
        if context.is_main:
            atomic_torch_save({"description": description, "features": features, "targets": targets}, path)
        seconds = time.perf_counter() - started
        log.info(
            "extracted %s features: %d images x %d views in %.1f s (%.0f img/s; images per rank %s) -> %s",
            split,
            len(samples),
            views,
            seconds,
            len(samples) * views / seconds,
            "+".join(str(part.shape[1]) for part in shards),
            path,
        )
        return FeatureViews(features, targets)

    @staticmethod
    def _load(path: Path, description: dict[str, Any]) -> FeatureViews | None:
        if not path.exists():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            features, targets = stored["features"], stored["targets"]
            valid = (
                stored["description"] == description
                and features.dim() == 3
                and features.shape[:2] == (description["views"], description["count"])
                and targets.shape == (description["count"],)
            )
        except Exception as err:  # a torn or foreign file: any load error means rebuild
            log.warning("feature cache %s is unreadable (%s); rebuilding it", path, err)
            return None
        if not valid:
            log.warning("feature cache %s does not match its description; rebuilding it", path)
            return None
        return FeatureViews(features, targets)


def should_compile(setting: str, images: int, runtime: Runtime) -> bool:
    if setting in ("true", True):
        return True
    if setting in ("false", False):
        return False
    return images >= COMPILE_MIN_IMAGES or runtime.device.type == "cuda"


def extract_views(
    forward: Callable[[torch.Tensor], torch.Tensor],
    samples: list[tuple[Path, int]],
    views: int,
    runtime: Runtime,
    settings: ExtractionSettings,
) -> torch.Tensor:
    """`forward`'s outputs for `views` passes over `samples`: [views, N, D], float16 unless fp32 precision."""
    outputs = []
    # Random crops draw from torch's global RNG; fork it so extraction leaves training untouched.
    with torch.random.fork_rng(devices=[]):
        for view in range(views):
            torch.manual_seed(settings.seed + view)
            batches = view_batches(samples, view, runtime, settings)
            outputs.append(run_backbone(forward, batches, runtime, settings, f"features view {view + 1}/{views}"))
    return torch.stack(outputs)


def view_batches(
    samples: list[tuple[Path, int]], view: int, runtime: Runtime, settings: ExtractionSettings
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """One view's batches, uint8 channels_last: view 0 is the clean centre crop, later ones augmented.

    On a CPU the clean view is decoded on threads in turn with the model (`ThreadedBatches`);
    augmented views draw from torch's RNG, which the seeded DataLoader workers keep reproducible,
    and on a GPU the workers' decoding overlaps the device's work.
    """
    clean = EvalPreset(settings.image_size)
    preset = clean if view == 0 else TrainPreset(settings.image_size)
    dataset = ImageFolderDataset(samples, preset.crop, clean.resize_size)
    if view == 0 and runtime.device.type == "cpu":
        return ThreadedBatches(dataset, settings.batch_size, torch.get_num_threads())
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        collate_fn=stack_crops,
        pin_memory=runtime.device.type == "cuda",
        prefetch_factor=4 if settings.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(settings.seed),
    )


@torch.inference_mode()
def run_backbone(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    runtime: Runtime,
    settings: ExtractionSettings,
    desc: str,
) -> torch.Tensor:
    chunks = []
    for images, _ in tqdm(batches, desc=desc, leave=False, disable=None if settings.progress else True):
        count = images.shape[0]
        if count < settings.batch_size:  # keep one static shape: no recompilation for the last batch
            images = torch.cat([images, images.new_zeros(settings.batch_size - count, *images.shape[1:])])
        with runtime.autocast():
            features = forward(runtime.to_device(images))
        # Half the disk and memory; fp32 extraction keeps fp32 so its results stay exact.
        chunks.append(features[:count].to("cpu", torch.float32 if runtime.precision == "fp32" else torch.float16))
    return torch.cat(chunks)


def compiled(backbone: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile with freezing: weights become constants, conv+bn fold, layouts fixed."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    log.info("compiling the backbone for extraction (about 20-60 s, repaid by the images it saves)")
    return torch.compile(backbone, dynamic=False)
