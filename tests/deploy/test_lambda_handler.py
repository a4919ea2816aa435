"""The Lambda handler: event shapes, malformed events, size limit, endpoint failures and timeouts."""

from __future__ import annotations

import base64
import io
import json
import socket
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import Stubber

from tests.helpers.images import image_bytes

JPEG = image_bytes(size=(64, 48))
ANSWER = {"predictions": [{"breed": "Beagle", "index": 3, "probability": 0.9}], "model": {"name": "run"}}


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # Lambda always sets one; the module builds its client
    from deploy.lambda_function import lambda_function

    return lambda_function


def client(endpoint_url: str = "https://runtime.sagemaker.us-east-1.amazonaws.com", **config: Any) -> Any:
    settings = Config(signature_version=UNSIGNED, retries={"max_attempts": 1}, **config)
    return boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=endpoint_url, config=settings)


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    runtime = client()
    with Stubber(runtime) as stubber:
        yield runtime, stubber


def expect_call(stubber: Stubber, body: bytes, content_type: str) -> None:
    reply = {
        "Body": StreamingBody(io.BytesIO(json.dumps(ANSWER).encode()), len(json.dumps(ANSWER))),
        "ContentType": "application/json",
    }
    params = {"EndpointName": "ep", "ContentType": content_type, "Accept": "application/json", "Body": body}
    stubber.add_response("invoke_endpoint", reply, params)


def test_course_url_event(module: ModuleType, stubbed: tuple[Any, Stubber]) -> None:
    runtime, stubber = stubbed
    expect_call(stubber, json.dumps({"url": "https://example.com/dog.jpg"}).encode(), "application/json")
    reply = module.handle({"url": "https://example.com/dog.jpg"}, runtime, "ep")
    assert reply["statusCode"] == 200 and json.loads(reply["body"]) == ANSWER
    stubber.assert_no_pending_responses()


def test_proxy_events_with_image_or_json_body(module: ModuleType, stubbed: tuple[Any, Stubber]) -> None:
    runtime, stubber = stubbed
    expect_call(stubber, JPEG, "image/jpeg")
    event = {
        "headers": {"Content-Type": "image/jpeg"},
        "body": base64.b64encode(JPEG).decode(),
        "isBase64Encoded": True,
    }
    assert module.handle(event, runtime, "ep")["statusCode"] == 200
    b64 = base64.b64encode(JPEG).decode()
    expect_call(stubber, json.dumps({"image_b64": b64, "topk": 2}).encode(), "application/json")
    event = {
        "headers": {"content-type": "image/jpeg"},
        "body": b64,
        "isBase64Encoded": True,
        "queryStringParameters": {"topk": "2"},
    }
    assert module.handle(event, runtime, "ep")["statusCode"] == 200
    expect_call(stubber, json.dumps({"url": "https://example.com/a.jpg"}).encode(), "application/json")
    event = {"headers": {}, "body": '{"url": "https://example.com/a.jpg"}', "isBase64Encoded": False}
    assert module.handle(event, runtime, "ep")["statusCode"] == 200
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("event", "status", "fragment"),
    [
        (["not", "an", "object"], 400, "JSON object"),
        ({"picture": "x"}, 400, "expected"),
        ({"body": "%%%", "isBase64Encoded": True}, 400, "not valid base64"),
        ({"body": "just text", "headers": {"content-type": "text/plain"}}, 400, "neither JSON nor an image"),
        ({"body": "", "headers": {"content-type": "image/png"}}, 400, "empty"),
        ({"body": "{}", "queryStringParameters": {"topk": "x"}}, 400, "expected"),
        ({"image_b64": "A" * (6 * 1024 * 1024)}, 413, "over the"),
    ],
)
def test_malformed_and_oversized_events(
    module: ModuleType, stubbed: tuple[Any, Stubber], event: Any, status: int, fragment: str
) -> None:
    runtime, stubber = stubbed  # no call may reach the endpoint
    reply = module.handle(event, runtime, "ep")
    assert reply["statusCode"] == status and fragment in json.loads(reply["body"])["message"]
    stubber.assert_no_pending_responses()


def test_endpoint_refusals_and_failures(module: ModuleType, stubbed: tuple[Any, Stubber]) -> None:
    runtime, stubber = stubbed
    refused = {"OriginalStatusCode": 400, "OriginalMessage": '{"message": "not an image"}'}
    stubber.add_client_error("invoke_endpoint", "ModelError", "from primary", 424, modeled_fields=refused)
    reply = module.handle({"url": "https://e.com/a.jpg"}, runtime, "ep")
    assert reply["statusCode"] == 400 and json.loads(reply["body"]) == {"message": "not an image"}
    toolkit = {"OriginalStatusCode": 415, "OriginalMessage": "unsupported content type\nTraceback (most recent..."}
    stubber.add_client_error("invoke_endpoint", "ModelError", "from primary", 424, modeled_fields=toolkit)
    reply = module.handle({"url": "https://e.com/a.jpg"}, runtime, "ep")
    assert reply["statusCode"] == 415 and json.loads(reply["body"]) == {"message": "unsupported content type"}
    crashed = {"OriginalStatusCode": 500, "OriginalMessage": "boom"}
    stubber.add_client_error("invoke_endpoint", "ModelError", "from primary", 424, modeled_fields=crashed)
    stubber.add_client_error("invoke_endpoint", "ValidationError", "Endpoint ep not found", 400)
    for _ in range(2):
        reply = module.handle({"url": "https://e.com/a.jpg"}, runtime, "ep")
        assert reply["statusCode"] == 502 and "Traceback" not in reply["body"]


def test_timeouts_and_refused_connections_are_502(module: ModuleType, closed_port: int) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        slow = client(f"http://127.0.0.1:{silent.getsockname()[1]}", read_timeout=0.3, connect_timeout=0.3)
        reply = module.handle({"url": "https://e.com/a.jpg"}, slow, "ep")
    assert reply["statusCode"] == 502 and "ReadTimeout" in json.loads(reply["body"])["message"]
    refused = module.handle({"url": "https://e.com/a.jpg"}, client(f"http://127.0.0.1:{closed_port}"), "ep")
    assert refused["statusCode"] == 502 and "did not answer" in json.loads(refused["body"])["message"]


def test_module_client_and_missing_endpoint_name(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    config = module.RUNTIME.meta.config
    assert config.read_timeout == 10 and config.connect_timeout == 3 and config.retries["total_max_attempts"] == 2
    monkeypatch.delenv("ENDPOINT_NAME", raising=False)
    reply = module.lambda_handler({"url": "https://e.com/a.jpg"}, None)
    assert reply["statusCode"] == 500 and "no endpoint name" in json.loads(reply["body"])["message"]
