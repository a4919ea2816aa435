"""The SageMaker PyTorch inference toolkit's handler service, driven as TorchServe drives it in the image.

Run as a script in a `python -I -S` child whose sys.path is the extracted model's `code/` plus the
site-packages that hold torch and the toolkit, so nothing of this project but the tarball's code is
importable, as in the image. It imports nothing of the project itself.

    python -I -S toolkit.py requests CODE MODEL_DIR SITE_DIRS_JSON REQUESTS_JSON   (prints the answers as JSON)
    python -I -S toolkit.py http CODE MODEL_DIR SITE_DIRS_JSON PORT                 (serves POST /invocations)

`http` answers like one TorchServe worker: one request at a time, in arrival order; TorchServe's Java
frontend itself is not here.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RequestProcessor:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def get_request_properties(self) -> dict[str, str]:
        return self.headers


class Context:
    """The parts of TorchServe's ts.context.Context the toolkit uses."""

    def __init__(self, model_dir: str, headers: dict[str, str]) -> None:
        self.model_name = "model"  # logged by sagemaker-inference's handle_error
        self.system_properties = {"model_dir": model_dir, "gpu_id": None}
        self.request_processor = [RequestProcessor(headers)]
        self.status = 200

    def set_response_status(self, code: int, phrase: str) -> None:
        self.status = code

    def set_response_content_type(self, index: int, value: str) -> None:
        pass


def handler_service(code: str, model_dir: str, site_dirs: list[str]) -> Any:
    """`HandlerService().initialize(...)` with `code/` first on sys.path, as TorchServe starts a worker."""
    sys.path[:0] = [code]
    sys.path += site_dirs
    from sagemaker_pytorch_serving_container.handler_service import HandlerService

    service = HandlerService()
    service.initialize(Context(model_dir, {}))
    return service


def handle(service: Any, model_dir: str, body: bytes, content_type: str, accept: str) -> tuple[int, str]:
    context = Context(model_dir, {"Content-Type": content_type, "Accept": accept})
    [answer] = service.handle([{"body": body}], context)
    return context.status, answer if isinstance(answer, str) else answer.decode()


def answer_requests(service: Any, model_dir: str, requests: list[tuple[str, str]]) -> None:
    answers = []
    for path, content_type in requests:
        with open(path, "rb") as file:
            status, body = handle(service, model_dir, file.read(), content_type, "application/json")
        answers.append({"status": status, "body": body})
    print(json.dumps(answers))


def serve_http(service: Any, model_dir: str, port: int) -> None:
    worker = threading.Lock()  # one TorchServe worker: one request at a time

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive clients, as the benchmark's are

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.reply(200 if self.path == "/ping" else 404, b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            content_type = self.headers.get("Content-Type", "application/json")
            with worker:
                status, answer = handle(service, model_dir, body, content_type, self.headers.get("Accept", "*/*"))
            self.reply(status, answer.encode())

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    mode, code_dir, model, sites = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    loaded = handler_service(code_dir, model, sites)
    if mode == "requests":
        answer_requests(loaded, model, json.loads(sys.argv[5]))
    else:
        serve_http(loaded, model, int(sys.argv[5]))
