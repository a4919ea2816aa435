"""A small client: an image file or URL -> the endpoint (directly or through the Lambda handler) -> top-k."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from dogbreed.errors import DogbreedError

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
LOCAL_REGION = "us-east-1"  # a local endpoint ignores the region, but boto3 needs one to build a client


class InvokeError(DogbreedError):
    """The endpoint (or the Lambda handler in front of it) did not return predictions."""


def runtime_client(endpoint_url: str | None = None) -> Any:
    """A sagemaker-runtime client; unsigned against a local endpoint when no AWS credentials are set up."""
    if endpoint_url is None:
        return boto3.client("sagemaker-runtime")
    session = boto3.session.Session()
    signature = {} if session.get_credentials() else {"signature_version": UNSIGNED}
    return session.client(
        "sagemaker-runtime",
        endpoint_url=endpoint_url,
        region_name=session.region_name or LOCAL_REGION,
        config=Config(retries={"max_attempts": 1}, **signature),
    )


def is_url(target: str) -> bool:
    return target.startswith(("https://", "http://"))


def direct_request(target: str, topk: int) -> tuple[bytes, str]:
    """Body and content type for the endpoint: a file's bytes, or a JSON URL request."""
    if is_url(target):
        return json.dumps({"url": target, "topk": topk}).encode(), "application/json"
    path = Path(target)
    if not path.is_file():
        raise InvokeError(f"{target} is neither an image file nor an http(s) URL")
    image = base64.b64encode(path.read_bytes()).decode()
    return json.dumps({"image_b64": image, "topk": topk}).encode(), "application/json"


def lambda_event(target: str, topk: int) -> dict[str, Any]:
    """The course's `{"url": ...}` test event for a URL; a function-URL proxy event for a file."""
    if is_url(target):
        return {"url": target, "topk": topk}
    path = Path(target)
    if not path.is_file():
        raise InvokeError(f"{target} is neither an image file nor an http(s) URL")
    return {
        "headers": {"content-type": CONTENT_TYPES.get(path.suffix.lower(), "application/x-image")},
        "queryStringParameters": {"topk": str(topk)},
        "body": base64.b64encode(path.read_bytes()).decode(),
        "isBase64Encoded": True,
    }


def invoke(target: str, endpoint: str, client: Any, topk: int = 3) -> dict[str, Any]:
    """Calls the endpoint directly; returns its JSON response."""
    body, content_type = direct_request(target, topk)
    try:
        reply = client.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body)
    except ClientError as err:
        raise InvokeError(f"endpoint {endpoint} refused the request: {container_message(err)}") from None
    return json.loads(reply["Body"].read())


def container_message(err: ClientError) -> str:
    """One line from what the endpoint answered, whatever its format.

    The project's handler answers `{"message": ...}`; the SageMaker inference toolkit in the
    PyTorch image answers `message\n<traceback>` (the traceback is in the endpoint's logs). The
    Lambda does the same in its own copy (`model_message`), since it ships alone.
    """
    original = err.response.get("OriginalMessage") or err.response["Error"].get("Message", "")
    try:
        message = str(json.loads(original)["message"])
    except (ValueError, TypeError, KeyError):
        message = original
    return (message.strip().splitlines() or [""])[0]


def invoke_via_lambda(target: str, endpoint: str, client: Any, topk: int = 3) -> dict[str, Any]:
    """Runs the Lambda handler here, against the endpoint `client` points at; returns the predictions."""
    # Lambda always sets a region; importing the handler builds its module-level client.
    os.environ.setdefault("AWS_DEFAULT_REGION", LOCAL_REGION)
    from deploy.lambda_function import lambda_function

    reply = lambda_function.handle(lambda_event(target, topk), client, endpoint)
    body = json.loads(reply["body"])
    if reply["statusCode"] != 200:
        raise InvokeError(f"the Lambda handler answered {reply['statusCode']}: {body['message']}")
    return body


def format_predictions(response: dict[str, Any]) -> str:
    lines = [f"model {response['model'].get('name', '?')} ({response['model'].get('arch', '?')})"]
    for rank, item in enumerate(response["predictions"], start=1):
        lines.append(f"{rank:>3}. {item['breed']:<40} {item['probability']:7.2%}  (class {item['index']})")
    return "\n".join(lines)
