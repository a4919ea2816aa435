"""The deployed zip under AWS's own Lambda runtime client (awslambdaric), as the python3.12 runtime runs it.

awslambdaric resolves `lambda_function.lambda_handler` from the zip's top level, polls the Runtime
API for events, builds the context (deadline, request id) and posts each answer back. Here the
Runtime API and the SageMaker runtime are small HTTP servers on 127.0.0.1; the handler and the
runtime client are the real ones.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.cloud import lambda_
from tests.helpers.config import REPO
from tests.helpers.net import free_port

pytest.importorskip("awslambdaric")

ANSWER = {"predictions": [{"breed": "Beagle", "index": 3, "probability": 0.9}], "model": {"name": "run"}}
EVENTS = {
    "page": {"rawPath": "/", "requestContext": {"http": {"method": "GET"}}},
    "url": {"url": "https://example.com/dog.jpg", "topk": 1},
    "malformed": {"body": 5, "headers": {}},
}
# What the runtime starts: the handler module from the zip's folder, with this repository out of reach.
RUNTIME = (
    "import sys; sys.modules['deploy'] = None; sys.path.insert(0, sys.argv[1]);"
    "from awslambdaric.__main__ import main; main(['awslambdaric', 'lambda_function.lambda_handler'])"
)


class RuntimeApi(http.server.ThreadingHTTPServer):
    """The Lambda Runtime API (2018-06-01): hands out queued events and keeps what comes back."""

    def __init__(self, events: dict[str, dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", free_port()), RuntimeApiHandler)
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        for request_id, event in events.items():
            self.events.put((request_id, event))
        self.answers: dict[str, tuple[str, Any]] = {}
        self.all_answered = threading.Event()
        self.expected = len(events)


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """Answers with a body and its length, quietly: what both stub servers need."""

    protocol_version = "HTTP/1.1"

    def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class RuntimeApiHandler(JsonHandler):
    server: RuntimeApi

    def do_GET(self) -> None:
        assert self.path == "/2018-06-01/runtime/invocation/next", self.path
        request_id, event = self.server.events.get()  # blocks once every event is out, as Lambda does
        self.reply(200, json.dumps(event).encode(), {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:dogbreed-invoke",
            "Content-Type": "application/json",
        })  # fmt: skip

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.strip("/").split("/")  # 2018-06-01/runtime/invocation/<id>/<response|error>
        self.reply(202, b"{}", {"Content-Type": "application/json"})
        if len(parts) == 5 and parts[2] == "invocation":
            self.server.answers[parts[3]] = (parts[4], json.loads(body))
        else:
            self.server.answers[self.path] = ("init-error", json.loads(body))
        if len(self.server.answers) >= self.server.expected or "init-error" in str(self.server.answers):
            self.server.all_answered.set()


class SageMakerRuntime(http.server.ThreadingHTTPServer):
    """`POST /endpoints/<name>/invocations`, answered with fixed predictions; the requests are kept."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), SageMakerRuntimeHandler)
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class SageMakerRuntimeHandler(JsonHandler):
    server: SageMakerRuntime

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, json.loads(body)))
        self.reply(200, json.dumps(ANSWER).encode(), {"Content-Type": "application/json"})


@pytest.fixture
def sagemaker_runtime() -> Iterator[SageMakerRuntime]:
    server = SageMakerRuntime()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def run_under_awslambdaric(task_root: Path, events: dict[str, dict[str, Any]], env: dict[str, str]) -> RuntimeApi:
    api = RuntimeApi(events)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    runtime_env = {**env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}"}
    process = subprocess.Popen([sys.executable, "-c", RUNTIME, str(task_root)], env=runtime_env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        answered = api.all_answered.wait(60)
    finally:
        process.kill()
        output = process.communicate()[0]
        api.shutdown()
    assert answered, f"the runtime answered {sorted(api.answers)} of {sorted(events)}:\n{output[-3000:]}"
    return api


def test_the_zip_runs_under_the_lambda_runtime_client(tmp_path: Path, sagemaker_runtime: SageMakerRuntime) -> None:
    zipfile.ZipFile(io.BytesIO(lambda_.zip_folder(REPO / "deploy" / "lambda_function"))).extractall(tmp_path)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env |= {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": sagemaker_runtime.url,
        "ENDPOINT_NAME": "dogbreed",
        "PYTHONPATH": "",
    }
    api = run_under_awslambdaric(tmp_path, EVENTS, env)

    kind, page = api.answers["page"]
    assert kind == "response" and page["statusCode"] == 200
    assert "<title>Dog breed classifier</title>" in page["body"]
    kind, answer = api.answers["url"]
    assert kind == "response" and answer["statusCode"] == 200 and json.loads(answer["body"]) == ANSWER
    assert sagemaker_runtime.received == [("/endpoints/dogbreed/invocations", EVENTS["url"])]
    kind, refused = api.answers["malformed"]
    assert kind == "response" and refused["statusCode"] == 400 and "body" in json.loads(refused["body"])["message"]
