"""The SageMaker inference contract: model_fn / input_fn / predict_fn / output_fn.

The same functions run in the PyTorch inference container (via `code/inference.py`)
and behind `python -m deploy serve`. Preprocessing is `dogbreed.serving.preprocess`,
the module evaluation uses. Environment switches (the container passes env vars
through): DOGBREED_COMPILE=0 skips torch.compile, DOGBREED_PRECISION=fp32|bf16
overrides the automatic choice, DOGBREED_MAX_BODY_BYTES lowers the body cap (serverless
endpoints take 4 MB, real-time ones 6 MB), DOGBREED_MAX_BATCH=N (the local server's
micro-batcher; the container answers one request per call) warms the model up for batches
of up to N images.

predict_fn is three steps that a batcher can call apart: `prepare` (decode + preset, any
thread), `forward_batch` (the model on several prepared images at once) and `answer`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from dogbreed.serving import int8
from dogbreed.serving.architecture import load_weights
from dogbreed.serving.errors import ConfigError, RequestError, WeightsError
from dogbreed.serving.fetch import FetchPolicy, fetch
from dogbreed.serving.hardware import compile_blocker, cpu_has_fast_bf16
from dogbreed.serving.preprocess import EvalPreset, Normalize, decode_image

log = logging.getLogger(__name__)

SERVING_INFO_NAME = "serving.json"
INT8 = "int8"  # serving.json's precision of a quantized model (dogbreed.serving.int8)
REALTIME_MAX_BODY_BYTES = 6 * 1024 * 1024  # a real-time endpoint's payload cap
SERVERLESS_MAX_BODY_BYTES = 4 * 1024 * 1024  # a serverless endpoint's payload cap
MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes; a decompression bomb does not
# One decode may hold this much (preprocess.decoded_bytes: mode x size, from the header): a 50 MP
# RGB photo (200 MB) fits, a 7000x7000 RGBA PNG (588 MB) does not.
MAX_DECODED_BYTES = 512 * 1024 * 1024
# Decodes in flight together hold at most this much; the rest wait their turn.
DECODE_BUDGET_BYTES = 512 * 1024 * 1024
MAX_TOPK = 10_000
MAX_URL_CHARS = 8192
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
DEFAULT_TOPK = 5


def body_limit(value: str | None) -> int:
    """The body cap from `DOGBREED_MAX_BODY_BYTES` (what `deploy up` sets for the endpoint type).

    Raises:
        ValueError: not a byte count in 1..REALTIME_MAX_BODY_BYTES, so a bad setting stops the
            container at start rather than refusing every request.
    """
    if value is None:
        return REALTIME_MAX_BODY_BYTES
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= REALTIME_MAX_BODY_BYTES:
        raise ConfigError(f"DOGBREED_MAX_BODY_BYTES={value!r}: a byte count from 1 to {REALTIME_MAX_BODY_BYTES}")
    return int(value)


MAX_BODY_BYTES = body_limit(os.environ.get("DOGBREED_MAX_BODY_BYTES"))


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
    # The batch sizes the model was warmed up for; a compiled model runs a batch padded to the
    # next of them, as any other size would recompile while a request waits.
    batch_sizes: tuple[int, ...] = (1,)
    compiled: bool = False

    def padded_size(self, count: int) -> int:
        if not self.compiled:
            return count
        return min((size for size in self.batch_sizes if size >= count), default=count)


@dataclass
class Request:
    """A checked request: the encoded image and how to answer.

    Decoding waits for predict_fn, which has the model's preset: the toolkit
    calls input_fn without the model.
    """

    image: bytes
    topk: int = DEFAULT_TOPK
    logits: bool = False


class ByteBudget:
    """A semaphore counted in bytes: `hold(n)` waits until n more bytes fit under the budget.

    A request larger than the whole budget still runs, alone. A large holder trims the C heap
    as it leaves, so memory goes back to the system as decodes finish, not after the burst.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = min(size, self.budget)
        with self._changed:
            self._changed.wait_for(lambda: self.held + size <= self.budget)
            self.held += size
        try:
            yield
        finally:
            if size > 16 * 1024 * 1024:
                # glibc keeps freed image blocks in each thread's arena: without this, 16 big
                # decodes in a row grow the heap by 16 images, not by the two allowed at once.
                trim_heap()
            with self._changed:
                self.held -= size
                self._changed.notify_all()


def _load_malloc_trim() -> Any:
    """glibc's malloc_trim, or None (musl, macOS, Windows): freed large blocks otherwise stay in the heap."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    return None


_MALLOC_TRIM = _load_malloc_trim()


def trim_heap() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


DECODES = ByteBudget(DECODE_BUDGET_BYTES)
# PIL allocates pixels in blocks of 16 MB by default: under glibc's largest mmap threshold (32 MB),
# so freed blocks stay in per-thread heaps and 16 large decodes in a row kept 16 images' worth.
# 64 MB blocks are mmapped and go back to the system on free. (Whole lines per block; small
# images still get one small block.)
with contextlib.suppress(AttributeError):
    Image.core.set_block_size(64 * 1024 * 1024)


def choose_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware runs it natively (the accuracy cost is nil for a classifier), else fp32."""
    requested = os.environ.get("DOGBREED_PRECISION", "auto")
    if requested in ("fp32", "bf16"):
        return {"fp32": torch.float32, "bf16": torch.bfloat16}[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def to_batch(images: list[torch.Tensor], device: torch.device, size: int | None = None) -> torch.Tensor:
    """uint8 CxHxW images -> one NxCxHxW channels_last uint8 batch (N = `size`, zero rows after the images).

    Each image is copied once, straight into its row. The strides are the same every time:
    torch.compile guards on them, and a size-1 batch dimension leaves them ambiguous (a
    PIL-decoded image gives stride 3 where a fresh tensor gives C*H*W).
    """
    size = size or len(images)
    batch = torch.empty((size, *images[0].shape), device=device, dtype=torch.uint8, memory_format=torch.channels_last)
    for row, image in zip(batch, images, strict=False):
        row.copy_(image)
    if size > len(images):
        batch[len(images) :].zero_()
    return batch


class ServedModel(nn.Module):
    """The network behind its input normalisation: uint8 NCHW batches in, logits out.

    Normalising and casting to the network's precision are the graph's first ops, so compiled
    they fuse into one pass over the batch, not one float op per image before it; and a batch
    moves as uint8, a quarter of float32's bytes (to a GPU too).
    """

    def __init__(self, network: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.normalize = Normalize()  # float32 constants: added after the network's cast to `dtype`
        self.network = network
        self.dtype = dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(images).to(self.dtype))


def warm_up(model: Any, examples: list[torch.Tensor]) -> None:
    """Two forward passes per batch size: the first compiles (when compiled); the second proves no
    recompile is pending."""
    with torch.inference_mode():
        for example in examples:
            for _ in range(2):
                model(example)


def warm_sizes(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to `max_batch` (and `max_batch` itself): each a compiled graph, a batch pads up
    to the next, so a batch of 5 costs a batch of 8 rather than a compile of its own."""
    sizes = [1 << shift for shift in range(max_batch.bit_length()) if 1 << shift < max_batch]
    return (*sizes, max_batch)


def batch_limit(value: str | None) -> int:
    """DOGBREED_MAX_BATCH: 1 (one request per forward) unless the local server asks for more."""
    if value is None:
        return 1
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 64:
        raise ConfigError(f"DOGBREED_MAX_BATCH={value!r}: a batch size from 1 to 64")
    return int(value)


def compiled_or_eager(model: torch.nn.Module, examples: list[torch.Tensor], wanted: bool) -> tuple[Any, str | None]:
    """The compiled and warmed-up model, or the eager one and why it is not compiled.

    Any failure while compiling (no working compiler, an inductor error on this torch) falls
    back to eager: a slower endpoint beats one whose workers die at every start.
    """
    reason = "DOGBREED_COMPILE=0" if not wanted else compile_blocker(examples[0].device)
    if reason is None:
        import torch._inductor.config as inductor_config  # not loaded by `import torch` on older versions

        # Freezing folds the weights into the graph as constants (conv+bn fusion, prepacked
        # oneDNN weights); it is what makes CPU inference fast, and needs inference mode.
        inductor_config.freezing = True
        # Static shapes: one graph per warmed batch size. A second size would otherwise turn the
        # batch dimension dynamic, and the symbolic graph is slower at batch 1.
        compiled = torch.compile(model, dynamic=False)
        try:
            warm_up(compiled, examples)
            return compiled, None
        except Exception as err:  # inductor and the C++ build raise many unrelated types
            torch._dynamo.reset()  # drop the half-built graphs; the eager module is untouched
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            reason = f"compiling failed ({type(err).__name__}: {first_line})"
    warm_up(model, examples)
    return model, reason


def load_float(model_dir: Path, labels: list[str]) -> tuple[nn.Module, torch.device, torch.dtype]:
    """The float network on the GPU when there is one, in bf16 where the hardware runs it natively."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = choose_dtype(device)
    network = load_weights(model_dir / "model.pth", labels)
    return network.to(device=device, dtype=dtype).to(memory_format=torch.channels_last), device, dtype


def load_int8(model_dir: Path, info: dict[str, Any]) -> tuple[nn.Module, torch.device, torch.dtype]:
    """The int8 network of an int8 tarball: on the CPU, with float32 around the quantized ops."""
    reason = int8.unsupported()
    if reason is not None:
        raise WeightsError(f"{model_dir} holds an int8 model, but {reason}")
    with int8.quiet():  # quantized tensors' deprecation warnings, once per load
        state_dict = torch.load(model_dir / "model.pth", map_location="cpu", weights_only=True)
    network = int8.load(state_dict, info["quantization"]["spec"], int(info["image_size"]))
    return network, torch.device("cpu"), torch.float32


def load_predictor(model_dir: str | Path, compile_model: bool | None = None, max_batch: int | None = None) -> Predictor:
    """Loads model.pth + labels.json + serving.json from an extracted model.tar.gz and warms it up.

    Compiles unless `compile_model` is False (None: unless DOGBREED_COMPILE=0), and serves eager
    when compiling cannot work here or fails. Warms up batches of up to `max_batch` images
    (None: DOGBREED_MAX_BATCH, default 1).
    """
    started = time.perf_counter()
    model_dir = Path(model_dir)
    info = json.loads((model_dir / SERVING_INFO_NAME).read_text())
    labels_map = json.loads((model_dir / "labels.json").read_text())
    labels = [labels_map[str(i)] for i in range(len(labels_map))]
    int8_model = info.get("precision") == INT8
    network, device, dtype = load_int8(model_dir, info) if int8_model else load_float(model_dir, labels)
    model = ServedModel(network, dtype).to(device).eval()
    if compile_model is None:
        compile_model = os.environ.get("DOGBREED_COMPILE", "1") != "0"
    # The quantized kernels run as they are; inductor would trace them for nothing.
    compile_model = compile_model and not int8_model
    if max_batch is None:
        max_batch = batch_limit(os.environ.get("DOGBREED_MAX_BATCH"))
    sizes = warm_sizes(max_batch)
    # Made exactly as forward_batch makes a batch: an input that differs in any property the
    # compiled graph guards on (strides, an inference tensor) would recompile on request 1.
    image = torch.zeros(3, info["image_size"], info["image_size"], dtype=torch.uint8)
    examples = [to_batch([image], device, size) for size in sizes]
    served_model, eager_because = compiled_or_eager(model, examples, compile_model)
    if eager_because is not None and compile_model:
        log.warning("serving the model eager: %s", eager_because)
    served = {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "compiled": eager_because is None}
    if int8_model:
        served |= {"precision": INT8, "fast_int8_cpu": int8.fast_int8_cpu()}
    predictor = Predictor(
        served_model,
        labels,
        EvalPreset(info["image_size"]),
        device,
        dtype,
        {**info, "serving": served},
        batch_sizes=sizes,
        compiled=eager_because is None,
    )
    log.info("model loaded and warmed up in %.1f s: %s", time.perf_counter() - started, served)
    return predictor


def model_fn(model_dir: str) -> Predictor:
    return load_predictor(model_dir)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


_DECIMAL = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() also takes '²'


def check_topk(topk: object, from_query: bool = False) -> int:
    """A JSON integer in 1..MAX_TOPK (from a query string: ASCII digits only)."""
    if from_query and isinstance(topk, str) and _DECIMAL.fullmatch(topk):
        topk = int(topk)
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= MAX_TOPK:
        shown = repr(topk)[:40]
        raise RequestError(400, f"topk must be a positive integer up to {MAX_TOPK:,}, got {shown}")
    return topk


def check_logits(logits: object, from_query: bool = False) -> bool:
    """A JSON boolean (from a query: true/false/1/0); anything else is refused, not guessed."""
    if from_query and isinstance(logits, str) and logits.lower() in ("true", "false", "1", "0"):
        return logits.lower() in ("true", "1")
    if not isinstance(logits, bool):
        raise RequestError(400, f"logits must be true or false, got {repr(logits)[:40]}")
    return logits


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, and ints over Python's digit limit
        raise RequestError(400, f"the body is not valid JSON: {str(err)[:200]}") from None
    except RecursionError:
        raise RequestError(400, "the body is not valid JSON: nested too deeply") from None
    if not isinstance(payload, dict) or not ({"url", "image_b64"} & payload.keys()):
        raise RequestError(400, 'a JSON request needs {"url": "https://..."} or {"image_b64": "..."}')
    return payload


def _json_image(body: bytes) -> tuple[bytes, int, bool]:
    payload = _parse_json(body)
    topk = check_topk(payload.get("topk", DEFAULT_TOPK))
    logits = check_logits(payload.get("logits", False))
    if "image_b64" in payload:
        if not isinstance(payload["image_b64"], str):
            raise RequestError(400, "image_b64 must be a string")
        try:
            return base64.b64decode(payload["image_b64"], validate=True), topk, logits
        except (binascii.Error, TypeError, ValueError) as err:
            raise RequestError(400, f"image_b64 is not valid base64: {err}") from None
    url = payload["url"]
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise RequestError(400, f"url must be a string of 1 to {MAX_URL_CHARS:,} characters")
    return fetch(url, FetchPolicy.from_env()), topk, logits


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
        image = decode_image(
            image_bytes,
            min_size=preset.resize_size,
            max_pixels=MAX_PIXELS,
            max_bytes=MAX_DECODED_BYTES,
            reserve=DECODES.hold,
        )
    except ValueError as err:  # our own pixel and byte limits, checked from the header
        raise RequestError(400, str(err)) from None
    except UnidentifiedImageError:
        raise RequestError(400, "the body is not an image in a format the endpoint reads (JPEG, PNG, ...)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise RequestError(400, f"the image cannot be decoded: {err}") from None
    return image


def prepare(input_data: Request, model: Predictor) -> torch.Tensor:
    """Decode, resize and crop: a CxHxW uint8 tensor. PIL work only, which releases the GIL, so
    requests prepare concurrently without torch thread teams competing with the model's."""
    return model.preset.crop(decode(input_data.image, model.preset))


def forward_batch(images: list[torch.Tensor], model: Predictor) -> torch.Tensor:
    """The model on prepared images as one batch (padded to a warmed size): float logits, one row each."""
    with model.lock:
        # Made outside inference mode, as in warm-up: an inference tensor would recompile.
        batch = to_batch(images, model.device, model.padded_size(len(images)))
        with torch.inference_mode():
            return model.model(batch)[: len(images)].float().cpu()


def answer(input_data: Request, logits: torch.Tensor, model: Predictor) -> dict[str, Any]:
    """One image's logits -> the top-k (and the logits when asked)."""
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


def predict_fn(input_data: Request, model: Predictor) -> dict[str, Any]:
    """Decodes, runs the model in inference mode, and returns the top-k (and logits when asked)."""
    return answer(input_data, forward_batch([prepare(input_data, model)], model)[0], model)


def classify(images: list[Image.Image], model: Predictor, topk: int) -> list[list[tuple[int, float]]]:
    """A batch of decoded images -> each one's top-k (class index, probability), as predict_fn ranks one.

    For batch prediction (`python -m deploy predict`): the preset and the batch the endpoint uses.
    """
    logits = forward_batch([model.preset.crop(image) for image in images], model)
    values, indices = logits.softmax(dim=1).topk(min(topk, len(model.labels)), dim=1)
    return [list(zip(row.tolist(), probs.tolist(), strict=True)) for row, probs in zip(indices, values, strict=True)]


def accepts_json(accept: str | None) -> bool:
    """Whether an Accept header admits application/json: some range with q > 0 matches it.

    A browser's `text/html,application/json;q=0.9,*/*;q=0.8` does; `image/png` or
    `application/json;q=0` does not. An empty header accepts anything.
    """
    if not (accept or "").strip():
        return True
    for item in (accept or "").split(","):
        media_range, *params = (part.strip() for part in item.split(";"))
        if media_range.lower() not in ("*/*", "application/*", JSON_TYPE):
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def output_fn(prediction: dict[str, Any], accept: str | None) -> str:
    """JSON is the one response format."""
    if not accepts_json(accept):
        raise RequestError(406, f"responses are {JSON_TYPE} only, not {str(accept)[:100]!r}")
    return json.dumps(prediction)
