"""The SageMaker inference contract: model_fn / input_fn / predict_fn / output_fn.

The same functions run in the PyTorch inference container (via `code/inference.py`)
and behind `python -m deploy serve`. Preprocessing is `dogbreed.serving.preprocess`,
the module evaluation uses. Environment switches (the container passes env vars
through): DOGBREED_COMPILE=0 skips torch.compile, DOGBREED_PRECISION=fp32|bf16
overrides the automatic choice.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image, UnidentifiedImageError

from dogbreed.serving.architecture import load_weights
from dogbreed.serving.errors import RequestError
from dogbreed.serving.fetch import FetchPolicy, fetch
from dogbreed.serving.hardware import cpu_has_fast_bf16
from dogbreed.serving.preprocess import EvalPreset, decode_image

log = logging.getLogger(__name__)

SERVING_INFO_NAME = "serving.json"
MAX_BODY_BYTES = 6 * 1024 * 1024  # the real-time endpoint's payload cap
MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes; a decompression bomb does not
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
DEFAULT_TOPK = 5


@dataclass
class Predictor:
    """A loaded model with what it needs to turn bytes into breeds."""

    model: Any  # an nn.Module or its torch.compile wrapper
    labels: list[str]
    preset: EvalPreset
    device: torch.device
    dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)
    # One request's tensor work at a time: each torch op already uses every core (intra-op
    # threads), and with 8 requests in flight their OpenMP teams fought over 2 cores; the PIL
    # decode, HTTP and JSON work of other requests still overlap.
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Request:
    """A checked request: the encoded image and how to answer.

    Decoding waits for predict_fn, which has the model's preset: the toolkit
    calls input_fn without the model.
    """

    image: bytes
    topk: int = DEFAULT_TOPK
    logits: bool = False


def choose_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware runs it natively (the accuracy cost is nil for a classifier), else fp32."""
    requested = os.environ.get("DOGBREED_PRECISION", "auto")
    if requested in ("fp32", "bf16"):
        return {"fp32": torch.float32, "bf16": torch.bfloat16}[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def to_batch(image: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One CxHxW image -> a 1xCxHxW channels_last batch with the same strides every time.

    torch.compile guards on exact strides, and a size-1 batch dimension leaves them
    ambiguous: a PIL-decoded image gives stride 3 where a fresh tensor gives C*H*W.
    """
    batch = torch.empty((1, *image.shape), device=device, dtype=dtype, memory_format=torch.channels_last)
    return batch.copy_(image.unsqueeze(0))


def load_predictor(model_dir: str | Path, compile_model: bool | None = None) -> Predictor:
    """Loads model.pth + labels.json + serving.json from an extracted model.tar.gz and warms it up."""
    started = time.perf_counter()
    model_dir = Path(model_dir)
    info = json.loads((model_dir / SERVING_INFO_NAME).read_text())
    labels_map = json.loads((model_dir / "labels.json").read_text())
    labels = [labels_map[str(i)] for i in range(len(labels_map))]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = choose_dtype(device)
    model = load_weights(model_dir / "model.pth", labels)
    model = model.to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
    if compile_model is None:
        compile_model = os.environ.get("DOGBREED_COMPILE", "1") != "0"
    # Made exactly as predict_fn makes a batch: an input that differs in any property the
    # compiled graph guards on (strides, an inference tensor) would recompile on request 1.
    example = to_batch(torch.zeros(3, info["image_size"], info["image_size"]), device, dtype)
    if compile_model:
        import torch._inductor.config as inductor_config  # not loaded by `import torch` on older versions

        # Freezing folds the weights into the graph as constants (conv+bn fusion, prepacked
        # oneDNN weights); it is what makes CPU inference fast, and needs inference mode.
        inductor_config.freezing = True
        # A compiled Module is still a Module (OptimizedModule); torch's stubs only say Callable.
        model = cast(torch.nn.Module, torch.compile(model))
    with torch.inference_mode():
        for _ in range(2):  # the first call compiles; the second proves no recompile is pending
            model(example)
    served = {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "compiled": compile_model}
    predictor = Predictor(model, labels, EvalPreset(info["image_size"]), device, dtype, {**info, "serving": served})
    log.info("model loaded and warmed up in %.1f s: %s", time.perf_counter() - started, served)
    return predictor


def model_fn(model_dir: str) -> Predictor:
    return load_predictor(model_dir)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _options(payload: dict[str, Any]) -> tuple[int, bool]:
    topk = payload.get("topk", DEFAULT_TOPK)
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise RequestError(400, f"topk must be a positive integer, got {topk!r}")
    return topk, bool(payload.get("logits", False))


def _json_image(body: bytes) -> tuple[bytes, int, bool]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(payload, dict) or not ({"url", "image_b64"} & payload.keys()):
        raise RequestError(400, 'a JSON request needs {"url": "https://..."} or {"image_b64": "..."}')
    topk, logits = _options(payload)
    if "image_b64" in payload:
        try:
            return base64.b64decode(payload["image_b64"], validate=True), topk, logits
        except (binascii.Error, TypeError, ValueError) as err:
            raise RequestError(400, f"image_b64 is not valid base64: {err}") from None
    if not isinstance(payload["url"], str):
        raise RequestError(400, "url must be a string")
    return fetch(payload["url"], FetchPolicy.from_env()), topk, logits


def input_fn(request_body: bytes | bytearray | str, request_content_type: str | None) -> Request:
    """Checks type and size, and resolves a JSON request (url or base64) to image bytes."""
    body = request_body.encode() if isinstance(request_body, str) else bytes(request_body)
    media_type = _media_type(request_content_type)
    if media_type not in (*IMAGE_TYPES, JSON_TYPE):
        raise RequestError(415, f"unsupported content type {media_type!r}; send one of {[*IMAGE_TYPES, JSON_TYPE]}")
    if not body:
        raise RequestError(400, "the request body is empty")
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"the body is {len(body):,} bytes, over the {MAX_BODY_BYTES:,}-byte limit")
    topk, logits = DEFAULT_TOPK, False
    if media_type == JSON_TYPE:
        body, topk, logits = _json_image(body)
    return Request(body, topk, logits)


def decode(image_bytes: bytes, preset: EvalPreset) -> Image.Image:
    """Bytes to an RGB image; JPEGs decode at reduced size when much larger than the preset needs."""
    try:
        image = decode_image(image_bytes, min_size=preset.resize_size, max_pixels=MAX_PIXELS)
    except ValueError as err:  # our own pixel limit, checked from the header
        raise RequestError(400, str(err)) from None
    except UnidentifiedImageError:
        raise RequestError(400, "the body is not an image in a format the endpoint reads (JPEG, PNG, ...)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise RequestError(400, f"the image cannot be decoded: {err}") from None
    return image


def predict_fn(input_data: Request, model: Predictor) -> dict[str, Any]:
    """Decodes, runs the model in inference mode, and returns the top-k (and logits when asked)."""
    image = decode(input_data.image, model.preset)  # PIL: one thread per request, runs concurrently
    with model.lock:
        batch = to_batch(model.preset(image), model.device, model.dtype)  # outside inference mode, as warm-up
        with torch.inference_mode():
            logits = model.model(batch).float()[0].cpu()
    probabilities = logits.softmax(dim=0)
    values, indices = probabilities.topk(min(input_data.topk, len(model.labels)))
    result: dict[str, Any] = {
        "predictions": [
            {"breed": model.labels[i], "index": i, "probability": round(p, 6)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ],
        "model": model.info,
    }
    if input_data.logits:
        result["logits"] = [round(value, 6) for value in logits.tolist()]
    return result


def output_fn(prediction: dict[str, Any], accept: str | None) -> str:
    """JSON is the one response format."""
    if _media_type(accept) not in ("", "*/*", JSON_TYPE):
        raise RequestError(406, f"responses are {JSON_TYPE} only, not {accept!r}")
    return json.dumps(prediction)
