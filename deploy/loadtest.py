"""`python -m deploy loadtest`: a bounded burst of real requests, with latency, errors and instance counts.

A thread pool of plain clients, not locust: the clients that matter here are boto3's
(sagemaker-runtime, Lambda) and a SigV4-signed function URL call, which locust would only wrap
in custom users, and locust's gevent monkey-patches sockets and ssl under boto3. Threads need
nothing new, stop exactly at `requests` or the time limit, and boto3 clients are thread-safe.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import numpy as np
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from deploy.invoke import CONTENT_TYPES
from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)

TARGETS = ("local", "endpoint", "lambda", "url")
REQUEST_TIMEOUT_S = 60.0
# Status recorded when no HTTP answer came back at all (refused connection, time-out).
NO_ANSWER = 0

# body, content type -> (HTTP status, error text or "")
Send = Callable[[bytes, str], tuple[int, str]]


class LoadTestError(DogbreedError):
    """The load test cannot start: no images, bad bounds, or a target without its address."""


@dataclass(frozen=True)
class Result:
    """One request: when it started (seconds from the start of the test), how long it took, how it ended."""

    index: int
    start_s: float
    latency_ms: float
    status: int
    error: str


@dataclass
class Report:
    """Every request, and the endpoint's instance count sampled while they ran."""

    results: list[Result]
    seconds: float
    instances: list[tuple[float, int]] = field(default_factory=list)
    skipped: int = 0

    def ok(self) -> list[Result]:
        return [r for r in self.results if r.status == 200]

    def errors_by_status(self) -> dict[int, int]:
        return dict(sorted(Counter(r.status for r in self.results if r.status != 200).items()))

    def percentiles(self) -> dict[str, float]:
        """p50/p95/p99 latency in ms over the successful requests (empty when none succeeded)."""
        latencies = [r.latency_ms for r in self.ok()]
        if not latencies:
            return {}
        values = np.percentile(latencies, [50, 95, 99])
        return {name: float(v) for name, v in zip(("p50", "p95", "p99"), values, strict=True)}

    def throughput(self) -> float:
        """Successful requests per second over the whole test."""
        return len(self.ok()) / self.seconds if self.seconds > 0 else 0.0


def load_images(source: Path) -> list[tuple[bytes, str]]:
    """The request bodies: one image file, or every .jpg/.jpeg/.png under a folder (sorted)."""
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.suffix.lower() in CONTENT_TYPES)
    if not paths:
        raise LoadTestError(f"{source}: no .jpg, .jpeg or .png images to send")
    return [(p.read_bytes(), CONTENT_TYPES[p.suffix.lower()]) for p in paths]


def http_sender(url: str, sign_region: str | None = None) -> Send:
    """POSTs the image to `url`; signs with SigV4 for the `lambda` service when `sign_region` is given
    (a function URL with AWS_IAM auth; harmless for NONE)."""
    credentials = boto3.Session().get_credentials() if sign_region else None  # None: sent unsigned

    def send(body: bytes, content_type: str) -> tuple[int, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if credentials is not None:
            request = AWSRequest(method="POST", url=url, data=body, headers=headers)
            SigV4Auth(credentials.get_frozen_credentials(), "lambda", sign_region).add_auth(request)
            headers = dict(request.headers.items())
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, data=body, headers=headers, method="POST"), timeout=REQUEST_TIMEOUT_S
            ) as response:
                response.read()
                return response.status, ""
        except urllib.error.HTTPError as err:
            return err.code, _message(err.read())
        except OSError as err:
            return NO_ANSWER, str(err)

    return send


def function_url_region(url: str) -> str:
    """The region in `https://<id>.lambda-url.<region>.on.aws/`: what a SigV4 signature for it names."""
    match = re.match(r"^https://[a-z0-9]+\.lambda-url\.([a-z0-9-]+)\.on\.aws/?", url)
    if match is None:
        raise LoadTestError(f"{url}: not a Lambda function URL (https://<id>.lambda-url.<region>.on.aws/)")
    return match.group(1)


def endpoint_sender(endpoint: str, concurrency: int) -> Send:
    """Calls the SageMaker endpoint through sagemaker-runtime, without retries (each try is measured)."""
    config = Config(retries={"max_attempts": 1}, max_pool_connections=concurrency, read_timeout=REQUEST_TIMEOUT_S)
    client = boto3.client("sagemaker-runtime", config=config)

    def send(body: bytes, content_type: str) -> tuple[int, str]:
        try:
            client.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body)["Body"].read()
            return 200, ""
        except ClientError as err:
            return _client_status(err), err.response.get("OriginalMessage") or err.response["Error"]["Message"]
        except BotoCoreError as err:
            return NO_ANSWER, str(err)

    return send


def lambda_sender(function: str, concurrency: int) -> Send:
    """Invokes the function's `live` alias with the event a function URL would pass it."""
    config = Config(retries={"max_attempts": 1}, max_pool_connections=concurrency, read_timeout=REQUEST_TIMEOUT_S)
    client = boto3.client("lambda", config=config)

    def send(body: bytes, content_type: str) -> tuple[int, str]:
        event = {
            "headers": {"content-type": content_type},
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }
        try:
            reply = client.invoke(FunctionName=function, Qualifier="live", Payload=json.dumps(event).encode())
        except ClientError as err:
            return _client_status(err), err.response["Error"]["Message"]
        except BotoCoreError as err:
            return NO_ANSWER, str(err)
        payload = json.loads(reply["Payload"].read() or b"{}")
        if "FunctionError" in reply:
            return 500, str(payload.get("errorMessage", reply["FunctionError"]))
        status = int(payload.get("statusCode", 500))
        return status, "" if status == 200 else _message(str(payload.get("body", "")).encode())

    return send


def instance_sampler(endpoint: str) -> Callable[[], int | None]:
    """The variant's current instance count (None for serverless variants, which have none)."""
    client = boto3.client("sagemaker")

    def sample() -> int | None:
        variants = client.describe_endpoint(EndpointName=endpoint).get("ProductionVariants") or [{}]
        return variants[0].get("CurrentInstanceCount")

    return sample


def run(
    send: Send,
    images: list[tuple[bytes, str]],
    requests: int,
    concurrency: int,
    max_seconds: float,
    sample: Callable[[], int | None] | None = None,
    sample_every_s: float = 10.0,
) -> Report:
    """Sends `requests` requests from `concurrency` threads, cycling through `images`.

    Requests not started within `max_seconds` are skipped (counted, not sent); the instance
    count is sampled at the start, every `sample_every_s` and at the end.
    """
    if requests < 1 or concurrency < 1 or max_seconds <= 0:
        raise LoadTestError("--requests and --concurrency must be 1 or more, --max-seconds above 0")
    start = time.monotonic()
    deadline = start + max_seconds
    done = threading.Event()
    instances: list[tuple[float, int]] = []
    sampler = threading.Thread(target=_sample_until, args=(sample, start, sample_every_s, done, instances), daemon=True)
    if sample is not None:
        sampler.start()

    def one(index: int) -> Result | None:
        began = time.monotonic()
        if began > deadline:
            return None
        body, content_type = images[index % len(images)]
        status, error = send(body, content_type)
        return Result(index, began - start, (time.monotonic() - began) * 1000, status, error)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="loadtest") as pool:
        outcomes = list(pool.map(one, range(requests)))
    seconds = time.monotonic() - start
    done.set()
    if sample is not None:
        sampler.join()
    results = [r for r in outcomes if r is not None]
    return Report(results, seconds, instances, skipped=requests - len(results))


def write_csv(report: Report, path: Path) -> Path:
    """One row per request sent: index, start_s, latency_ms, status, error."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "start_s", "latency_ms", "status", "error"])
        for r in sorted(report.results, key=lambda r: r.index):
            writer.writerow([r.index, f"{r.start_s:.4f}", f"{r.latency_ms:.2f}", r.status, r.error])
    return path


def plot(report: Report, path: Path) -> Path:
    """Latency of each request over time (errors in red) and, when sampled, the instance count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for ok, color, label in ((True, "tab:blue", "200"), (False, "tab:red", "error")):
        chosen = [r for r in report.results if (r.status == 200) == ok]
        if chosen:
            ax.scatter([r.start_s for r in chosen], [r.latency_ms for r in chosen], s=6, color=color, label=label)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left")
    if report.instances:
        counts = ax.twinx()
        counts.step(*zip(*report.instances, strict=True), where="post", color="tab:green", label="instances")
        counts.set_ylabel("instances")
        counts.set_ylim(bottom=0)
        counts.legend(loc="upper right")
    ax.set_title(f"{len(report.results)} requests, {report.throughput():.1f} ok/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary(report: Report) -> list[str]:
    """The lines `loadtest` prints."""
    lines = [f"requests: {len(report.results)} sent, {len(report.ok())} ok in {report.seconds:.1f} s"]
    if report.skipped:
        lines.append(f"skipped: {report.skipped} (time limit reached)")
    p = report.percentiles()
    if p:
        lines.append("latency ms: " + "  ".join(f"{k} {v:.1f}" for k, v in p.items()))
    lines.append(f"throughput: {report.throughput():.1f} requests/s")
    errors = report.errors_by_status()
    lines.append("errors: " + (", ".join(f"{n} x {_status_name(s)}" for s, n in errors.items()) if errors else "0"))
    if report.instances:
        lines.append("instances: " + " ".join(f"{t:.0f}s={n}" for t, n in report.instances))
    return lines


def _sample_until(
    sample: Callable[[], int | None],
    start: float,
    every_s: float,
    done: threading.Event,
    into: list[tuple[float, int]],
) -> None:
    while True:
        try:
            count = sample()
        except (ClientError, BotoCoreError) as err:  # a missed sample must not end the test
            log.warning("instance count not sampled: %s", err)
            count = None
        if count is not None:
            into.append((time.monotonic() - start, count))
        if done.is_set():
            return
        done.wait(every_s)  # wakes early when the requests finish, for one last sample


def _client_status(err: ClientError) -> int:
    return int(err.response.get("OriginalStatusCode") or err.response["ResponseMetadata"].get("HTTPStatusCode", 500))


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def _status_name(status: int) -> str:
    return "no answer" if status == NO_ANSWER else str(status)
