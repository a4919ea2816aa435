"""The local endpoint under hostile requests: memory under big PNGs, latency under dripping URLs.

    python -m benchmarks.hostile_requests [--port 8091]

Trains the tests' tiny run (ResNet18, 4 classes, seconds on CPU), serves it with
`python -m deploy serve --no-compile --allow-loopback-urls` in a subprocess and measures:

(a) 16 concurrent 7000x7000 PNG requests (each under the 50-megapixel cap): the server's
    peak RSS growth (goal <= 1 GB) and its RSS after the burst (goal: within 10 % of before);
(b) 45 {"url": ...} requests to a loopback server that drips one byte a second, all in
    flight, then one good JPEG: its latency (goal < 2 s) and each drip's status and time
    (goal: a 4xx within 11 s).

Run by hand; about a minute.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from deploy.cli import wait_for_ping
from dogbreed.data.synthetic import generate
from tests.helpers.config import TINY_SPEC
from tests.helpers.images import image_bytes
from tests.helpers.runs import train_run

REPO = Path(__file__).resolve().parents[1]
PNGS = 16
DRIPS = 45


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Samples a process's RSS every 10 ms on a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.running = pid, rss(pid), True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


def post(port: int, body: bytes, content_type: str) -> tuple[int, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, time.perf_counter() - started


def big_png() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((7000, 7000)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def drip_server() -> tuple[socket.socket, int]:
    """A loopback server that answers every connection with one header byte a second, for 20 s."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)

    def drip(connection: socket.socket) -> None:
        try:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(20):
                connection.sendall(b"x")
                time.sleep(1)
        except OSError:
            pass
        finally:
            connection.close()

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def memory_burst(port: int, pid: int) -> None:
    body, jpeg = big_png(), image_bytes()
    post(port, jpeg, "image/jpeg")
    time.sleep(0.5)
    before = rss(pid)
    sampler = PeakRSS(pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(PNGS) as pool:
        results = list(pool.map(lambda _: post(port, body, "image/png"), range(PNGS)))
    elapsed = time.perf_counter() - started
    time.sleep(1.0)
    peak, after = sampler.stop(), rss(pid)
    statuses = sorted({status for status, _ in results})
    growth, settled = (peak - before) / 1e6, (after - before) / before * 100
    print(f"(a) {PNGS} concurrent 7000x7000 PNGs ({len(body) / 1e3:.0f} kB each): statuses {statuses}, {elapsed:.1f} s")
    print(f"    RSS before {before / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB (+{growth:.0f} MB; goal <= 1000)")
    print(f"    RSS 1 s after {after / 1e6:.0f} MB ({settled:+.1f} % of before; goal within 10 %)")


def drips_in_flight(port: int) -> None:
    listener, drip_port = drip_server()
    body = json.dumps({"url": f"http://127.0.0.1:{drip_port}/dog.jpg"}).encode()
    with ThreadPoolExecutor(DRIPS) as pool:
        drips = [pool.submit(post, port, body, "application/json") for _ in range(DRIPS)]
        time.sleep(1.0)
        status, latency = post(port, image_bytes(), "image/jpeg")
        results = [drip.result() for drip in drips]
    listener.close()
    codes = sorted({code for code, _ in results})
    slowest = max(elapsed for _, elapsed in results)
    print(f"(b) {DRIPS} dripping URLs in flight: a good JPEG got {status} in {latency:.2f} s (goal < 2)")
    print(f"    the drips got {codes}, slowest after {slowest:.1f} s (goal: 4xx within 11)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    print(f"CPU: {cpu or platform.processor()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="dogbreed-hostile-") as scratch:
        run = train_run(Path(scratch) / "run", generate(Path(scratch) / "data", TINY_SPEC))
        command = [sys.executable, "-m", "deploy", "serve", str(run), "--port", str(args.port), "--no-compile"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOGBREED_FETCH_ALLOW_LOOPBACK": "1"}
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_ping(f"http://127.0.0.1:{args.port}", timeout=300)
            memory_burst(args.port, server.pid)
            drips_in_flight(args.port)
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
