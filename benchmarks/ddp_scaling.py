"""Data-parallel scaling: training images/s with 1 process vs 2 processes under torchrun.

Full fine-tune (every layer trains) of a ResNet on generated images, the same global data,
2 epochs; the second epoch's images/s (summed over ranks) is reported, the first warms up.
On a 2-core machine the two processes share the cores, so this is the honest number for
"does DDP cost anything here", not a speed-up; on a multi-GPU or multi-node machine the
same command measures real scaling.
Usage: python -m benchmarks.ddp_scaling [--arch resnet50] [--image-size 224] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, run
from dogbreed.data.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(classes=10, train_per_class=40, valid_per_class=4, test_per_class=4, width=500, height=375)


def images_per_s(processes: int, data: Path, args: argparse.Namespace, work: Path) -> float:
    run_dir = work / f"run-{processes}"
    overrides = [
        f"data.root={data}", f"model.arch={args.arch}", "model.pretrained=false", "model.freeze=none",
        f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size // processes}",
        "trainer.epochs=2", "trainer.early_stopping_patience=null", "trainer.progress_bar=false",
        f"paths.output_root={work}", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    run([*launcher, "train.py", *overrides], tuned_malloc=True)
    with (run_dir / "metrics.csv").open() as rows:
        return float(list(csv.DictReader(rows))[-1]["train_images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch, split over the processes")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.image_size = 32
    data = generate(REPO / ".cache" / "bench" / "ddp", SPEC)
    with tempfile.TemporaryDirectory(prefix="dogbreed-ddp-") as tmp:
        single = images_per_s(1, data, args, Path(tmp))
        double = images_per_s(2, data, args, Path(tmp))
    print(f"## DDP scaling, {args.arch} at {args.image_size} px, global batch {args.batch_size}, full fine-tune")
    print(
        f"1 process: {single:.1f} img/s; 2 processes (torchrun, gloo): {double:.1f} img/s; ratio {double / single:.2f}x"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
