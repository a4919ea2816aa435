"""The course's inference handler, kept as the benchmark baseline (not shipped, not for use).

What the course did: rebuild the network with random init, then `torch.load` +
`load_state_dict`; full-size JPEG decode; `Resize((224, 224))` (aspect ratio
squashed) + `ToTensor()` without normalisation; fp32 eager under `no_grad`,
contiguous (not channels_last) tensors; the raw output list as JSON. Served by the
same local server as ours (`python -m deploy serve ... --handler benchmarks.course_handler`),
so the comparison is the handler alone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from dogbreed.serving.architecture import build_model, spec_from_state_dict


def model_fn(model_dir: str) -> torch.nn.Module:
    state_dict = torch.load(Path(model_dir) / "model.pth", map_location="cpu")
    model = build_model(spec_from_state_dict(state_dict))  # random init first, as net() did
    model.load_state_dict(state_dict)
    return model.eval()


def input_fn(request_body: bytes, content_type: str) -> Image.Image:
    if content_type != "image/jpeg":
        raise ValueError(f"Requested unsupported ContentType in content_type: {content_type}")
    return Image.open(io.BytesIO(request_body))


def predict_fn(input_object: Image.Image, model: torch.nn.Module) -> torch.Tensor:
    transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])
    with torch.no_grad():
        return model(transform(input_object.convert("RGB")).unsqueeze(0))


def output_fn(prediction: torch.Tensor, accept: str) -> str:
    result: Any = prediction.tolist()
    return json.dumps(result)
