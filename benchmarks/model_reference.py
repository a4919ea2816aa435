"""The model alone, as the endpoint serves it: forward latency at batch 1 and throughput at the serving batch.

    python -m benchmarks.model_reference MODEL_DIR [--no-compile] [--max-batch 8] [--seconds 3] [--on-demand]

MODEL_DIR is an extracted model.tar.gz. The model is loaded by the handler's own
`load_predictor` (same precision, channels_last, compile with freezing, warmed batch
sizes), then timed on ready-made input batches: no decode, no HTTP, no JSON. Each batch
size runs back to back for `--seconds`; its throughput is images over that time, as the
server's is requests over its window, and the batch-1 latency is the median forward. Prints
one JSON line; with `--on-demand`, one for each line read from stdin, until stdin ends: a
line `forward N` times N batch-1 forwards back to back ({"forward_ms": [...]}), any other line
all of the above. `serving_latency` runs it that way in a subprocess, like the server: blocks
of forwards between blocks of the server's sequential requests, the rest between its rounds.
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


def ready_batch(predictor: Predictor, size: int) -> torch.Tensor:
    """A `size` batch made as the server makes one (`to_batch`), of blank images."""
    image_size = predictor.info["image_size"]
    return to_batch([torch.zeros(3, image_size, image_size, dtype=torch.uint8)], predictor.device, size)


def timed_forward(predictor: Predictor, batch: torch.Tensor) -> float:
    """Seconds of one forward of `batch` (inference mode is the caller's)."""
    started = time.perf_counter()
    predictor.model(batch)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def forward_seconds(predictor: Predictor, size: int, seconds: float) -> list[float]:
    """Wall time of each forward of a `size` batch, run back to back for `seconds` (at least 3 of
    them), after two untimed ones."""
    batch = ready_batch(predictor, size)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(2):
            timed_forward(predictor, batch)
        while len(times) < 3 or sum(times) < seconds:
            times.append(timed_forward(predictor, batch))
    return times


def reference(predictor: Predictor, max_batch: int, seconds: float) -> dict[str, float | int | str | bool]:
    single = forward_seconds(predictor, 1, seconds)
    batched = forward_seconds(predictor, max_batch, seconds)
    return {
        "cpu": cpu_model(),
        "amx": amx_supported(),
        "threads": torch.get_num_threads(),
        "dtype": str(predictor.dtype).removeprefix("torch."),
        "compiled": predictor.compiled,
        "batch": max_batch,
        # Latency as the server's p50 is taken (a median); throughput as its requests per second
        # are (work over wall time, slow forwards included). Until December 2026 the throughput
        # was 1 / the median forward, which leaves out the slow forwards of a shared machine that
        # the server's count includes: on the AMD machine here up to 10% above images / time.
        "batch1_p50_ms": 1000 * statistics.median(single),
        "sequential_ips": len(single) / sum(single),
        "batched_ips": max_batch * len(batched) / sum(batched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each batch size runs")
    parser.add_argument("--on-demand", action="store_true", help="load once, then time once per line on stdin")
    args = parser.parse_args()
    predictor = load_predictor(args.model_dir, compile_model=not args.no_compile, max_batch=args.max_batch)
    single = ready_batch(predictor, 1)

    def answer(line: str) -> dict:
        command, _, count = line.partition(" ")
        if command == "forward":  # `count` batch-1 forwards back to back, between blocks of the server's requests
            with torch.inference_mode():
                return {"forward_ms": [1000 * timed_forward(predictor, single) for _ in range(int(count))]}
        return reference(predictor, args.max_batch, args.seconds)

    # On a thread of its own, as the server runs the model (its batcher thread, or a worker
    # thread): on the shared 2-core machines here a forward on the main thread, with its
    # OpenMP team, took 5-10x as long as the same forward on another thread.
    with ThreadPoolExecutor(1) as model_thread:
        for line in sys.stdin if args.on_demand else [""]:
            print(json.dumps(model_thread.submit(answer, line).result()), flush=True)


if __name__ == "__main__":
    main()
