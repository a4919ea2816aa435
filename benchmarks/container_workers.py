"""Model copies x intra-op threads: what `deploy up` should give the inference container (`deploy.container.workers`).

    python -m benchmarks.container_workers [--quick] [--backend rayserve|torchserve|both]

For every split W x T = cores, one client's p50 and 8 clients' throughput:
- rayserve: the tarball served as the Ray Serve container serves it (`tests.helpers.rayserve`) with
  W replicas (DOGBREED_REPLICAS) of T torch threads (DOGBREED_THREADS), forwards of up to 8 requests;
- torchserve: the TorchServe image runs `SAGEMAKER_MODEL_SERVER_WORKERS` worker processes, each
  with its own model copy and one request at a time, with `OMP_NUM_THREADS` threads. This serves the
  same handler the same way, `python -m deploy serve --workers W --max-batch 1` with
  `OMP_NUM_THREADS=T`. (The local server's workers share one listening socket, so the kernel, not a
  queue, spreads the 8 connections: uneven for W > 1, which can only lower their figures.)
`--quick`: ResNet18, few requests, no compile.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchmarks.common import machine_line
from benchmarks.serving_backends import extracted, ray_serve
from benchmarks.serving_latency import measure, package_run, served, stand_in_run, typical_jpeg
from dogbreed.serving.hardware import cpu_has_fast_bf16


def splits(cores: int) -> list[tuple[int, int]]:
    """(workers, threads) with workers x threads = cores."""
    return [(cores // threads, threads) for threads in range(cores, 0, -1) if cores % threads == 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--backend", choices=("rayserve", "torchserve", "both"), default="both")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    counts = (8, 1.0) if args.quick else (100, 5.0)
    body = typical_jpeg()
    flags = ["--max-batch", "1", *(["--no-compile"] if args.quick else [])]
    print(machine_line("bf16" if cpu_has_fast_bf16() else "fp32"), flush=True)
    print(f"{'backend':<11} {'workers x threads':<18} {'p50 ms':>8} {'p95 ms':>8} {'req/s @8':>9}")
    backends = ("rayserve", "torchserve") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="dogbreed-bench-") as scratch:
        run = stand_in_run(Path(scratch) / "run", "resnet18" if args.quick else "resnet50")
        tarball = package_run(str(run), Path(scratch) / "model.tar.gz")
        model_dir = extracted(tarball, Path(scratch) / "opt_ml_model")
        for backend in backends:
            for workers, threads in splits(cores):
                if backend == "rayserve":
                    with ray_serve(model_dir, not args.quick, replicas=workers, threads=threads) as port:
                        row = measure(port, body, *counts)
                else:
                    env = {"OMP_NUM_THREADS": str(threads)}
                    with served(tarball, args.port, [*flags, "--workers", str(workers)], env):
                        row = measure(args.port, body, *counts)
                print(f"{backend:<11} {f'{workers} x {threads}':<18} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
                      f"{row['throughput_rps']:>9.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
