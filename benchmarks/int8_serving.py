"""int8 next to float: the model alone at batch 1, served throughput at 8 clients, and their agreement.

    python -m benchmarks.int8_serving [--quick] [--rounds 5] [--write-throughput deploy/throughput.json]

Speed: a ResNet50 with 10 generated breeds (random weights: speed does not depend on them) packaged twice, float
and `deploy.model.precision=int8`, calibrated on generated dogImages-sized images. The packager's checks
are off throughout (random weights agree with nothing); the figures are reported instead. Each round
times both models alone (`benchmarks.model_reference`, in processes of their own), then both served by
`python -m deploy serve` (8 keep-alive clients, micro-batches of up to 8); the ratios are taken within
the round and each goal is the median of the rounds, with their spread. Agreement: a ResNet18 trained on
the generated set is packaged as int8, and its top-1 agreement with the float model is printed.

`--write-throughput` records this run's served figures per vCPU in the file `deploy up` prices from.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks.common import REPO, goal, machine_line
from benchmarks.serving_latency import measure, model_reference, served, typical_jpeg
from deploy.model_archive import package_run, packaged_info
from deploy.precision import ModelSettings
from dogbreed.data.folders import breed_name, discover_classes
from dogbreed.data.synthetic import SyntheticSpec, generate
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.serving.hardware import cpu_has_fast_bf16
from dogbreed.serving.int8 import fast_int8_cpu
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.config import compose_config, shrunk_overrides
from tests.helpers.net import free_port

# 10 generated breeds at dogImages' image size: enough validation images (200) for the agreement to mean something.
DATA = SyntheticSpec(classes=10, train_per_class=40, valid_per_class=20, test_per_class=2, width=500, height=375)


def stand_in(directory: Path, arch: str, data: Path) -> Path:
    """A run dir with random weights for `arch` and the breeds of `data` (int8 calibrates on their images)."""
    breeds = [breed_name(folder) for folder in discover_classes(data)]
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(build_model(ModelSpec(arch, len(breeds))).state_dict(), directory / "model.pth")
    (directory / "labels.json").write_text(json.dumps(dict(enumerate(breeds))))
    return directory


def int8_unchecked(data: Path) -> ModelSettings:
    """int8 calibrated on `data`, never refused: the figures are reported, not judged, here."""
    return ModelSettings("int8", 128, 0, min_agreement=0.0, max_top1_drop=1.0, data_root=str(data))


def trained_agreement(scratch: Path, data: Path, quick: bool) -> dict:
    """A ResNet18 trained on `data`, packaged as int8: its quantization report (agreement, both accuracies)."""
    run = scratch / "trained"
    epochs = "3" if quick else "8"
    overrides = ["model.freeze=none", "optim=adamw", "optim.lr=2e-3", f"trainer.epochs={epochs}", "data.image_size=64"]
    train(run_settings(compose_config([*shrunk_overrides(run, data), *overrides])))
    tarball = package_run(str(run), scratch / "trained-int8.tar.gz", model=int8_unchecked(data))
    return packaged_info(tarball)["quantization"]


@contextlib.contextmanager
def both_served(float_tarball: Path, int8_tarball: Path, no_compile: bool) -> Iterator[tuple[int, int]]:
    flags = ["--max-batch", "8", *(["--no-compile"] if no_compile else [])]
    float_port, int8_port = free_port(), free_port()
    with served(float_tarball, float_port, flags), served(int8_tarball, int8_port, flags):
        yield float_port, int8_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: ResNet18, few requests, no compile")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-throughput", type=Path, help="record the served figures for deploy up's prices")
    args = parser.parse_args()
    counts = (8, 1.0) if args.quick else (40, 3.0)
    body = typical_jpeg()
    with tempfile.TemporaryDirectory(prefix="dogbreed-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        data = generate(scratch / "data", DATA)
        run = stand_in(scratch / "run", "resnet18" if args.quick else "resnet50", data)
        float_tarball = package_run(str(run), scratch / "float.tar.gz")
        int8_tarball = package_run(str(run), scratch / "int8.tar.gz", model=int8_unchecked(data))
        rows = []
        with (
            model_reference(float_tarball, scratch / "float-ref", args.quick, counts[1]) as float_model,
            model_reference(int8_tarball, scratch / "int8-ref", True, counts[1]) as int8_model,
            both_served(float_tarball, int8_tarball, args.quick) as (float_port, int8_port),
        ):
            for _ in range(args.rounds):
                rows.append({"float_model": float_model.timings(), "int8_model": int8_model.timings(),
                             "float_served": measure(float_port, body, *counts),
                             "int8_served": measure(int8_port, body, *counts)})  # fmt: skip
        quantization = trained_agreement(scratch, data, args.quick)
    report(rows, quantization)
    if args.write_throughput:
        write_throughput(args.write_throughput, rows)


def spread(values: list[float]) -> str:
    return f" (rounds {min(values):.2f}x to {max(values):.2f}x)"


def report(rows: list[dict], quantization: dict) -> None:
    feature = fast_int8_cpu()
    print(f"{machine_line('bf16' if cpu_has_fast_bf16() else 'fp32')}; int8 kernels: {feature or 'no VNNI/AMX (AVX2)'}")
    if feature is None:
        print("this CPU has neither VNNI nor AMX: int8 answers correctly but its speed is not what SageMaker's "
              "ml.c5/m5 (VNNI) or ml.c7i/m7i (AMX) get; the goals below are judged for those")  # fmt: skip
    print(f"{'round':<6} {'float p50':>10} {'int8 p50':>9} {'float @8':>9} {'int8 @8':>8}")
    for number, row in enumerate(rows, 1):
        models = f"{row['float_model']['batch1_p50_ms']:>10.1f} {row['int8_model']['batch1_p50_ms']:>9.1f}"
        print(f"{number:<6} {models} {row['float_served']['throughput_rps']:>9.1f} "
              f"{row['int8_served']['throughput_rps']:>8.1f}")  # fmt: skip
    latency = [r["int8_model"]["batch1_p50_ms"] / r["float_model"]["batch1_p50_ms"] for r in rows]
    throughput = [r["int8_served"]["throughput_rps"] / r["float_served"]["throughput_rps"] for r in rows]
    spread = lambda values: f" (rounds {min(values):.2f}x to {max(values):.2f}x)"  # noqa: E731
    print(goal("int8 model-only batch-1 p50 / float", statistics.median(latency), 0.6, "<=") + spread(latency))
    print(
        goal("int8 served 8-client throughput / float", statistics.median(throughput), 1.6, ">=") + spread(throughput)
    )
    top1 = quantization["top1"]
    print(f"COMPARE int8 top-1 agreement with float (ResNet18 trained on the generated set, "
          f"{quantization['validation_images']} validation images): {quantization['top1_agreement']:.4f}; "
          f"top-1 float {top1['float']:.4f}, int8 {top1['int8']:.4f}")  # fmt: skip


def write_throughput(path: Path, rows: list[dict]) -> None:
    """The medians of the served figures per vCPU, with the machine and the command: what `deploy up` prices with."""
    vcpus = os.cpu_count() or 1
    figures = {}
    for precision in ("float", "int8"):
        served_rows = [row[f"{precision}_served"] for row in rows]
        figures[precision] = {
            "rps_per_vcpu": round(statistics.median(r["throughput_rps"] for r in served_rows) / vcpus, 2),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in served_rows), 1),
        }
    record = {
        "as_of": dt.date.today().isoformat(),
        "measured_on": machine_line("bf16" if cpu_has_fast_bf16() else "fp32"),
        "int8_kernels": fast_int8_cpu() or "AVX2 (no VNNI/AMX)",
        "command": "python -m benchmarks.int8_serving --write-throughput deploy/throughput.json",
        "what": "ResNet50 (random weights, 10 breeds: the head barely matters), python -m deploy serve with "
        "micro-batches of up to 8, 8 keep-alive clients, one 500x375 JPEG; medians of the rounds. Per vCPU: the "
        "measured requests per second / the machine's vCPUs.",
        "served": figures,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
