"""The Lambda handler: event shapes, malformed events, size limit, endpoint failures and timeouts."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
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


def test_an_endpoint_still_warming_up_is_retried_while_time_allows_then_503_with_retry_after(
    module: ModuleType, stubbed: tuple[Any, Stubber]
) -> None:
    runtime, stubber = stubbed
    body = json.dumps({"url": "https://e.com/a.jpg"}).encode()
    # ModelNotReadyException: "a serverless endpoint variant's resources are still being provisioned".
    stubber.add_client_error("invoke_endpoint", "ModelNotReadyException", "not ready", 429)
    expect_call(stubber, body, "application/json")
    plenty = time.monotonic() + 120
    reply = module.handle({"url": "https://e.com/a.jpg"}, runtime, "ep", deadline=plenty)
    assert reply["statusCode"] == 200 and json.loads(reply["body"]) == ANSWER
    stubber.add_client_error("invoke_endpoint", "ModelNotReadyException", "not ready", 429)
    no_time_left = time.monotonic() + 5  # another call of up to 2 x (3 + 10) s would not fit
    reply = module.handle({"url": "https://e.com/a.jpg"}, runtime, "ep", deadline=no_time_left)
    assert reply["statusCode"] == 503 and reply["headers"]["Retry-After"] == "10"
    assert "starting up" in json.loads(reply["body"])["message"]
    stubber.assert_no_pending_responses()


def test_serverless_function_answers_a_cold_start_timeout_with_503_and_caps_bodies_at_4_mb(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment `deploy up` gives the function of a serverless endpoint (deploy/cloud/container.py)."""
    for name, value in {
        "DOGBREED_MAX_BODY_BYTES": str(4 * 1024 * 1024),
        "ENDPOINT_SERVERLESS": "1",
        "ENDPOINT_READ_TIMEOUT_S": "65",
        "ENDPOINT_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("serverless_handler", Path(module.__file__))
    serverless = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serverless)
    config = serverless.RUNTIME.meta.config
    assert (config.read_timeout, config.retries["total_max_attempts"]) == (65, 1)
    with socket.socket() as silent:  # a cold start: the connection is taken and no answer comes in time
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        slow = client(f"http://127.0.0.1:{silent.getsockname()[1]}", read_timeout=0.3, connect_timeout=0.3)
        reply = serverless.handle({"url": "https://e.com/a.jpg"}, slow, "ep")
    assert reply["statusCode"] == 503 and reply["headers"]["Retry-After"] == "10"
    event = {"body": base64.b64encode(b"\xff" * 5_000_000).decode(), "isBase64Encoded": True}
    event["headers"] = {"content-type": "image/jpeg"}
    reply = serverless.handle(event, slow, "ep")  # refused before any call
    assert reply["statusCode"] == 413 and "4,194,304-byte" in json.loads(reply["body"])["message"]


def test_module_client_and_missing_endpoint_name(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    config = module.RUNTIME.meta.config
    assert config.read_timeout == 10 and config.connect_timeout == 3 and config.retries["total_max_attempts"] == 2
    monkeypatch.delenv("ENDPOINT_NAME", raising=False)
    reply = module.lambda_handler({"url": "https://e.com/a.jpg"}, None)
    assert reply["statusCode"] == 500 and "no endpoint name" in json.loads(reply["body"])["message"]


URL = "https://example.com/dog.jpg"
URL_BODY = json.dumps({"url": URL})


@pytest.mark.parametrize(
    ("event", "status", "fragment"),
    [
        # The cases from the hardening issue, each of which used to raise.
        ({"body": URL_BODY, "queryStringParameters": {"topk": "²"}}, 400, "topk must be an integer from 1 to 1000"),
        ({"body": URL_BODY, "queryStringParameters": {"topk": "٣"}}, 400, "topk must be"),
        ({"body": "[" * 100_000 + "]" * 100_000}, 400, "nested deeper than 8 levels"),
        ({"body": '{"url": "' + URL + '", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"}, 400, "nested deeper"),
        ({"body": '{"a":' * 50_000}, 400, "nested deeper"),  # unbalanced as well
        # An unterminated string of escaped quotes: the depth scan stays linear (this was minutes when quadratic).
        ({"body": "[" * 9 + '"' + '\\"' * 300_000}, 400, "nested deeper"),
        ({"body": '["' + '\\"' * 300_000}, 400, "neither JSON"),
        ({"body": URL_BODY, "headers": "content-type: application/json"}, 400, "headers must be an object of strings"),
        ({"body": URL_BODY, "headers": [["content-type", "image/jpeg"]]}, 400, "headers must be"),
        ({"body": URL_BODY, "queryStringParameters": "topk=3"}, 400, "queryStringParameters must be"),
        ({"body": URL_BODY, "queryStringParameters": [["topk", "3"]]}, 400, "queryStringParameters must be"),
        ({"body": URL_BODY, "queryStringParameters": {"topk": 3}}, 400, "queryStringParameters must be"),
        # Other types and values at every level.
        ({"body": URL_BODY, "headers": {"content-type": None}}, 400, "headers must be"),
        ({"body": URL_BODY, "headers": {1: "x"}}, 400, "headers must be"),
        ({"body": URL_BODY, "isBase64Encoded": "true"}, 400, "isBase64Encoded must be true or false"),
        ({"body": URL_BODY, "isBase64Encoded": None}, 400, "isBase64Encoded must be"),
        ({"body": {"url": URL}}, 400, "the body must be a string, got dict"),
        ({"body": b"{}"}, 400, "the body must be a string, got bytes"),
        ({"body": 3}, 400, "the body must be a string"),
        ({"body": "\ud800", "headers": {"content-type": "image/png"}}, 400, "not valid text"),
        ({"body": "\ud800"}, 400, "neither JSON nor an image"),
        ({"body": base64.b64encode(b'{"url": "\xff"}').decode(), "isBase64Encoded": True}, 400, "neither JSON"),
        ({"body": "٣٣٣٣", "isBase64Encoded": True}, 400, "not valid base64"),
        ({"body": '{"url": "' + URL + '", "topk": 1' + "0" * 5000 + "}"}, 400, "neither JSON"),
        ({"url": URL, "topk": True}, 400, "topk must be an integer from 1 to 1000, got bool"),
        ({"url": URL, "topk": 0}, 400, "got 0"),
        ({"url": URL, "topk": 1001}, 400, "got 1001"),
        ({"url": URL, "topk": 3.0}, 400, "got 3.0"),
        ({"url": URL, "topk": "²"}, 400, "got '²'"),
        ({"url": URL, "topk": 10**5000}, 400, "an integer of 16610 bits"),
        ({"url": URL, "topk": None}, 400, "got null"),
        ({"url": URL, "logits": "yes"}, 400, "logits must be true or false"),
        ({"url": 5}, 400, "url must be a non-empty string, got 5"),
        ({"url": ""}, 400, "url must be a non-empty string"),
        ({"image_b64": ["x"]}, 400, "image_b64 must be a non-empty string, got list"),
        ({"image_b64": "%%%"}, 400, "image_b64 is not valid base64"),
        ({"url": "x" * 1000, "topk": "y" * 1000}, 400, "got 'yyyyy"),
        (None, 400, "JSON object"),
        ("{}", 400, "JSON object"),
        ({"body": "A" * (9 * 1024 * 1024), "isBase64Encoded": True}, 413, "over the"),
        ({"body": json.dumps({"url": URL, "pad": "x" * (6 * 1024 * 1024)})}, 413, "over the"),
    ],
)
def test_every_malformed_event_is_a_4xx_message(
    module: ModuleType, stubbed: tuple[Any, Stubber], event: Any, status: int, fragment: str
) -> None:
    runtime, _ = stubbed  # nothing queued: reaching the endpoint would be a 502
    reply = module.handle(event, runtime, "ep")
    assert reply["statusCode"] == status and reply["headers"] == {"Content-Type": "application/json"}
    body = json.loads(reply["body"])
    assert set(body) == {"message"} and fragment in body["message"] and len(body["message"]) < 200


@pytest.mark.parametrize(
    ("event", "sent"),
    [
        ({"url": URL, "topk": 1000, "logits": True}, {"url": URL, "topk": 1000, "logits": True}),
        ({"url": URL, "topk": "7"}, {"url": URL, "topk": 7}),  # a decimal string is converted
        ({"body": URL_BODY, "queryStringParameters": {"topk": "007"}}, {"url": URL, "topk": 7}),
        ({"body": URL_BODY, "headers": None, "queryStringParameters": None}, {"url": URL}),  # REST API nulls
        # Brackets and escaped quotes inside strings do not count towards the depth limit.
        ({"body": json.dumps({"url": URL + '?q=\\"' + "[{" * 40})}, {"url": URL + '?q=\\"' + "[{" * 40}),
        # Nesting up to the limit is parsed; unknown keys are dropped.
        ({"body": json.dumps({"url": URL, "extra": [[[[[[[1]]]]]]]})}, {"url": URL}),
    ],
)
def test_valid_edge_cases_reach_the_endpoint(
    module: ModuleType, stubbed: tuple[Any, Stubber], event: Any, sent: dict[str, Any]
) -> None:
    runtime, stubber = stubbed
    expect_call(stubber, json.dumps(sent).encode(), "application/json")
    reply = module.handle(event, runtime, "ep")
    assert reply["statusCode"] == 200 and json.loads(reply["body"]) == ANSWER
    stubber.assert_no_pending_responses()


def test_a_bug_is_a_logged_500_without_a_traceback(
    module: ModuleType, stubbed: tuple[Any, Stubber], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Any) -> Any:
        raise KeyError("secret detail")

    monkeypatch.setattr(module, "endpoint_request", broken)
    monkeypatch.setattr(module, "RUNTIME", stubbed[0])
    monkeypatch.setenv("ENDPOINT_NAME", "ep")
    for reply in (module.handle({"url": URL}, stubbed[0], "ep"), module.lambda_handler({"url": URL}, None)):
        assert reply["statusCode"] == 500 and json.loads(reply["body"]) == {"message": module.INTERNAL}
        assert "secret" not in reply["body"] and "Traceback" not in reply["body"]
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == 2 and "secret detail" in str(logged[0].exc_info)
