"""A local endpoint: any SageMaker-style handler module behind the container's HTTP contract.

Routes: `GET /` (the demo page: drop a photo, see the top-5), `GET /ping` (200 once the model
is loaded and warm), `POST /invocations`
(the container contract: the handler's status codes as they are), and
`POST /endpoints/<name>/invocations` (the sagemaker-runtime API path, so an
unmodified boto3 client with `endpoint_url` gets real predictions; handler errors
come back as SageMaker's `ModelError` with `OriginalStatusCode`, as the real
service wraps them).

Starlette on uvicorn: requests run concurrently (inference in a thread pool,
where torch releases the GIL), SIGTERM drains in-flight requests before exit,
and uvicorn writes one access-log line per request. A model warmed up for batches
(DOGBREED_MAX_BATCH, `serve --max-batch`) runs the requests waiting together as one
batch (`deploy.batching`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import socket
import tarfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from deploy.batching import batched_predict
from deploy.lambda_function import demo_page
from deploy.model_archive import package_run
from deploy.precision import ModelSettings
from dogbreed.serving import handler as default_handler
from dogbreed.serving.errors import DogbreedError, RequestError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = default_handler.MAX_BODY_BYTES
DRAIN_BYTES = 4 * MAX_BODY_BYTES  # beyond this, an oversized upload is cut off rather than read
# How `python -m deploy serve --workers N` hands its choices to the worker processes it spawns.
MODEL_DIR_ENV = "DOGBREED_MODEL_DIR"
HANDLER_ENV = "DOGBREED_HANDLER"
BODY_TIMEOUT_S = 30.0  # the whole upload, first byte to last: a client dripping bytes is cut off (408)
# At shutdown, how long a just-accepted connection may take to send its request (DrainingH11Protocol).
DRAIN_GRACE_S = 2.0
# Threads for JSON requests (which may fetch a URL: up to 10 s each, mostly waiting) and, apart, for
# the work on image bytes: URLs that are slow on purpose cannot take the threads good images need.
INPUT_THREADS = 64
MODEL_THREADS = 16


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def apply_query(data: Any, query: dict[str, str]) -> Any:
    """`?topk=3&logits=true` on the local endpoint; the container only sees the body."""
    if not isinstance(data, default_handler.Request):
        return data
    if "topk" in query:
        data.topk = default_handler.check_topk(query["topk"], from_query=True)
    if "logits" in query:
        data.logits = default_handler.check_logits(query["logits"], from_query=True)
    return data


async def read_body(request: Request) -> bytes | None:
    """The body, or None when it is over the limit.

    Nothing past the limit is kept, but the rest is read and dropped (up to a bound):
    a server that answers 413 and closes with unread data makes TCP reset the
    connection, and most clients then see a reset instead of the 413.
    """
    body, size = bytearray(), 0
    async for chunk in request.stream():  # counted as it arrives: chunked bodies have no length header
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            body += chunk
        elif size > DRAIN_BYTES:
            break
    return bytes(body) if size <= MAX_BODY_BYTES else None


def create_app(handler: ModuleType, model: Any, body_timeout: float = BODY_TIMEOUT_S) -> Starlette:
    """The endpoint for `model` as returned by `handler.model_fn`."""
    input_threads = anyio.CapacityLimiter(INPUT_THREADS)
    model_threads = anyio.CapacityLimiter(MODEL_THREADS)

    predict_fn = batched_predict(handler, model)

    def predict(data: Any, accept: str | None, query: dict[str, str]) -> str | bytes:
        return handler.output_fn(predict_fn(apply_query(data, query), model), accept or "application/json")

    def answer_bytes(body: bytes, content_type: str | None, accept: str | None, query: dict[str, str]) -> str | bytes:
        return predict(handler.input_fn(body, content_type), accept, query)

    async def answer(body: bytes, content_type: str | None, accept: str | None, query: dict[str, str]) -> str | bytes:
        if "json" not in (content_type or "").lower():  # image bytes: nothing to fetch, one thread hop
            return await anyio.to_thread.run_sync(
                answer_bytes, body, content_type, accept, query, limiter=model_threads
            )
        # JSON may mean a URL fetch: its own threads, so hostile URLs only ever wait on each other.
        data = await anyio.to_thread.run_sync(handler.input_fn, body, content_type, limiter=input_threads)
        return await anyio.to_thread.run_sync(predict, data, accept, query, limiter=model_threads)

    async def ping(request: Request) -> Response:
        return Response(status_code=200)

    page = demo_page.render("invocations")

    async def demo(request: Request) -> Response:
        return Response(page, headers=demo_page.headers(page))

    async def invocations(request: Request) -> Response:
        try:
            body = await asyncio.wait_for(read_body(request), body_timeout)
        except TimeoutError:
            return error(408, f"the body did not arrive within {body_timeout:g} s")
        if body is None:
            return error(413, f"the body is over the {MAX_BODY_BYTES:,}-byte limit")
        headers = request.headers
        try:
            result = await answer(body, headers.get("content-type"), headers.get("accept"), dict(request.query_params))
        except RequestError as err:
            log.info("%s %s -> %d: %s", request.method, request.url.path, err.status, err.message)
            return error(err.status, err.message)
        except Exception:  # a bug must cost one request, not the server
            log.exception("request failed")
            return error(500, "internal error while answering; the server log has the details")
        return Response(result, media_type="application/json")

    async def runtime_invocations(request: Request) -> Response:
        response = await invocations(request)
        if response.status_code == 200:
            return response
        message = json.loads(bytes(response.body))["message"]
        return JSONResponse(
            {
                "ErrorCode": "CLIENT_ERROR_FROM_MODEL" if response.status_code < 500 else "SERVER_ERROR_FROM_MODEL",
                "OriginalStatusCode": response.status_code,
                "OriginalMessage": json.dumps({"message": message}),
                "message": f"Received error ({response.status_code}) from primary with message {message!r}",
            },
            status_code=424,
            headers={"x-amzn-ErrorType": "ModelError"},
        )

    app = Starlette(
        routes=[
            Route("/", demo, methods=["GET"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/endpoints/{name}/invocations", runtime_invocations, methods=["POST"]),
        ]
    )
    app.state.batcher = getattr(predict_fn, "batcher", None)  # its batch sizes, for tests and benchmarks
    return app


def prepare_model_dir(source: str, workdir: Path, model: ModelSettings | None = None) -> Path:
    """A run dir, s3:// run or model.tar.gz -> an extracted model directory, as the container sees it.

    A run is packaged at `model`'s precision (None: float); a tarball is served as it was packaged.
    """
    tarball = Path(source)
    if not (source.endswith(".tar.gz") and tarball.is_file()):
        tarball = package_run(source, workdir / "model.tar.gz", model=model)
    model_dir = workdir / "model"
    with tarfile.open(tarball) as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir


def load_handler(name: str | None) -> ModuleType:
    return importlib.import_module(name) if name else default_handler


def app_from_env() -> Starlette:
    """uvicorn's factory in each `--workers` process: every worker loads (and warms) its own model."""
    handler = load_handler(os.environ.get(HANDLER_ENV))
    return create_app(handler, handler.model_fn(os.environ[MODEL_DIR_ENV]))


def serve(model_dir: Path, host: str, port: int, workers: int = 1, handler_name: str | None = None) -> None:
    """Serves until SIGTERM/SIGINT; in-flight requests finish first."""
    config: dict[str, Any] = {
        "host": host,
        "port": port,
        "timeout_graceful_shutdown": 30,
        "http": DrainingH11Protocol,
    }
    if workers == 1:
        handler = load_handler(handler_name)
        app = create_app(handler, handler.model_fn(str(model_dir)))  # load errors surface here, plainly
        DrainingServer(uvicorn.Config(app, **config)).run()
        return
    os.environ[MODEL_DIR_ENV] = str(model_dir)
    if handler_name:
        os.environ[HANDLER_ENV] = handler_name
    workers_config = uvicorn.Config("deploy.server:app_from_env", factory=True, workers=workers, **config)
    ListenerClosingSupervisor(workers_config, sockets=[workers_config.bind_socket()]).run()


class DrainingH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 connection that, when shutdown begins, still answers a request on its way.

    uvicorn closes at once every connection with no request in progress. One accepted a moment
    before, whose request bytes the event loop has not read yet, is then reset and its request
    lost. Here such a connection has DRAIN_GRACE_S to deliver its request, which is answered with
    `Connection: close`; a connection that stays idle is closed when the grace ends.
    """

    draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # asyncio turns Nagle off only on sockets it created as IPPROTO_TCP. The `--workers` listener
        # comes from uvicorn's bind_socket (protocol 0), and there every response's body, sent after
        # its headers, waited for the client's delayed ACK: 40 ms more per request.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            super().shutdown()  # a request in progress finishes, then the connection closes
            return
        self.draining = True
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(DRAIN_GRACE_S, self.timeout_keep_alive_handler)

    def handle_events(self) -> None:
        super().handle_events()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False


async def accept_queued(servers: list[asyncio.base_events.Server]) -> int:
    """Accepts every connection already waiting on `servers`' listening sockets, as they would; returns how many."""
    loop = asyncio.get_running_loop()
    accepted = 0
    for server in servers:
        factory = getattr(server, "_protocol_factory", None)  # asyncio.Server keeps it; without it, leave the queue
        if factory is None:
            continue
        for listener in server.sockets:
            with socket.socket(fileno=os.dup(listener.fileno())) as own:
                while True:
                    try:
                        connection, _ = own.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    connection.setblocking(False)
                    await loop.connect_accepted_socket(factory, connection)
                    accepted += 1
    return accepted


class DrainingServer(uvicorn.Server):
    """uvicorn's server that, when shutdown begins, first accepts the connections already queued.

    A connection the kernel completed but no process accepted is reset when the last copy of the
    listening socket closes, its request lost without the client knowing whether it was read (2
    of 96 under load in CI). Accepted just before the close, such a connection gets the
    `DrainingH11Protocol` grace and its answer; what can still be reset is what arrives in the
    microseconds between this and the close.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        accepted = await accept_queued(self.servers)
        if accepted:
            log.info("accepted %d queued connection(s) before closing the listener", accepted)
        await super().shutdown(sockets)


class DrainingProcess(Process):
    """uvicorn's worker process, running a `DrainingServer`."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


class ListenerClosingSupervisor(Multiprocess):
    """uvicorn's worker supervisor that closes its own copy of the listening socket when it stops the workers.

    The parent holds the socket only to hand it to the workers. Left open while they drain, the
    kernel keeps completing connections that no process will accept, and resets every one of them
    when the parent exits; closed, the socket goes away with the last worker's listener, so a late
    client is refused (it knows its request was never read) instead of reset.
    """

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = DrainingProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


class BackgroundServer:
    """The endpoint on a thread of this process, for the demo and tests; `stop()` drains it."""

    def __init__(self, app: Starlette, port: int, host: str = "127.0.0.1") -> None:
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DogbreedError(
                    f"the local endpoint did not start on {self.url}; is another process using that port?"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
