"""The two endpoint backends next to the model alone: served p50 and 8-client throughput, same tarball.

    python -m benchmarks.serving_backends [RUN_OR_TARBALL] [--quick] [--rounds 5]

- Ray Serve (`deploy.image.backend=rayserve`, the default): the extracted tarball served as the Ray
  Serve container serves it (`tests.helpers.rayserve`: `ray start`, `serve run config.yaml`, the
  port-8080 adapter), one replica with every core, forwards of up to 8 concurrent requests.
- TorchServe (`torchserve`): the SageMaker inference toolkit's handler service behind a one-worker HTTP
  loop (`tests/helpers/toolkit.py`), one request at a time as a TorchServe worker takes them; TorchServe's
  own Java frontend is not installed here, so its overhead is not counted.
- The model alone: `benchmarks.model_reference`, loaded as both backends load it.

The three stay up together and the rounds interleave: each round measures Ray Serve, then TorchServe,
then times the model, and every ratio is taken within its round; each line prints the median of the
rounds and their spread. Without a run, a ResNet50 with 133 breeds and random weights stands in.
`--quick`: ResNet18, few requests, no compile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import site
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import machine_line
from benchmarks.serving_latency import MAX_BATCH, measure, model_reference, package_run, stand_in_run, typical_jpeg
from deploy.cli import wait_for_ping
from dogbreed.serving.hardware import cpu_has_fast_bf16
from tests.helpers.net import free_port
from tests.helpers.rayserve import RayServeContainer, environment

TOOLKIT = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "toolkit.py"


def extracted(tarball: Path, destination: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(destination, filter="data")
    return destination


@contextlib.contextmanager
def ray_serve(model_dir: Path, compile_model: bool, replicas: int = 1, threads: int | None = None) -> Iterator[int]:
    """The Ray Serve container's steps on `model_dir` (`replicas` of `threads` torch threads, by default
    one with every core); yields the adapter's port."""
    threads = threads or os.cpu_count() or 1
    env = environment(DOGBREED_REPLICAS=str(replicas), DOGBREED_THREADS=str(threads),
                      DOGBREED_MAX_BATCH=str(MAX_BATCH), DOGBREED_COMPILE=None if compile_model else "0")  # fmt: skip
    container = RayServeContainer(model_dir, env)
    try:
        container.start(ready_timeout_s=1800)
        yield container.adapter_port
    finally:
        container.stop()


@contextlib.contextmanager
def torchserve(model_dir: Path, compile_model: bool) -> Iterator[int]:
    """The toolkit's handler service on `model_dir` behind one worker; yields its port."""
    port = free_port()
    command = [sys.executable, "-I", "-S", str(TOOLKIT), "http", str(model_dir / "code"), str(model_dir),
               json.dumps(site.getsitepackages()), str(port)]  # fmt: skip
    env = environment(DOGBREED_COMPILE=None if compile_model else "0")
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}", timeout=1800)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}x (rounds {min(values):.2f}x to {max(values):.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="run dir or model.tar.gz (default: a random-weight stand-in)")
    parser.add_argument("--quick", action="store_true", help="smoke test: ResNet18, few requests, no compile")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    counts = (8, 1.0) if args.quick else (40, 3.0)
    body = typical_jpeg()
    with tempfile.TemporaryDirectory(prefix="dogbreed-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        if args.source and args.source.endswith(".tar.gz"):
            tarball = Path(args.source)
        else:
            run = args.source or str(stand_in_run(scratch / "run", "resnet18" if args.quick else "resnet50"))
            tarball = package_run(run, scratch / "model.tar.gz")
        model_dir = extracted(tarball, scratch / "opt_ml_model")
        compile_model = not args.quick
        rows: list[dict[str, dict]] = []
        with (
            model_reference(tarball, scratch / "reference", not compile_model, counts[1]) as model,
            ray_serve(model_dir, compile_model) as ray_port,
            torchserve(model_dir, compile_model) as torchserve_port,
        ):
            for _ in range(args.rounds):
                ray = measure(ray_port, body, *counts)
                toolkit = measure(torchserve_port, body, *counts)
                rows.append({"ray": ray, "torchserve": toolkit, "model": model.timings()})
    report(rows, compile_model)


def report(rows: list[dict], compiled: bool) -> None:
    first = rows[0]["model"]
    print(f"{machine_line('bf16' if cpu_has_fast_bf16() else 'fp32')}; {'compiled' if compiled else 'eager'}")
    batched = f"model b{first['batch']} img/s"
    print(f"{'round':<6} {'ray p50':>8} {'ts p50':>8} {'model p50':>10} {'ray @8':>8} {'ts @8':>8} "
          f"{'model b1 img/s':>15} {batched:>15}")  # fmt: skip
    for number, row in enumerate(rows, 1):
        ray, toolkit, model = row["ray"], row["torchserve"], row["model"]
        print(f"{number:<6} {ray['p50_ms']:>8.1f} {toolkit['p50_ms']:>8.1f} {model['batch1_p50_ms']:>10.1f} "
              f"{ray['throughput_rps']:>8.1f} {toolkit['throughput_rps']:>8.1f} {model['sequential_ips']:>15.1f} "
              f"{model['batched_ips']:>15.1f}")  # fmt: skip

    def ratios(top: str, bottom: str) -> list[float]:
        side, key = top.split(".")
        other, other_key = bottom.split(".")
        return [row[side][key] / row[other][other_key] for row in rows]

    lines = [
        ("Ray Serve p50 / the model's batch-1 p50", "ray.p50_ms", "model.batch1_p50_ms"),
        ("TorchServe toolkit p50 / the model's batch-1 p50", "torchserve.p50_ms", "model.batch1_p50_ms"),
        (f"Ray Serve 8 clients / the model's batch-{first['batch']} img/s", "ray.throughput_rps", "model.batched_ips"),
        (
            "TorchServe toolkit 8 clients / the model's batch-1 img/s",
            "torchserve.throughput_rps",
            "model.sequential_ips",
        ),
        ("Ray Serve 8 clients / TorchServe toolkit 8 clients", "ray.throughput_rps", "torchserve.throughput_rps"),
        ("Ray Serve p50 / TorchServe toolkit p50", "ray.p50_ms", "torchserve.p50_ms"),
    ]
    for name, top, bottom in lines:
        print(f"COMPARE {name}: {spread(ratios(top, bottom))}")


if __name__ == "__main__":
    main()
