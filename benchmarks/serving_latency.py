"""End-to-end latency and throughput of the local endpoint: our handler vs the course's, same run.

    python -m benchmarks.serving_latency [RUN_OR_TARBALL] [--quick] [--no-compile]

Each handler is served in turn by `python -m deploy serve` (same server, same port
settings) and sent one typical 500x375 JPEG: sequential requests for p50/p95
latency, then 8 concurrent keep-alive clients for throughput, counted over a window
after half a second of the same load. Ours runs twice: with the micro-batcher
(`--max-batch 8`, the default) and without (`--max-batch 1`).
The model alone, loaded as the server loads it (`benchmarks.model_reference`, in a
process of its own), is timed next to ours, as on a shared machine the speed of the
cores drifts by a third within minutes, and by a tenth within seconds, which a timing
taken away from ours would count as ours. Ours' sequential requests go in blocks of
BLOCK, each followed by as many batch-1 forwards of the model alone, back to back as
ours are, and the p50 is a share of the model's p50 over those same seconds. The model's
throughput is timed before ours and after each of ours' rounds; the 8-client figures are
shares of the mean of the two timings around their round. Each goal is the median of the
rounds. Without a run, a ResNet50 with a 133-breed head and random weights stands in (speed
does not depend on the weight values). `--quick` is a smoke test: ResNet18, few requests, no
compile.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import goal, machine_line
from deploy.cli import wait_for_ping
from deploy.model_archive import package_run
from deploy.server import prepare_model_dir
from dogbreed.data.synthetic import SyntheticSpec, render
from dogbreed.serving.architecture import ModelSpec, build_model

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 8
MAX_BATCH = 8
# benchmarks.model_reference's figures: a latency (lower is faster) and two speeds.
LATENCY = "batch1_p50_ms"
SPEEDS = ("sequential_ips", "batched_ips")
# Sequential requests per block, each block followed by as many forwards of the model alone: short
# enough that both see the same machine (its speed drifts within seconds), long enough that each
# runs back to back as it would alone. A forward right after the other process's is slower (caches,
# thread wake-up): one per block, which the median leaves out, where one per request would count it.
BLOCK = 10


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


def sequential(
    port: int, body: bytes, count: int, model_forwards_ms: Callable[[int], list[float]] | None = None
) -> dict[str, float]:
    """p50 and p95 latency of `count` requests one after another (after 3 untimed ones: the first
    requests pay for lazy initialisation). With `model_forwards_ms`, every BLOCK requests are
    followed by as many forwards of the model alone, whose p50 comes back as "model_p50_ms"."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(3):
        request(connection, body)
    latencies: list[float] = []
    model_ms: list[float] = []
    while len(latencies) < count:
        block = min(BLOCK, count - len(latencies))
        latencies += [request(connection, body) for _ in range(block)]
        if model_forwards_ms is not None:
            model_ms += model_forwards_ms(block)
    connection.close()
    latencies.sort()
    measured = {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, round(0.95 * len(latencies)))],
    }
    return measured | ({"model_p50_ms": statistics.median(model_ms)} if model_ms else {})


def concurrent(port: int, body: bytes, seconds: float, warm_up_s: float) -> float:
    """Requests per second answered to CLIENTS keep-alive clients, each sending its next request as
    soon as it has its answer, counted over `seconds` after `warm_up_s` of the same load (connecting
    and the first batches are not steady state)."""
    window_start = time.perf_counter() + warm_up_s
    window_end = window_start + seconds

    def client() -> int:
        own = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        answered = 0
        while time.perf_counter() < window_end:
            request(own, body)
            answered += window_start <= time.perf_counter() <= window_end
        own.close()
        return answered

    with ThreadPoolExecutor(CLIENTS) as pool:
        answered = sum(pool.map(lambda _: client(), range(CLIENTS)))
    return answered / seconds


def measure(
    port: int, body: bytes, sequential_count: int, seconds: float,
    model_forwards_ms: Callable[[int], list[float]] | None = None,
) -> dict[str, float]:  # fmt: skip
    """`sequential` (in blocks with `model_forwards_ms` when given), then `concurrent` counted over
    `seconds` after half a second."""
    latency = sequential(port, body, sequential_count, model_forwards_ms)
    return {**latency, "throughput_rps": concurrent(port, body, seconds, warm_up_s=0.5)}


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(extra or {})}


class ModelAlone:
    """`benchmarks.model_reference --on-demand`, running: `timings()` times each batch size for its
    `--seconds`, `forwards_ms(n)` n batch-1 forwards back to back."""

    def __init__(self, process: subprocess.Popen) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process, self.stdin, self.stdout = process, process.stdin, process.stdout

    def ask(self, line: str) -> dict:
        self.stdin.write(line + "\n")
        self.stdin.flush()
        while answer := self.stdout.readline():
            if answer.startswith("{"):  # loading may print lines of its own first
                return json.loads(answer)
        raise RuntimeError(f"benchmarks.model_reference ended with exit code {self.process.wait()}")

    def timings(self) -> dict:
        return self.ask("")

    def forwards_ms(self, count: int) -> list[float]:
        return [float(ms) for ms in self.ask(f"forward {count}")["forward_ms"]]


@contextlib.contextmanager
def model_reference(tarball: Path, scratch: Path, no_compile: bool, seconds: float) -> Iterator[ModelAlone]:
    """`benchmarks.model_reference --on-demand` on the extracted tarball, in its own process as the
    server is, each batch size timed for `seconds`."""
    model_dir = prepare_model_dir(str(tarball), scratch)
    command = [sys.executable, "-m", "benchmarks.model_reference", str(model_dir), "--on-demand",
               "--max-batch", str(MAX_BATCH), "--seconds", str(seconds)]  # fmt: skip
    command += ["--no-compile"] if no_compile else []
    process = subprocess.Popen(command, env=environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    model = ModelAlone(process)
    try:
        yield model
    finally:
        model.stdin.close()
        process.wait(timeout=60)


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


def bench(tarball: Path, port: int, extra: list[str], body: bytes, counts: tuple[int, float]) -> dict[str, float]:
    """One handler: start it, then `counts` = (sequential requests, seconds of concurrent ones)."""
    with served(tarball, port, extra) as startup:
        return {"startup_s": startup, **measure(port, body, *counts)}


def paired_rounds(
    tarball: Path, port: int, extra: list[str], body: bytes, counts: tuple[int, float], model: ModelAlone, rounds: int
) -> tuple[float, list[dict], list[dict]]:
    """Ours in `rounds` rounds, its sequential requests in blocks between the model's forwards, and the
    model's throughput timed before the first round and after each: (startup s, ours per round,
    the model's `rounds` + 1 timings)."""
    timings = [model.timings()]
    ours = []
    with served(tarball, port, extra) as startup:
        for _ in range(rounds):
            ours.append(measure(port, body, *counts, model_forwards_ms=model.forwards_ms))
            timings.append(model.timings())
    return startup, ours, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="run dir or model.tar.gz (default: a random-weight stand-in)")
    parser.add_argument("--quick", action="store_true", help="smoke test: ResNet18, few requests, no compile")
    parser.add_argument("--no-compile", action="store_true", help="ours without torch.compile")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of ours, each between two timings of the model")
    args = parser.parse_args()
    counts = (8, 1.0) if args.quick else (40, 3.0)
    body = typical_jpeg()
    with tempfile.TemporaryDirectory(prefix="dogbreed-bench-") as scratch:
        if args.source and args.source.endswith(".tar.gz"):
            tarball = Path(args.source)
        else:
            run = args.source or str(stand_in_run(Path(scratch) / "run", "resnet18" if args.quick else "resnet50"))
            tarball = package_run(run, Path(scratch) / "model.tar.gz")
        no_compile = args.quick or args.no_compile
        ours_flags = ["--no-compile"] if no_compile else []
        # The model runs each batch size for as long as ours' 8 clients are counted.
        with model_reference(tarball, Path(scratch) / "reference", no_compile, counts[1]) as model:
            ours = paired_rounds(tarball, args.port, [*ours_flags, "--max-batch", str(MAX_BATCH)], body, counts,
                                 model, args.rounds)  # fmt: skip
        course_flags = ["--handler", "benchmarks.course_handler", "--max-batch", "1"]
        others = {
            "ours b=1": bench(tarball, args.port, [*ours_flags, "--max-batch", "1"], body, counts),
            "course": bench(tarball, args.port, course_flags, body, counts),
        }
    report(*ours, others, len(body))


def around(before: dict, after: dict) -> dict:
    """The model's speed during a round: the mean of its timings just before and just after."""
    return {**before, **{key: (before[key] + after[key]) / 2 for key in (LATENCY, *SPEEDS)}}


def fastest(timings: list[dict]) -> dict:
    """The model's best showing of the whole run."""
    best = {**timings[0], LATENCY: min(timing[LATENCY] for timing in timings)}
    return best | {key: max(timing[key] for timing in timings) for key in SPEEDS}


def medians(rows: list[dict]) -> dict:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0] if isinstance(rows[0][key], float)}


def shares(ours: dict, model: dict) -> tuple[float, float, float]:
    """p50 / the model's batch-1 p50, and 8-client req/s / its sequential and its batched img/s."""
    p50, throughput = ours["p50_ms"], ours["throughput_rps"]
    return p50 / model["batch1_p50_ms"], throughput / model["sequential_ips"], throughput / model["batched_ips"]


def report(startup: float, ours: list[dict], timings: list[dict], others: dict[str, dict], body_bytes: int) -> None:
    first = timings[0]
    models = [around(before, after) for before, after in itertools.pairwise(timings)]
    model = medians(models)
    precision = "bf16" if first["dtype"] == "bfloat16" else "fp32"
    print(f"{machine_line(precision)}; the model {'compiled' if first['compiled'] else 'eager'}")
    print(f"one {body_bytes / 1e3:.0f} kB 500x375 JPEG, {CLIENTS} clients; ours micro-batches up to {MAX_BATCH}")
    print(f"model alone (medians of {len(models)} rounds): batch-1 p50 {model['batch1_p50_ms']:.1f} ms, sequential "
          f"{model['sequential_ips']:.1f} img/s, batch {first['batch']} {model['batched_ips']:.1f} img/s")  # fmt: skip
    results = {"ours": {"startup_s": startup, **medians(ours)}, **others}
    print(f"model alone, in blocks between ours' sequential requests: batch-1 p50 "
          f"{results['ours']['model_p50_ms']:.1f} ms (median of the rounds)")  # fmt: skip
    print(f"{'handler':<9} {'startup s':>10} {'p50 ms':>8} {'p95 ms':>8} {'req/s @8':>9}")
    for name, row in results.items():
        timings_shown = f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['throughput_rps']:>9.1f}"
        print(f"{name:<9} {row['startup_s']:>10.1f} {timings_shown}")
    course, unbatched = results["course"], results["ours b=1"]
    print(
        f"ratios vs the course: p50 {course['p50_ms'] / results['ours']['p50_ms']:.2f}x faster, "
        f"throughput {results['ours']['throughput_rps'] / course['throughput_rps']:.2f}x"
    )
    print(f"without micro-batching, 8 clients get {unbatched['throughput_rps'] / model['sequential_ips']:.2f}x "
          "the model's sequential batch-1 throughput")  # fmt: skip
    against_best = shares(results["ours"], fastest(timings))
    print("against the model's best timing of the whole run instead of the timings around each round: "
          + ", ".join(f"{share:.2f}x" for share in against_best))  # fmt: skip
    # The p50 against the model's forwards between ours' requests, the rest against the timings around.
    paired = [shares(o, m | {LATENCY: o["model_p50_ms"]}) for o, m in zip(ours, models, strict=True)]
    p50, sequential_share, batched_share = zip(*paired, strict=True)
    around_p50 = ", ".join(f"{shares(o, m)[0]:.2f}x" for o, m in zip(ours, models, strict=True))
    print(f"p50 against the model's timings around each round instead of its forwards between ours': {around_p50}")
    print(round_goal("serving p50 / the model's batch-1 p50", p50, 1.3, "<="))
    print(round_goal("serving 8 clients / the model's sequential batch-1 throughput", sequential_share, 1.0, ">="))
    print(round_goal(f"serving 8 clients / the model's batch-{first['batch']} throughput", batched_share, 0.75, ">="))


def round_goal(name: str, rounds: tuple[float, ...], target: float, direction: str) -> str:
    """The goal line for the median of the rounds' shares, each round's share after it."""
    shown = ", ".join(f"{share:.2f}x" for share in rounds)
    return goal(name, statistics.median(rounds), target, direction) + f" (rounds: {shown})"


if __name__ == "__main__":
    main()
