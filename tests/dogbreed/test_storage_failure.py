"""S3 dies in the middle of a multipart upload: nothing partial in S3, everything local, a retry command that works."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
import torch

from dogbreed.storage import run_files
from tests.helpers.config import REPO, shrunk_overrides

BUCKET = "dogbreed-flaky"


class CutOffProxy(socketserver.ThreadingTCPServer):
    """Forwards TCP to S3 until `limit` request bytes have gone through, then drops every connection.

    That is S3 becoming unreachable mid-upload: requests in flight lose their connection and
    new connections are closed at once.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int], limit: int) -> None:
        super().__init__(("127.0.0.1", 0), CutOffHandler)
        self.upstream = upstream
        self.limit = limit
        self.sent = 0
        self.cut = threading.Event()
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []

    def count(self, size: int) -> None:
        with self.lock:
            self.sent += size
            if self.sent > self.limit and not self.cut.is_set():
                self.cut.set()
                for sock in self.open:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


class CutOffHandler(socketserver.BaseRequestHandler):
    server: CutOffProxy

    def handle(self) -> None:
        if self.server.cut.is_set():
            return  # closing at once: S3 is gone
        upstream = socket.create_connection(self.server.upstream)
        with self.server.lock:
            self.server.open += [self.request, upstream]
        back = threading.Thread(target=self.pump, args=(upstream, self.request, False), daemon=True)
        back.start()
        self.pump(self.request, upstream, True)
        back.join(timeout=5)
        upstream.close()

    def pump(self, source: socket.socket, dest: socket.socket, counted: bool) -> None:
        with contextlib.suppress(OSError):
            while not self.server.cut.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if counted:
                    self.server.count(len(data))
                    if self.server.cut.is_set():
                        break
                dest.sendall(data)
        with contextlib.suppress(OSError):
            dest.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy(aws: str) -> Iterator[CutOffProxy]:
    target = urlparse(aws)
    # Lets the first 5 MiB part through, then cuts S3 off mid-way through the checkpoint's upload.
    server = CutOffProxy((target.hostname, target.port), limit=7 * 1024 * 1024)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def cli(args: list[str], endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": endpoint}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_s3_failing_mid_upload_leaves_nothing_partial_and_the_retry_command_completes_it(
    aws: str, proxy: CutOffProxy, tiny_dataset: Path, tmp_path: Path
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    run = tmp_path / "outputs" / "flaky"
    args = [
        *shrunk_overrides(run, tiny_dataset),
        f"hydra.run.dir={run}",
        "storage=s3",
        f"storage.s3_uri=s3://{BUCKET}/runs",
        "storage.multipart_threshold_mb=5",
        "storage.multipart_chunk_mb=5",
        "storage.max_concurrency=2",
        "storage.upload_attempts=2",
        "storage.retry_backoff_s=0.1",
        "storage.request_attempts=1",
        "storage.connect_timeout_s=1",
        "storage.read_timeout_s=5",
        "trainer.interrupt.spot_notice=false",
    ]
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"

    failed = cli(["train.py", *args], proxy_url)

    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert proxy.cut.is_set(), "S3 must have gone away during the run"
    assert "artifact(s) not uploaded to" in output
    for name in ("model.pth", "checkpoint.pt", "metrics.json", "labels.json"):
        assert name in output.split("not uploaded to")[1].split("Everything is kept")[0]
    command = f"python -m dogbreed.storage push {run} s3://{BUCKET}/runs/flaky"
    assert command in output
    # Nothing partial looks complete: no object at all; the interrupted multipart upload is not an object.
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"), "the cut-off multipart upload is pending"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    local = run_files(run)
    assert {"model.pth", "checkpoint.pt", "metrics.json", "curves.png"} <= {p.as_posix() for p in local}

    retried = cli(command.split()[1:], aws)

    assert retried.returncode == 0, retried.stdout + retried.stderr
    for relative in local:
        body = s3.get_object(Bucket=BUCKET, Key=f"runs/flaky/{relative.as_posix()}")["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256((run / relative).read_bytes()).digest()
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET), "the stale multipart upload was aborted"
