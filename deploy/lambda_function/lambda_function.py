"""Lambda front door for the SageMaker endpoint: boto3 and the standard library only.

Handler `lambda_function.lambda_handler`; the endpoint name comes from the
ENDPOINT_NAME environment variable. Accepted events:

- the course's test event `{"url": "https://..."}` (the endpoint fetches it),
- `{"image_b64": "..."}` (a base64 image),
- an API Gateway / function URL proxy event whose body is either such JSON or
  an image (`isBase64Encoded`, content type from the headers).

`topk` may be given in the JSON or as a query-string parameter. Every answer is
`{"statusCode", "headers", "body"}` with a JSON body; failures carry a message,
never a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # the real-time endpoint's payload cap
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
# One client per container, reused while warm. Two attempts of at most 3 + 10 s stay under
# API Gateway's 29 s integration limit, so a slow endpoint yields our 502, not a gateway 504.
RUNTIME = boto3.client(
    "sagemaker-runtime",
    config=Config(connect_timeout=3, read_timeout=10, retries={"total_max_attempts": 2, "mode": "standard"}),
)


class BadEvent(Exception):
    """The event cannot be turned into an endpoint request; `status` is 400 or 413."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def respond(status: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(payload)}


def _check_size(body: bytes) -> bytes:
    if not body:
        raise BadEvent(400, "the image is empty")
    if len(body) > MAX_PAYLOAD_BYTES:
        raise BadEvent(413, f"the request is {len(body):,} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte endpoint limit")
    return body


def _from_json(payload: Any, query: dict[str, str]) -> tuple[bytes, str]:
    if not isinstance(payload, dict) or not ({"url", "image_b64"} & payload.keys()):
        raise BadEvent(400, 'expected {"url": "https://..."} or {"image_b64": "..."} (or an image body)')
    request = {key: payload[key] for key in ("url", "image_b64", "topk", "logits") if key in payload}
    if "topk" in query:
        if not query["topk"].isdigit():
            raise BadEvent(400, f"topk must be a positive integer, got {query['topk']!r}")
        request["topk"] = int(query["topk"])
    return _check_size(json.dumps(request).encode()), "application/json"


def endpoint_request(event: Any) -> tuple[bytes, str]:
    """The body and content type to send to the endpoint for `event`.

    Raises:
        BadEvent: the event is malformed (400) or the image is too large (413).
    """
    if not isinstance(event, dict):
        raise BadEvent(400, "the event must be a JSON object")
    if "body" not in event:  # a direct invocation: the event itself is the request
        return _from_json(event, {})
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    query = event.get("queryStringParameters") or {}
    body = event["body"] or ""
    try:
        raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else body.encode()
    except (binascii.Error, ValueError, TypeError, AttributeError):
        raise BadEvent(400, "the body is marked base64 but is not valid base64") from None
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type in IMAGE_TYPES:
        if "topk" in query:  # only a JSON request can carry options to the endpoint
            return _from_json({"image_b64": base64.b64encode(_check_size(raw)).decode()}, query)
        return _check_size(raw), content_type
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadEvent(400, f"the body is neither JSON nor an image (content type {content_type!r})") from None
    return _from_json(payload, query)


def model_message(err: ClientError) -> str:
    """The container's own message: its JSON `message`, else the first line of what SageMaker relays.

    The inference toolkit answers errors with the message, a newline and the traceback;
    the traceback stays in the endpoint logs.
    """
    original = err.response.get("OriginalMessage") or err.response["Error"].get("Message", "")
    try:
        return str(json.loads(original)["message"])
    except (ValueError, TypeError, KeyError):
        return original.split("\n", 1)[0]


def handle(event: Any, runtime: Any, endpoint_name: str) -> dict[str, Any]:
    """Forwards one event to the endpoint; the testable core of `lambda_handler`."""
    try:
        body, content_type = endpoint_request(event)
    except BadEvent as err:
        return respond(err.status, {"message": str(err)})
    try:
        reply = runtime.invoke_endpoint(
            EndpointName=endpoint_name, ContentType=content_type, Accept="application/json", Body=body
        )
        return respond(200, json.loads(reply["Body"].read()))
    except ClientError as err:
        original = err.response.get("OriginalStatusCode")
        if err.response["Error"]["Code"] == "ModelError" and original and 400 <= int(original) < 500:
            # The endpoint refused the image (not decodable, too many pixels, bad URL): the caller's fault.
            return respond(int(original), {"message": model_message(err)})
        log.error("endpoint %s failed: %s", endpoint_name, err)
        return respond(502, {"message": f"the model endpoint failed: {err.response['Error']['Code']}"})
    except (BotoCoreError, ValueError) as err:  # timeouts, connection errors, a non-JSON reply
        log.error("endpoint %s failed: %s", endpoint_name, err)
        return respond(502, {"message": f"the model endpoint did not answer: {type(err).__name__}"})


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    endpoint_name = os.environ.get("ENDPOINT_NAME")
    if not endpoint_name:
        log.error("ENDPOINT_NAME is not set in the function's environment")
        return respond(500, {"message": "the function is misconfigured: no endpoint name"})
    return handle(event, RUNTIME, endpoint_name)
