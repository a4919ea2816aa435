"""(b) Extraction pipeline vs the model's raw forward, same precision and compiled module.

Raw forward runs on a pre-decoded batch; the pipeline decodes JPEGs from disk (draft
mode), transforms them in DataLoader workers and runs the same backbone, as the
feature cache does. The ratio says how much the input pipeline costs.
Usage: python -m benchmarks.extraction [--quick] [--compile true|false]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import REPO, dataset
from dogbreed.allocator import reexec_with_tuned_malloc
from dogbreed.data import ImageFolderDataset, class_folders, scan_split
from dogbreed.features import ExtractionSettings, backbone_of, compiled, run_backbone
from dogbreed.loaders import worker_count
from dogbreed.runtime import Runtime
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.serving.preprocess import EvalPreset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compile", choices=["true", "false"], default="true")
    args = parser.parse_args()
    data = dataset(REPO / ".cache" / "bench" / ("quick" if args.quick else "dogimages-sized"), args.quick)
    samples = scan_split(data, "train", class_folders(data / "train")).samples[: 256 if args.quick else args.images]

    runtime = Runtime.from_names("auto", "auto")
    backbone = backbone_of(build_model(ModelSpec("resnet50", 133))).eval().to(memory_format=runtime.memory_format)
    forward = compiled(backbone) if args.compile == "true" else backbone
    batch = runtime.to_device(torch.randn(args.batch_size, 3, 224, 224))
    with torch.inference_mode(), runtime.autocast():
        started = time.perf_counter()
        forward(batch)  # compiles
        print(f"# warm-up/compile: {time.perf_counter() - started:.0f} s", flush=True)
        forward(batch)
        rounds = max(2, len(samples) // args.batch_size // 2)
        started = time.perf_counter()
        for _ in range(rounds):
            forward(batch)
        raw = rounds * args.batch_size / (time.perf_counter() - started)

    settings = ExtractionSettings(224, args.batch_size, worker_count("auto"), args.compile, seed=0, progress=False)
    images = ImageFolderDataset(samples, EvalPreset(224), EvalPreset(224).resize_size)
    started = time.perf_counter()
    run_backbone(forward, images, runtime, settings, "extract")
    pipeline = len(samples) / (time.perf_counter() - started)
    print(f"## (b) extraction, ResNet50 {runtime.precision} channels_last compile={args.compile}, "
          f"{settings.num_workers} workers, {len(samples)} JPEGs")  # fmt: skip
    print(f"raw forward on pre-decoded batches: {raw:.1f} img/s; extraction from JPEG files: {pipeline:.1f} img/s; "
          f"pipeline/raw = {pipeline / raw:.0%}")  # fmt: skip


if __name__ == "__main__":
    reexec_with_tuned_malloc()
    main()
