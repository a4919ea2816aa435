"""(b) Extraction from JPEG files vs the model's raw forward, same precision, batch and compiled module.

Raw forward runs the compiled backbone on a ready-made normalised float batch; the
pipeline is the feature cache's: it decodes the JPEGs (read once beforehand, so the page
cache, not the disk, serves them), crops them on uint8 and runs the backbone behind its
normalisation, compiled the same way. The two alternate
over `--rounds` rounds, so a slower spell of a shared machine hits both; the ratio is
the median of the rounds' ratios.
Usage: python -m benchmarks.extraction [--quick] [--compile true|false]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.common import REPO, dataset, goal, machine_line
from dogbreed.allocator import reexec_with_tuned_malloc
from dogbreed.data.dataset import ImageFolderDataset
from dogbreed.data.folders import class_folders
from dogbreed.data.scan import scan_split
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.serving.preprocess import EvalPreset
from dogbreed.train.features import ExtractionSettings, backbone_of, compiled, extractor, run_backbone, view_batches
from dogbreed.train.loaders import worker_count
from dogbreed.train.runtime import Runtime


def raw_images_per_s(forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        forward(batch)
    return rounds * batch.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--compile", choices=["true", "false"], default="true")
    parser.add_argument("--raw-only", action="store_true", help="print the raw forward's img/s as JSON and stop")
    args = parser.parse_args()
    data = dataset(REPO / ".cache" / "bench" / ("quick" if args.quick else "dogimages-sized"), args.quick)
    samples = scan_split(data, "train", class_folders(data / "train")).samples[: 256 if args.quick else args.images]
    for path, _ in samples:
        path.read_bytes()

    runtime = Runtime.from_names("auto", "auto")
    model = build_model(ModelSpec("resnet50", 133)).to(memory_format=runtime.memory_format)
    backbone, pipeline_module = backbone_of(model).eval(), extractor(model)
    forward = compiled(backbone) if args.compile == "true" else backbone
    pipeline_forward = compiled(pipeline_module) if args.compile == "true" else pipeline_module
    settings = ExtractionSettings(224, args.batch_size, worker_count("auto"), args.compile, seed=0, progress=False)
    print(machine_line(runtime.precision), flush=True)
    with torch.inference_mode(), runtime.autocast():
        # Made under inference mode, as run_backbone's batches are: the compiled graph is reused.
        batch = runtime.to_device(torch.randn(args.batch_size, 3, 224, 224))
        started = time.perf_counter()
        forward(batch)  # compiles
        print(f"# warm-up/compile: {time.perf_counter() - started:.0f} s", flush=True)
        raw_images_per_s(forward, batch, 2)
        if args.raw_only:
            rates = [raw_images_per_s(forward, batch, 4) for _ in range(args.rounds)]
            print(json.dumps({"raw_images_per_s": statistics.median(rates), "batch": args.batch_size}))
            return
    run_backbone(pipeline_forward, view_batches(samples[:1], 0, runtime, settings), runtime, settings, "warm-up")

    # The limit when decoding and the model share the cores: each image costs its forward plus
    # its decode spread over every core, so extraction can reach forward / (forward + decode).
    preset = EvalPreset(224)
    images = ImageFolderDataset(samples, preset.crop, preset.resize_size)
    started = time.perf_counter()
    timed = min(128, len(samples))
    for index in range(timed):
        images[index]
    decode_core_ms = 1000 * (time.perf_counter() - started) / timed
    per_round = len(samples) // args.rounds
    ratios, raws, pipelines = [], [], []
    for number in range(args.rounds):
        chunk = samples[number * per_round : (number + 1) * per_round]
        with torch.inference_mode(), runtime.autocast():
            raws.append(raw_images_per_s(forward, batch, max(1, len(chunk) // args.batch_size)))
        started = time.perf_counter()
        run_backbone(pipeline_forward, view_batches(chunk, 0, runtime, settings), runtime, settings, "extract")
        pipelines.append(len(chunk) / (time.perf_counter() - started))
        ratios.append(pipelines[-1] / raws[-1])
    print(f"## (b) extraction, ResNet50 {runtime.precision} channels_last compile={args.compile}, batch "
          f"{args.batch_size}, {args.rounds} rounds of {per_round} JPEGs alternating with raw forward")  # fmt: skip
    print(f"raw forward on pre-decoded batches: {statistics.median(raws):.1f} img/s; extraction from JPEG files: "
          f"{statistics.median(pipelines):.1f} img/s (medians)")  # fmt: skip
    forward_ms = 1000 / statistics.median(raws)
    bound = forward_ms / (forward_ms + decode_core_ms / torch.get_num_threads())
    print(f"decode + crop of one JPEG on one core: {decode_core_ms:.2f} ms; forward {forward_ms:.2f} ms per image; "
          f"the most extraction can reach on these cores: {bound:.0%} of raw")  # fmt: skip
    print(goal("extraction from JPEG files / raw forward", statistics.median(ratios), 0.85, ">=", "{:.0%}")
          + f" (rounds: {', '.join(f'{r:.0%}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    reexec_with_tuned_malloc()
    main()
