"""S3 failing under a run: dies mid-upload (nothing partial in S3, everything local, a retry command that
works), hangs (an upload gives up within its budget), or the bucket is wrong (the run fails before training)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
import torch

from dogbreed.storage.location import S3Location, make_client
from dogbreed.storage.run_uploads import RunUploads, run_files
from dogbreed.storage.transfer import S3Uploader, UploadSettings, UploadTimeout
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


class Blackhole(socketserver.ThreadingTCPServer):
    """Accepts connections and reads requests but never answers: S3 hung (a dead NAT, a stuck load balancer)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), BlackholeHandler)
        self.connections = 0


class BlackholeHandler(socketserver.BaseRequestHandler):
    server: Blackhole

    def handle(self) -> None:
        self.server.connections += 1
        with contextlib.suppress(OSError):
            while self.request.recv(65536):
                pass


@pytest.fixture
def hung_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Blackhole]:
    """Every boto3 client points at a server that never answers."""
    server = Blackhole()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")]:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield server
    server.shutdown()
    server.server_close()


def hung_client() -> object:
    # Per request alone this could take 3 tries x 2 requests x 2 x 3 s; the budget is what ends it.
    return make_client(max_attempts=1, connect_timeout_s=3, read_timeout_s=3)


def test_an_upload_to_a_hung_s3_gives_up_within_its_budget(hung_s3: Blackhole, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(os.urandom(100_000))
    uploader = S3Uploader(hung_client(), UploadSettings(attempts=3, backoff_s=1, budget_s=1.5))

    started = time.monotonic()
    with pytest.raises(UploadTimeout, match=r"over its 1.5 s budget"):
        uploader.upload(path, S3Location("bucket", "runs/r/checkpoint.pt"))

    assert 1.5 <= time.monotonic() - started < 2.5
    assert hung_s3.connections >= 1, "the upload reached the hung server"


def test_a_stop_gives_up_the_epoch_upload_and_its_own_upload_has_a_budget(hung_s3: Blackhole, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(os.urandom(100_000))
    uploader = S3Uploader(hung_client(), UploadSettings(attempts=3, backoff_s=1, budget_s=60))
    uploads = RunUploads(uploader, tmp_path, "r", S3Location("bucket", "runs/r"), every_epoch=True, stop_budget_s=1)
    stop = threading.Event()
    request = type("Stop", (), {"requested": property(lambda _: stop.is_set())})()

    started = time.monotonic()
    threading.Timer(0.5, stop.set).start()  # a spot notice during the epoch's upload
    assert uploads.checkpoint(path, stop=request) is False
    epoch_upload = time.monotonic() - started
    assert uploads.checkpoint(path, always=True) is False  # the stop's upload: S3 is still hung
    stop_upload = time.monotonic() - started - epoch_upload

    assert 0.5 <= epoch_upload < 1.2, "the epoch's upload yields to the stop at once, not after its 60 s"
    assert 1 <= stop_upload < 2, "the stop's upload ends within its own budget"


def test_a_missing_bucket_fails_the_run_before_training(aws: str, tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "typo"
    args = [
        *shrunk_overrides(run, tiny_dataset),
        f"hydra.run.dir={run}",
        "storage=s3",
        "storage.s3_uri=s3://missing-bucket/x",
        "trainer.interrupt.spot_notice=false",
    ]

    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    failed = cli(["train.py", *args], aws)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = time.monotonic() - started
    # CPU time, because wall time on a loaded test machine is mostly waiting for a core (importing torch).
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: storage=s3: bucket 'missing-bucket' does not exist (NoSuchBucket); "
        "create it or fix storage.s3_uri (or DOGBREED_S3_URI)"
    ], failed.stderr
    assert "Traceback" not in failed.stderr
    assert "epoch 1" not in failed.stdout + failed.stderr and not (run / "labels.json").exists()
    assert cpu_seconds < 15, f"took {cpu_seconds:.1f} s of CPU ({seconds:.1f} s wall)"


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
