"""(c) Full fine-tune from JPEG files vs train steps on a pre-decoded batch, same model, batch and precision.

Both run the trainer's own `train_one_epoch`: one on the training loader `train.py` builds
(decode, random resized crop, flip, normalise), the other on one ready-made batch repeated.
The two alternate over `--rounds` rounds of `--steps` steps, drawing the JPEG batches from
one loader iterator as an epoch would; the ratio is the median of the rounds' ratios.
Usage: python -m benchmarks.finetune_input [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from benchmarks.common import REPO, dataset, goal, machine_line
from dogbreed.allocator import reexec_with_tuned_malloc
from dogbreed.data.folders import class_folders
from dogbreed.data.scan import scan_split
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.train import distributed
from dogbreed.train.engine import train_one_epoch
from dogbreed.train.loaders import LoaderSettings, make_loaders, worker_count
from dogbreed.train.runtime import Runtime


def images_per_s(model: nn.Module, batches: Iterable, steps: int, runtime: Runtime) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    result = train_one_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, runtime.grad_scaler(), runtime,
                             "bench", limit_batches=steps, progress=False)  # fmt: skip
    return result.images_per_s


def epochs(loader: Iterable) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    steps, rounds = (2, 2) if args.quick else (args.steps, args.rounds)
    data = dataset(REPO / ".cache" / "bench" / ("quick" if args.quick else "dogimages-sized"), args.quick)
    folders = class_folders(data / "train")
    splits = {name: scan_split(data, name, folders) for name in ("train", "valid", "test")}
    for path, _ in splits["train"].samples:
        path.read_bytes()  # the page cache serves the files, as it does after the first epoch

    runtime = Runtime.from_names("auto", "auto")
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet50", len(folders))).to(memory_format=runtime.memory_format)
    settings = LoaderSettings(224, args.batch_size, args.batch_size, worker_count("auto"), seed=0)
    loader = make_loaders(settings, splits, runtime, distributed.SINGLE_PROCESS)["train"]
    print(machine_line(runtime.precision), flush=True)
    jpeg_batches = epochs(loader)
    images, targets = next(jpeg_batches)
    ready = [(images, targets)] * steps
    images_per_s(model, ready, 2, runtime)  # warm-up: allocator, kernels

    ratios, raws, pipelines = [], [], []
    for _ in range(rounds):
        raws.append(images_per_s(model, ready, steps, runtime))
        pipelines.append(images_per_s(model, itertools.islice(jpeg_batches, steps), steps, runtime))
        ratios.append(pipelines[-1] / raws[-1])
    print(f"## (c) full fine-tune, ResNet50 {runtime.precision} batch {args.batch_size}, {rounds} rounds of "
          f"{steps} steps from JPEG files ({settings.workers} workers) alternating with a ready one")  # fmt: skip
    print(f"train steps on a pre-decoded batch: {statistics.median(raws):.1f} img/s; from JPEG files: "
          f"{statistics.median(pipelines):.1f} img/s (medians)")  # fmt: skip
    print(goal("full fine-tune from JPEG files / on pre-decoded batches", statistics.median(ratios), 0.85, ">=",
               "{:.0%}") + f" (rounds: {', '.join(f'{r:.0%}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    reexec_with_tuned_malloc()
    main()
