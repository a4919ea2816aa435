"""The local endpoint from a trained run: predictions, every kind of bad input, concurrency, boto3 and Lambda."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config

from deploy.server import BackgroundServer, create_app, prepare_model_dir
from dogbreed.serving import handler
from tests.helpers.images import image_bytes, png_bomb
from tests.helpers.net import free_port
from tests.helpers.runs import train_run

JPEG = image_bytes()


@pytest.fixture(scope="module")
def labels(endpoint: tuple[str, Path]) -> set[str]:
    return set(json.loads((endpoint[1] / "labels.json").read_text()).values())


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Iterator[tuple[str, Path]]:
    """package -> extract -> model_fn (eager: compile is the slow test's business) -> server on a thread."""
    root = tmp_path_factory.mktemp("serving-server")
    run_dir = train_run(root / "run", tiny_dataset)
    model_dir = prepare_model_dir(str(run_dir), root / "work")
    server = BackgroundServer(create_app(handler, handler.load_predictor(model_dir, compile_model=False)), free_port())
    server.start()
    yield server.url, run_dir
    server.stop()


@pytest.fixture(scope="module")
def image_origin() -> Iterator[str]:
    """A loopback HTTP server with one JPEG, for {"url": ...} requests."""

    class Origin(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dog.jpg"
    server.shutdown()
    server.server_close()


@pytest.fixture
def handle(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """The Lambda handler's core; importing it builds its client, which needs the region Lambda always sets."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from deploy.lambda_function import lambda_function

    return lambda_function.handle


def post(url: str, body: bytes, content_type: str | None, path: str = "/invocations") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def ping(url: str) -> int:
    with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
        return response.status


def runtime_client(url: str) -> Any:
    """An unmodified boto3 sagemaker-runtime client, pointed at the local endpoint."""
    config = Config(signature_version=UNSIGNED, retries={"max_attempts": 1})
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", config=config)


def test_jpeg_png_and_json_requests_name_breeds_from_labels(endpoint: tuple[str, Path], labels: set[str]) -> None:
    url, _ = endpoint
    assert ping(url) == 200
    status, jpeg = post(url, JPEG, "image/jpeg")
    assert status == 200 and len(jpeg["predictions"]) == 4  # default top-5, capped at 4 classes
    assert {item["breed"] for item in jpeg["predictions"]} == labels
    assert abs(sum(item["probability"] for item in jpeg["predictions"]) - 1) < 1e-3
    assert jpeg["model"]["arch"] == "resnet18" and jpeg["model"]["serving"]["compiled"] is False
    status, png = post(url, image_bytes("PNG"), "image/png")
    assert status == 200 and png["predictions"][0]["breed"] == jpeg["predictions"][0]["breed"]
    raw = post(url, JPEG, "application/x-image")[1]
    assert raw["predictions"] == jpeg["predictions"]
    b64 = {"image_b64": base64.b64encode(JPEG).decode(), "topk": 2, "logits": True}
    status, answer = post(url, json.dumps(b64).encode(), "application/json; charset=utf-8")
    assert status == 200 and answer["predictions"] == jpeg["predictions"][:2] and len(answer["logits"]) == 4
    assert "logits" not in jpeg
    status, query = post(url, JPEG, "image/jpeg", "/invocations?topk=1")
    assert status == 200 and query["predictions"] == jpeg["predictions"][:1]


def test_boto3_runtime_client_gets_the_same_answer(endpoint: tuple[str, Path]) -> None:
    url, _ = endpoint
    reply = runtime_client(url).invoke_endpoint(EndpointName="dogbreed", ContentType="image/jpeg", Body=JPEG)
    assert reply["ContentType"] == "application/json"
    assert json.loads(reply["Body"].read())["predictions"] == post(url, JPEG, "image/jpeg")[1]["predictions"]


def test_boto3_sees_handler_errors_as_model_errors(endpoint: tuple[str, Path]) -> None:
    client = runtime_client(endpoint[0])
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName="dogbreed", ContentType="image/jpeg", Body=b"not an image")
    assert caught.value.response["OriginalStatusCode"] == 400


BAD_REQUESTS = [
    ("wrong content type", b"hello", "text/plain", 415, "unsupported content type"),
    ("form content type", JPEG, "application/x-www-form-urlencoded", 415, "unsupported content type"),
    ("empty body", b"", "image/jpeg", 400, "empty"),
    ("not an image", b"GIF87a? no, just text", "image/jpeg", 400, "not an image in a format"),
    ("undecodable png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png", 400, "image"),
    ("decompression bomb", png_bomb(12000, 12000), "image/png", 400, "12000x12000 pixels, more than the limit"),
    ("huge bomb", png_bomb(30000, 30000), "image/png", 400, "decompression bomb"),
    ("over 6 MB", b"\xff" * (6 * 1024 * 1024 + 1), "image/jpeg", 413, "byte limit"),
    ("invalid json", b"{url:", "application/json", 400, "not valid JSON"),
    ("json without image", b'{"picture": 1}', "application/json", 400, "needs"),
    ("bad base64", b'{"image_b64": "***"}', "application/json", 400, "not valid base64"),
    ("bad topk", b'{"image_b64": "", "topk": 0}', "application/json", 400, "topk"),
    ("http url", b'{"url": "http://example.com/dog.jpg"}', "application/json", 400, "only https"),
    ("metadata url", b'{"url": "https://169.254.169.254/latest/meta-data/"}', "application/json", 400, "not a public"),
    ("loopback url", b'{"url": "https://127.0.0.1/dog.jpg"}', "application/json", 400, "not a public address"),
]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns at open; we refuse after
@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_gets_a_status_and_a_message(
    endpoint: tuple[str, Path], body: bytes, content_type: str, status: int, fragment: str
) -> None:
    url, _ = endpoint
    got, answer = post(url, body, content_type)
    assert got == status and fragment in answer["message"]
    assert "Traceback" not in answer["message"]
    assert ping(url) == 200  # and the server is still there


def test_200_requests_from_8_concurrent_clients(endpoint: tuple[str, Path]) -> None:
    url, _ = endpoint
    expected = post(url, JPEG, "image/jpeg")[1]["predictions"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: post(url, JPEG, "image/jpeg"), range(200)))
    assert [status for status, _ in results] == [200] * 200
    assert all(answer["predictions"] == expected for _, answer in results)


def test_lambda_course_event_with_loopback_url(
    endpoint: tuple[str, Path],
    image_origin: str,
    handle: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The course's {"url": ...} test event, through the Lambda handler, to the local endpoint."""
    url, _ = endpoint
    client = runtime_client(url)
    monkeypatch.delenv("DOGBREED_FETCH_ALLOW_LOOPBACK", raising=False)
    refused = handle({"url": image_origin}, client, "dogbreed")
    assert refused["statusCode"] == 400 and "only https://" in json.loads(refused["body"])["message"]
    monkeypatch.setenv("DOGBREED_FETCH_ALLOW_LOOPBACK", "1")
    reply = handle({"url": image_origin}, client, "dogbreed")
    assert reply["statusCode"] == 200 and reply["headers"]["Content-Type"] == "application/json"
    direct = post(url, JPEG, "image/jpeg")[1]
    assert json.loads(reply["body"])["predictions"][0] == direct["predictions"][0]
    proxy = {
        "headers": {"Content-Type": "image/jpeg"},
        "body": base64.b64encode(JPEG).decode(),
        "isBase64Encoded": True,
    }
    assert json.loads(handle(proxy, client, "dogbreed")["body"])["predictions"] == direct["predictions"]
