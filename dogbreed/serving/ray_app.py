"""The Ray Serve application of the SageMaker Ray Serve inference container (`deploy.image.backend=rayserve`).

The container (ECR `ray:serve-ml-sagemaker-cpu` / `-cuda`) extracts model.tar.gz to /opt/ml/model, puts
/opt/ml/model and /opt/ml/model/code on PYTHONPATH, starts Ray and runs `serve run /opt/ml/model/config.yaml`,
which names `dogbreed.serving.ray_app:app` at route prefix `/`. Its adapter on port 8080 sends each
`POST /invocations` here as `POST /` (body, Content-Type, Accept and X-Amzn-SageMaker-* headers) and answers
`GET /ping` from Ray's own health check.

A request goes through the handler's steps, as under TorchServe: `input_fn`, `prepare` (decode and crop,
on a thread: a slow decode or URL fetch never holds up the event loop), the model, `answer` and `output_fn`.
Concurrent requests share forwards through `serve.batch`: at most DOGBREED_MAX_BATCH images, gathered for
at most DOGBREED_BATCH_WAIT_MS. DOGBREED_REPLICAS model copies each run DOGBREED_THREADS torch threads
(`deploy up` sets both per instance size); the other DOGBREED_* switches are the handler's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from dogbreed.serving import handler
from dogbreed.serving.errors import ConfigError, RequestError

# Ray Serve writes this logger's lines into each replica's log, beside its request log.
log = logging.getLogger("ray.serve")

MODEL_DIR = "/opt/ml/model"  # where SageMaker extracts model.tar.gz
DEFAULT_MAX_BATCH = 8
DEFAULT_BATCH_WAIT_MS = 5.0
# Requests a replica holds at once (waiting for a batch, decoding, running); the rest queue in Ray's
# proxy, at most QUEUED_PER_REPLICA each, beyond which Ray answers 503 rather than grow without bound.
ONGOING_PER_BATCH = 2
QUEUED_PER_REPLICA = 64
DRAIN_BYTES = 64 * 1024 * 1024  # an oversized body read (and dropped) this far, so its 413 reaches the client


def positive_int(name: str, default: int, limit: int) -> int:
    """An environment variable holding a whole number in 1..limit; a bad one stops the app at start."""
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= limit:
        raise ConfigError(f"{name}={value!r}: a whole number from 1 to {limit}")
    return int(value)


def batch_wait_s() -> float:
    """DOGBREED_BATCH_WAIT_MS in seconds: how long a forward waits for more requests to join it."""
    value = os.environ.get("DOGBREED_BATCH_WAIT_MS")
    if value is None:
        return DEFAULT_BATCH_WAIT_MS / 1000
    try:
        wait_ms = float(value)
    except ValueError:
        wait_ms = -1.0
    if not 0 <= wait_ms <= 1000:
        raise ConfigError(f"DOGBREED_BATCH_WAIT_MS={value!r}: milliseconds from 0 to 1000")
    return wait_ms / 1000


def error_response(status: int, message: str) -> Response:
    return Response(json.dumps({"message": message}), status_code=status, media_type=handler.JSON_TYPE)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 when it is over `limit` bytes; at most `limit` bytes are kept.

    An oversized body is still read to its end (up to DRAIN_BYTES) before the refusal, so the client,
    which is still sending, gets the 413 rather than a reset connection.
    """
    body = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            body += chunk
        elif size > DRAIN_BYTES:
            break
    if size > limit:
        raise RequestError(413, f"the body is {size:,} bytes or more, over the {limit:,}-byte limit")
    return bytes(body)


class Classifier:
    """One model copy: loads and warms up the model, then answers requests in shared batches."""

    def __init__(self, model_dir: str, threads: int, max_batch: int, wait_s: float) -> None:
        torch.set_num_threads(threads)
        self.predictor = handler.load_predictor(model_dir, max_batch=max_batch)
        # serve.batch's wrapper has these setters; its annotations give the plain method's type.
        self.forward.set_max_batch_size(max_batch)  # type: ignore[attr-defined]
        self.forward.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]
        code = Path(handler.__file__).parent
        log.info(
            "dogbreed replica: %d torch threads, batches of up to %d, serving code from %s", threads, max_batch, code
        )

    async def __call__(self, request: Request) -> Response:
        try:
            body = await read_body(request, handler.MAX_BODY_BYTES)
            content_type = request.headers.get("content-type")
            data = await asyncio.to_thread(handler.input_fn, body, content_type)
            image = await asyncio.to_thread(handler.prepare, data, self.predictor)
            logits = await self.forward(image)
            prediction = handler.answer(data, logits, self.predictor)
            return Response(handler.output_fn(prediction, request.headers.get("accept")), media_type=handler.JSON_TYPE)
        except RequestError as err:
            log.info("refused (%d): %s", err.status, err.message)
            return error_response(err.status, err.message)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_MS / 1000)
    async def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The model on the images of every request waiting together: one logits row each."""
        logits = await asyncio.to_thread(handler.forward_batch, images, self.predictor)
        log.info("dogbreed forward of %d image(s)", len(images))
        return list(logits)


def build(model_dir: str = MODEL_DIR) -> Any:
    """The bound application, its replicas and threads from the environment `deploy up` sets."""
    replicas = positive_int("DOGBREED_REPLICAS", 1, 64)
    cpus = os.cpu_count() or 1
    threads = positive_int("DOGBREED_THREADS", max(1, cpus // replicas), 256)
    max_batch = positive_int("DOGBREED_MAX_BATCH", DEFAULT_MAX_BATCH, 64)
    deployment = serve.deployment(
        name="dogbreed",
        num_replicas=replicas,
        # Ray sets OMP_NUM_THREADS from num_cpus; fractional, so replicas x threads may match the vCPUs exactly.
        ray_actor_options={"num_cpus": min(threads, cpus / replicas)},
        max_ongoing_requests=ONGOING_PER_BATCH * max_batch,
        max_queued_requests=QUEUED_PER_REPLICA * replicas,
    )(Classifier)
    return deployment.bind(os.environ.get("DOGBREED_MODEL_DIR", model_dir), threads, max_batch, batch_wait_s())


app = build()
