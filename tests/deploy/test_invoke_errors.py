"""`python -m deploy invoke` against an endpoint that refuses: one line, whatever format the container used."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.cli import main
from tests.helpers.images import image_bytes

# How the SageMaker inference toolkit answers a handler error: the message, a newline, the traceback.
TOOLKIT_BODY = (
    "the image cannot be decoded: broken data stream\n"
    "Traceback (most recent call last):\n"
    '  File "/opt/conda/lib/python3.12/site-packages/sagemaker_inference/transformer.py", line 150, in transform\n'
    "dogbreed.serving.errors.RequestError: the image cannot be decoded: broken data stream\n"
)
PROJECT_BODY = json.dumps({"message": "unsupported content type 'text/plain'"})


def model_error(original_status: int, original_message: str) -> bytes:
    """sagemaker-runtime's 424 ModelError wrapping the container's answer, as the real service sends it."""
    return json.dumps(
        {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
            "OriginalStatusCode": original_status,
            "OriginalMessage": original_message,
            "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/ep",
            "message": f"Received client error ({original_status}) from primary with message {original_message!r}",
        }
    ).encode()


@pytest.fixture
def refusing_endpoint() -> Iterator[tuple[str, list[bytes]]]:
    """A stub of sagemaker-runtime on loopback; each POST gets the next queued ModelError body."""
    replies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = replies.pop(0)
            self.send_response(424)
            self.send_header("x-amzn-ErrorType", "ModelError")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", replies
    finally:
        server.shutdown()
        server.server_close()


def test_invoke_prints_the_first_line_of_a_toolkit_or_project_error(
    refusing_endpoint: tuple[str, list[bytes]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url, replies = refusing_endpoint
    image = tmp_path / "dog.jpg"
    image.write_bytes(image_bytes())
    expected = {
        TOOLKIT_BODY: "error: endpoint ep refused the request: the image cannot be decoded: broken data stream",
        PROJECT_BODY: "error: endpoint ep refused the request: unsupported content type 'text/plain'",
    }
    for original, line in expected.items():
        replies.append(model_error(400, original))
        with pytest.raises(SystemExit) as stop:
            main(["invoke", str(image), "--endpoint", "ep", "--endpoint-url", url])
        assert stop.value.code == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [line]  # one line: no traceback from the container or from here
