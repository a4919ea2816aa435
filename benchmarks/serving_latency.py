"""End-to-end latency and throughput of the local endpoint: our handler vs the course's, same run.

    python -m benchmarks.serving_latency [RUN_OR_TARBALL] [--quick] [--no-compile]

Each handler is served in turn by `python -m deploy serve` (same server, same port
settings) and sent one typical 500x375 JPEG: sequential requests for p50/p95
latency, then 8 concurrent keep-alive clients for throughput. Ours runs twice: with
the micro-batcher (`--max-batch 8`, the default) and without (`--max-batch 1`).
First, `benchmarks.model_reference` times the model alone, loaded as the server
loads it, so the serving figures are also printed as shares of the model's own
speed. Without a run, a ResNet50 with a 133-breed head and random weights stands
in (speed does not depend on the weight values). `--quick` is a smoke test:
ResNet18, few requests, no compile.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import goal, machine_line
from deploy.cli import wait_for_ping
from deploy.model_archive import package_run
from deploy.server import prepare_model_dir
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.synthetic import SyntheticSpec, render

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 8
MAX_BATCH = 8


def stand_in_run(directory: Path, arch: str) -> Path:
    """A run dir with random weights for `arch` and 133 breed names (SageMaker-output shape: 224 px)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(build_model(ModelSpec(arch, 133)).state_dict(), directory / "model.pth")
    (directory / "labels.json").write_text(json.dumps({str(i): f"breed {i:03d}" for i in range(133)}))
    return directory


def typical_jpeg() -> bytes:
    image = render(0, SyntheticSpec(classes=133, width=500, height=375), np.random.default_rng(0))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def request(connection: http.client.HTTPConnection, body: bytes) -> float:
    started = time.perf_counter()
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": "image/jpeg"})
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
    return time.perf_counter() - started


def measure(port: int, body: bytes, sequential: int, concurrent: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(3):  # warm-up: first requests pay for lazy initialisation
        request(connection, body)
    latencies = sorted(request(connection, body) for _ in range(sequential))
    connection.close()

    def client(count: int) -> int:
        own = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(count):
            request(own, body)
        own.close()
        return count

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        done = sum(pool.map(client, [concurrent // CLIENTS] * CLIENTS))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, round(0.95 * len(latencies)))],
        "throughput_rps": done / elapsed,
    }


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(extra or {})}


def model_reference(tarball: Path, scratch: Path, no_compile: bool, quick: bool) -> dict:
    """`benchmarks.model_reference` on the extracted tarball, in its own process as the server is."""
    model_dir = prepare_model_dir(str(tarball), scratch)
    command = [sys.executable, "-m", "benchmarks.model_reference", str(model_dir), "--max-batch", str(MAX_BATCH)]
    command += ["--repeats", "10" if quick else "200"] + (["--no-compile"] if no_compile else [])
    output = subprocess.run(command, env=environment(), check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process `pid` and all its descendants so far, from /proc."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):  # a process may end while it is read
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return total


def wait_until_idle(pid: int, timeout: float = 600) -> None:
    """Returns once `pid` and its children use under a quarter of a core for 2 s: every worker has its model.

    /ping answers as soon as one worker is up; the others may still be compiling.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(2)
        if cpu_seconds(pid) - before < 0.5:
            return
    raise TimeoutError(f"the server (pid {pid}) was still busy after {timeout:.0f} s")


@contextlib.contextmanager
def served(tarball: Path, port: int, extra: list[str], env: dict[str, str] | None = None) -> Iterator[float]:
    """`python -m deploy serve` in a subprocess until the block ends; yields seconds until /ping was 200
    and the server was idle."""
    command = [sys.executable, "-m", "deploy", "serve", str(tarball), "--port", str(port), *extra]
    started = time.perf_counter()
    server = subprocess.Popen(command, env=environment(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}", timeout=600)
        wait_until_idle(server.pid)
        yield time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)


def bench(tarball: Path, port: int, extra: list[str], body: bytes, counts: tuple[int, int]) -> dict[str, float]:
    """One handler: start it, then `counts` = (sequential, concurrent) requests."""
    with served(tarball, port, extra) as startup:
        return {"startup_s": startup, **measure(port, body, *counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="run dir or model.tar.gz (default: a random-weight stand-in)")
    parser.add_argument("--quick", action="store_true", help="smoke test: ResNet18, few requests, no compile")
    parser.add_argument("--no-compile", action="store_true", help="ours without torch.compile")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    counts = (8, 16) if args.quick else (100, 200)
    body = typical_jpeg()
    with tempfile.TemporaryDirectory(prefix="dogbreed-bench-") as scratch:
        if args.source and args.source.endswith(".tar.gz"):
            tarball = Path(args.source)
        else:
            run = args.source or str(stand_in_run(Path(scratch) / "run", "resnet18" if args.quick else "resnet50"))
            tarball = package_run(run, Path(scratch) / "model.tar.gz")
        no_compile = args.quick or args.no_compile
        before = model_reference(tarball, Path(scratch) / "before", no_compile, args.quick)
        ours_flags = ["--no-compile"] if no_compile else []
        course_flags = ["--handler", "benchmarks.course_handler", "--max-batch", "1"]
        results = {
            "ours": bench(tarball, args.port, [*ours_flags, "--max-batch", str(MAX_BATCH)], body, counts),
            "ours b=1": bench(tarball, args.port, [*ours_flags, "--max-batch", "1"], body, counts),
            "course": bench(tarball, args.port, course_flags, body, counts),
        }
        model = fastest(before, model_reference(tarball, Path(scratch) / "after", no_compile, args.quick))
    report(results, model, len(body))


def fastest(first: dict, second: dict) -> dict:
    """The model's best showing of two measurements (before and after the servers): the ratios are
    against what it can do, not against a moment when another process had the cores."""
    best = {**first, "batch1_p50_ms": min(first["batch1_p50_ms"], second["batch1_p50_ms"])}
    for key in ("sequential_ips", "batched_ips"):
        best[key] = max(first[key], second[key])
    return best


def report(results: dict[str, dict[str, float]], model: dict, body_bytes: int) -> None:
    precision = "bf16" if model["dtype"] == "bfloat16" else "fp32"
    print(f"{machine_line(precision)}; the model {'compiled' if model['compiled'] else 'eager'}")
    print(f"one {body_bytes / 1e3:.0f} kB 500x375 JPEG, {CLIENTS} clients; ours micro-batches up to {MAX_BATCH}")
    print(f"model alone: batch-1 p50 {model['batch1_p50_ms']:.1f} ms, sequential {model['sequential_ips']:.1f} img/s, "
          f"batch {model['batch']} {model['batched_ips']:.1f} img/s")  # fmt: skip
    print(f"{'handler':<9} {'startup s':>10} {'p50 ms':>8} {'p95 ms':>8} {'req/s @8':>9}")
    for name, row in results.items():
        timings = f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['throughput_rps']:>9.1f}"
        print(f"{name:<9} {row['startup_s']:>10.1f} {timings}")
    ours, unbatched, course = results["ours"], results["ours b=1"], results["course"]
    print(
        f"ratios vs the course: p50 {course['p50_ms'] / ours['p50_ms']:.2f}x faster, "
        f"throughput {ours['throughput_rps'] / course['throughput_rps']:.2f}x"
    )
    p50_share = ours["p50_ms"] / model["batch1_p50_ms"]
    sequential_share = ours["throughput_rps"] / model["sequential_ips"]
    batched_share = ours["throughput_rps"] / model["batched_ips"]
    unbatched_share = unbatched["throughput_rps"] / model["sequential_ips"]
    print(f"without micro-batching, 8 clients get {unbatched_share:.2f}x the model's sequential batch-1 throughput")
    print(goal("serving p50 / the model's batch-1 p50", p50_share, 1.3, "<="))
    print(goal("serving 8 clients / the model's sequential batch-1 throughput", sequential_share, 1.0, ">="))
    print(goal(f"serving 8 clients / the model's batch-{model['batch']} throughput", batched_share, 0.75, ">="))


if __name__ == "__main__":
    main()
