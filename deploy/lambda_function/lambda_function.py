"""Lambda front door for the SageMaker endpoint: boto3 and the standard library only.

Handler `lambda_function.lambda_handler`; the endpoint name comes from the
ENDPOINT_NAME environment variable. Accepted events:

- the course's test event `{"url": "https://..."}` (the endpoint fetches it),
- `{"image_b64": "..."}` (a base64 image),
- an API Gateway / function URL proxy event whose body is either such JSON or
  an image (`isBase64Encoded`, content type from the headers).

`topk` may be given in the JSON or as a query-string parameter. Every answer is
`{"statusCode", "headers", "body"}` with a JSON body; failures carry a message,
never a stack trace. Every part of the event is checked (types, sizes, JSON depth, topk)
before anything is sent, so any malformed event is a 4xx, and a bug is a logged 500. An
endpoint still starting (a serverless cold start) is retried while the function's remaining
time allows, then answered 503 with `Retry-After` (docs/architecture.md, "Contract: the Lambda").
A GET on the function URL answers the demo page (`demo_page.py`), whose requests come
back as the POSTs above.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

try:
    from deploy.lambda_function import demo_page  # imported from this repository
except ImportError:  # in the Lambda runtime this folder's files are top-level modules
    import demo_page  # type: ignore[no-redef]

log = logging.getLogger()
log.setLevel(logging.INFO)

# The endpoint's payload cap: 6 MB real-time, 4 MB serverless (`deploy up` sets it for the latter).
MAX_PAYLOAD_BYTES = int(os.environ.get("DOGBREED_MAX_BODY_BYTES", 6 * 1024 * 1024))
MAX_TOPK = 1000  # the endpoint caps k at the class count (133); more is a mistake
MAX_JSON_DEPTH = 8  # a request is one flat object; deeper bodies are refused before parsing
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
REQUEST_KEYS = ("url", "image_b64", "topk", "logits")
EXPECTED = 'expected {"url": "https://..."} or {"image_b64": "..."} (or an image body)'
INTERNAL = "internal error in the function; its log has the details"
# One client per container, reused while warm. Real-time: two attempts of at most 3 + 10 s stay
# under API Gateway's 29 s integration limit, so a slow endpoint yields our 502, not a gateway 504.
# Serverless: `deploy up` sets one attempt with a read timeout that waits out a cold start (SageMaker
# answers within 60 s) inside the function's own timeout.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = float(os.environ.get("ENDPOINT_READ_TIMEOUT_S", 10))
ATTEMPTS = int(os.environ.get("ENDPOINT_ATTEMPTS", 2))
SERVERLESS = os.environ.get("ENDPOINT_SERVERLESS") == "1"
RUNTIME = boto3.client(
    "sagemaker-runtime",
    config=Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
    ),
)
# What sagemaker-runtime answers while the endpoint cannot take the request yet: ModelNotReadyException
# (429: "a serverless endpoint variant's resources are still being provisioned"), ServiceUnavailable
# (503) and throttling. They are retried while the function has time, then answered 503 + Retry-After.
WARMING = ("ModelNotReadyException", "ServiceUnavailable", "ThrottlingException")
RETRY_AFTER_S = 10
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 8.0
CALL_BUDGET_S = (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) * ATTEMPTS  # the longest one invoke can take
# A JSON string, or an unterminated one up to the end: matching never fails, so never backtracks.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))
_DECIMAL = re.compile(r"[0-9]{1,4}")  # ASCII only: str.isdigit() also accepts '²' and '٣'


class BadEvent(Exception):
    """The event cannot be turned into an endpoint request; `status` is 400 or 413."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def respond(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(payload),
    }


def warming_up(endpoint_name: str) -> dict[str, Any]:
    message = f"the model endpoint is starting up; retry in {RETRY_AFTER_S} s"
    log.warning("endpoint %s is not ready yet; answering 503", endpoint_name)
    return respond(503, {"message": message}, {"Retry-After": str(RETRY_AFTER_S)})


def _show(value: Any) -> str:
    """A short, safe rendering of a caller's value for a message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"  # repr() refuses over 4300 digits
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return "null" if value is None else type(value).__name__


def _check_size(body: bytes) -> bytes:
    if not body:
        raise BadEvent(400, "the image is empty")
    if len(body) > MAX_PAYLOAD_BYTES:
        raise BadEvent(413, f"the request is {len(body):,} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte endpoint limit")
    return body


def _topk(value: Any) -> int:
    """`topk` from the JSON (an integer) or the query string (ASCII digits), within 1..MAX_TOPK."""
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TOPK:
        return value
    raise BadEvent(400, f"topk must be an integer from 1 to {MAX_TOPK}, got {_show(value)}")


def _request(payload: Any) -> dict[str, Any]:
    """The endpoint request kept from a JSON object, its fields checked."""
    if not isinstance(payload, dict) or not ({"url", "image_b64"} & payload.keys()):
        raise BadEvent(400, EXPECTED)
    request = {key: payload[key] for key in REQUEST_KEYS if key in payload}
    for key in ("url", "image_b64"):
        if key in request and not (isinstance(request[key], str) and request[key]):
            raise BadEvent(400, f"{key} must be a non-empty string, got {_show(request[key])}")
    if "image_b64" in request:
        try:
            base64.b64decode(request["image_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise BadEvent(400, "image_b64 is not valid base64") from None
    if "topk" in request:
        request["topk"] = _topk(request["topk"])
    if not isinstance(request.get("logits", False), bool):
        raise BadEvent(400, f"logits must be true or false, got {_show(request['logits'])}")
    return request


def _from_json(payload: Any, query: dict[str, str]) -> tuple[bytes, str]:
    request = _request(payload)
    if "topk" in query:
        request["topk"] = _topk(query["topk"])
    return _check_size(json.dumps(request).encode()), "application/json"


def _string_map(event: dict[str, Any], key: str) -> dict[str, str]:
    """`headers` / `queryStringParameters`: absent or null is empty; otherwise strings to strings."""
    value = event.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadEvent(400, f"{key} must be an object of strings, got {_show(value)}")
    return value


def _too_deep(text: str) -> bool:
    """Whether JSON `text` nests arrays/objects deeper than MAX_JSON_DEPTH (checked before parsing).

    Brackets inside strings do not count. Each pass removes the innermost `()` pairs, one level
    of nesting, so a pair left after MAX_JSON_DEPTH passes is nested deeper. Unbalanced text is
    invalid JSON; it is refused here only when it opens more levels than the limit (the parser
    would recurse that deep before finding the error), and otherwise left to the parser.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    outside_strings = _JSON_STRING.sub("", text).encode("utf-8", "replace")
    shape = outside_strings.translate(_PARENS, _NOT_BRACKETS)  # only ( and ) are left
    for _ in range(MAX_JSON_DEPTH):
        peeled = shape.replace(b"()", b"")  # C speed, one level per pass
        if len(peeled) == len(shape):
            break
        shape = peeled
    return b"()" in shape or shape.count(b"(") > MAX_JSON_DEPTH


def _parse_json(raw: bytes | str, content_type: str) -> Any:
    neither = f"the body is neither JSON nor an image (content type {_show(content_type)})"
    try:
        text = raw.removeprefix("\ufeff") if isinstance(raw, str) else raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError:
        raise BadEvent(400, neither) from None
    if _too_deep(text):
        raise BadEvent(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, an integer over the digit limit; depth is checked
        raise BadEvent(400, neither) from None


def _body(event: dict[str, Any]) -> bytes | str:
    """The proxy event's body: decoded from base64 when flagged, size-checked before decoding."""
    body, encoded = event["body"], event.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise BadEvent(400, f"isBase64Encoded must be true or false, got {_show(encoded)}")
    if body is None:
        return ""
    if not isinstance(body, str):
        raise BadEvent(400, f"the body must be a string, got {_show(body)}")
    limit = (MAX_PAYLOAD_BYTES // 3 + 1) * 4 if encoded else MAX_PAYLOAD_BYTES  # base64 is 4 chars per 3 bytes
    if len(body) > limit:
        raise BadEvent(413, f"the body is {len(body):,} characters, over the {MAX_PAYLOAD_BYTES:,}-byte endpoint limit")
    if not encoded:
        return body
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        raise BadEvent(400, "the body is marked base64 but is not valid base64") from None


def _image(raw: bytes | str) -> bytes:
    try:
        return _check_size(raw.encode() if isinstance(raw, str) else raw)
    except UnicodeEncodeError:  # a lone surrogate: not text, and not an image either
        raise BadEvent(400, "the image body is not valid text; send images base64-encoded") from None


def endpoint_request(event: Any) -> tuple[bytes, str]:
    """The body and content type to send to the endpoint for `event`.

    Raises:
        BadEvent: the event is malformed (400) or too large (413).
    """
    if not isinstance(event, dict):
        raise BadEvent(400, "the event must be a JSON object")
    if "body" not in event:  # a direct invocation: the event itself is the request
        return _from_json(event, {})
    headers = {k.lower(): v for k, v in _string_map(event, "headers").items()}
    query = _string_map(event, "queryStringParameters")
    raw = _body(event)
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type in IMAGE_TYPES:
        if "topk" in query:  # only a JSON request can carry options to the endpoint
            return _from_json({"image_b64": base64.b64encode(_image(raw)).decode()}, query)
        return _image(raw), content_type
    return _from_json(_parse_json(raw, content_type), query)


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


def _original_status(err: ClientError) -> int | None:
    """The container's own status when SageMaker relays a `ModelError`."""
    if err.response.get("Error", {}).get("Code") != "ModelError":
        return None
    try:
        return int(err.response.get("OriginalStatusCode"))
    except (TypeError, ValueError):
        return None


def _invoke(body: bytes, content_type: str, runtime: Any, endpoint_name: str, deadline: float | None) -> Any:
    """The endpoint's reply, retrying while it is warming up and the deadline leaves room for another call.

    Raises:
        ClientError: the endpoint refused or failed, or is still warming up when time runs out.
        BotoCoreError: no answer (connection error, timeout).
    """
    backoff = FIRST_BACKOFF_S
    while True:
        try:
            return runtime.invoke_endpoint(
                EndpointName=endpoint_name, ContentType=content_type, Accept="application/json", Body=body
            )
        except ClientError as err:
            room = deadline is not None and time.monotonic() + backoff + CALL_BUDGET_S < deadline
            if err.response.get("Error", {}).get("Code") not in WARMING or not room:
                raise
            log.info("endpoint %s is warming up (%s); retrying in %.0f s", endpoint_name, err, backoff)
            time.sleep(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_S)


def _forward(
    body: bytes, content_type: str, runtime: Any, endpoint_name: str, deadline: float | None
) -> dict[str, Any]:
    try:
        reply = _invoke(body, content_type, runtime, endpoint_name, deadline)
        return respond(200, json.loads(reply["Body"].read()))
    except ClientError as err:
        original = _original_status(err)
        if original is not None and 400 <= original < 500:
            # The endpoint refused the image (not decodable, too many pixels, bad URL): the caller's fault.
            return respond(original, {"message": model_message(err)})
        if err.response.get("Error", {}).get("Code") in WARMING:
            return warming_up(endpoint_name)
        log.error("endpoint %s failed: %s", endpoint_name, err)
        return respond(502, {"message": f"the model endpoint failed: {err.response.get('Error', {}).get('Code')}"})
    except ReadTimeoutError as err:
        if SERVERLESS:  # no answer within SageMaker's own limit: a cold start still under way
            return warming_up(endpoint_name)
        log.error("endpoint %s failed: %s", endpoint_name, err)
        return respond(502, {"message": f"the model endpoint did not answer: {type(err).__name__}"})
    except (BotoCoreError, ValueError, RecursionError) as err:  # connection errors, a non-JSON reply
        log.error("endpoint %s failed: %s", endpoint_name, err)
        return respond(502, {"message": f"the model endpoint did not answer: {type(err).__name__}"})


def handle(event: Any, runtime: Any, endpoint_name: str, deadline: float | None = None) -> dict[str, Any]:
    """Forwards one event to the endpoint; the testable core of `lambda_handler`.

    Args:
        event: the Lambda event.
        runtime: a sagemaker-runtime client.
        endpoint_name: the endpoint to invoke.
        deadline: `time.monotonic()` by which the answer must be sent; an endpoint still
            warming up is retried only while another call fits before it (None: never).

    Never raises: a malformed event is a 4xx, and a bug here is a 500 whose traceback goes to the log only.
    """
    try:
        try:
            body, content_type = endpoint_request(event)
        except BadEvent as err:
            return respond(err.status, {"message": str(err)})
        return _forward(body, content_type, runtime, endpoint_name, deadline)
    except Exception:
        log.exception("the handler failed; answering 500")
        return respond(500, {"message": INTERNAL})


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    if demo_page.requested(event):  # a browser opening the function URL: the demo page, which posts back here
        return demo_page.lambda_response(event)
    endpoint_name = os.environ.get("ENDPOINT_NAME")
    if not endpoint_name:
        log.error("ENDPOINT_NAME is not set in the function's environment")
        return respond(500, {"message": "the function is misconfigured: no endpoint name"})
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    deadline = time.monotonic() + remaining() / 1000 - 1 if remaining else None  # 1 s to send the answer
    return handle(event, RUNTIME, endpoint_name, deadline)
