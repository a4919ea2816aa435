"""The model alone, as the endpoint serves it: forward latency at batch 1 and throughput at the serving batch.

    python -m benchmarks.model_reference MODEL_DIR [--no-compile] [--max-batch 8] [--repeats 50] [--on-demand]

MODEL_DIR is an extracted model.tar.gz. The model is loaded by the handler's own
`load_predictor` (same precision, channels_last, compile with freezing, warmed batch
sizes), then timed on ready-made input batches: no decode, no HTTP, no JSON. Prints
one JSON line; with `--on-demand`, one for each line read from stdin, until stdin ends.
`serving_latency` runs it that way in a subprocess, like the server, between its own
rounds, and shows every serving figure as a share of the timings around it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from benchmarks.common import amx_supported, cpu_model
from dogbreed.serving.handler import Predictor, load_predictor, to_batch


def forward_seconds(predictor: Predictor, size: int, repeats: int) -> list[float]:
    """Wall time of `repeats` forwards of a `size` batch, after two untimed ones."""
    image_size = predictor.info["image_size"]
    batch = to_batch([torch.zeros(3, image_size, image_size, dtype=torch.uint8)], predictor.device, size)
    times = []
    with torch.inference_mode():
        for step in range(repeats + 2):
            started = time.perf_counter()
            predictor.model(batch)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize()
            if step >= 2:
                times.append(time.perf_counter() - started)
    return times


def reference(predictor: Predictor, max_batch: int, repeats: int) -> dict[str, float | int | str | bool]:
    single = forward_seconds(predictor, 1, repeats)
    batched = forward_seconds(predictor, max_batch, max(3, repeats // max_batch))
    return {
        "cpu": cpu_model(),
        "amx": amx_supported(),
        "threads": torch.get_num_threads(),
        "dtype": str(predictor.dtype).removeprefix("torch."),
        "compiled": predictor.compiled,
        "batch": max_batch,
        # Medians throughout: on a shared machine a few descheduled forwards would otherwise
        # set the throughput; the median is what the model does when it has the cores.
        "batch1_p50_ms": 1000 * statistics.median(single),
        "sequential_ips": 1 / statistics.median(single),
        "batched_ips": max_batch / statistics.median(batched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--on-demand", action="store_true", help="load once, then time once per line on stdin")
    args = parser.parse_args()
    predictor = load_predictor(args.model_dir, compile_model=not args.no_compile, max_batch=args.max_batch)
    # On a thread of its own, as the server runs the model (its batcher thread, or a worker
    # thread): on the shared 2-core machines here a forward on the main thread, with its
    # OpenMP team, took 5-10x as long as the same forward on another thread.
    with ThreadPoolExecutor(1) as model_thread:
        for _ in sys.stdin if args.on_demand else [""]:
            measured = model_thread.submit(reference, predictor, args.max_batch, args.repeats).result()
            print(json.dumps(measured), flush=True)


if __name__ == "__main__":
    main()
