"""The classifier: a torchvision ResNet with a new head, and its rebuilding from weights alone.

State-dict keys are torchvision's own (`conv1.weight`, ..., `fc.weight` or
`fc.0.weight` for the MLP head), so `model.pth` loads into a plain torchvision
model with the same head; `spec_from_state_dict` recovers arch and head from
the keys alone, which is how serving rebuilds the model without the training config.
Training builds its network here too (its freeze policy is `dogbreed.model`).
"""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from dogbreed.serving.errors import ConfigError, WeightsError

# Blocks per stage, and whether the stage uses bottleneck blocks (conv3 present).
RESNET_LAYOUTS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
    "resnet152": ((3, 8, 36, 3), True),
}
HEADS = ("linear", "mlp")
# What the ResNet holds and torch in either inference image (2.10 with Ray Serve, 2.6 with TorchServe)
# loads and runs: float weights, int64 BatchNorm counters. A newer torch can save dtypes they lack.
SERVABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64)
# A state_dict taken from the wrapper rather than the model: DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild the network for a state_dict."""

    arch: str
    num_classes: int
    head: str = "linear"
    mlp_hidden: int = 128


def make_head(in_features: int, spec: ModelSpec) -> nn.Module:
    if spec.head == "linear":
        return nn.Linear(in_features, spec.num_classes)
    if spec.head == "mlp":  # the course's 2048 -> 128 -> ReLU -> classes
        return nn.Sequential(
            nn.Linear(in_features, spec.mlp_hidden), nn.ReLU(inplace=True), nn.Linear(spec.mlp_hidden, spec.num_classes)
        )
    raise ConfigError(f"model.head must be one of {HEADS}, got {spec.head!r}")


def build_model(spec: ModelSpec, pretrained: bool = False) -> nn.Module:
    """A ResNet with a fresh head; ImageNet weights for the backbone when `pretrained`."""
    if spec.arch not in RESNET_LAYOUTS:
        raise ConfigError(f"model.arch must be one of {sorted(RESNET_LAYOUTS)}, got {spec.arch!r}")
    model = torchvision.models.get_model(spec.arch, weights=None)
    if pretrained:
        model.load_state_dict(imagenet_state_dict(spec.arch))
    model.fc = make_head(model.fc.in_features, spec)
    return model


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Downloads (or reads from the torch hub cache) the newest ImageNet weights for `arch`."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise WeightsError(
            f"could not load the ImageNet weights for {arch} ({weights}): {err}.\n"
            f"Download {weights.url} on a machine with internet access and put it at {cached} "
            f"(or set TORCH_HOME), or train from scratch with model.pretrained=false."
        ) from None


def spec_from_state_dict(state_dict: dict[str, torch.Tensor]) -> ModelSpec:
    """Recovers arch and head from a state_dict produced by `build_model`."""
    blocks = tuple(
        len({key.split(".")[1] for key in state_dict if key.startswith(f"layer{stage}.")}) for stage in range(1, 5)
    )
    bottleneck = "layer1.0.conv3.weight" in state_dict
    arch = next((name for name, layout in RESNET_LAYOUTS.items() if layout == (blocks, bottleneck)), None)
    if arch is None:
        raise WeightsError(f"the weights are not a supported ResNet (blocks per stage {blocks})")
    if "fc.weight" in state_dict:
        return ModelSpec(arch, state_dict["fc.weight"].shape[0], "linear")
    if "fc.0.weight" in state_dict and "fc.2.weight" in state_dict:
        return ModelSpec(arch, state_dict["fc.2.weight"].shape[0], "mlp", state_dict["fc.0.weight"].shape[0])
    raise WeightsError("the weights have no recognised classifier head (fc.weight or fc.0/fc.2)")


def check_servable(state_dict: Any, weights: Path) -> None:
    """Refuses what would load here but not in the container, with what to do instead.

    Raises:
        WeightsError: not a dict of tensors, a dtype outside SERVABLE_DTYPES, or keys of a wrapper.
    """
    if not isinstance(state_dict, dict) or not state_dict:
        raise WeightsError(f"{weights} holds a {type(state_dict).__name__}, not a state_dict; save model.state_dict()")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{weights}: {key} is a {type(value).__name__}, not a tensor; save model.state_dict()")
        if value.dtype not in SERVABLE_DTYPES:
            served = ", ".join(str(dtype).removeprefix("torch.") for dtype in SERVABLE_DTYPES)
            raise WeightsError(
                f"{weights}: {key} is {str(value.dtype).removeprefix('torch.')}; the inference containers "
                f"(torch 2.6 and 2.10) serve {served} tensors. Convert the weights, e.g. to float32"
            )
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            raise WeightsError(
                f"{weights}: every key starts with {prefix!r}, the state_dict of a DDP or torch.compile "
                "wrapper; save the wrapped model's state_dict() (model.module / model._orig_mod)"
            )


def load_weights(weights: Path, labels: list[str]) -> nn.Module:
    """Builds the model the weights describe on the meta device and assigns the (memory-mapped) weights.

    Loads as the container does (weights only, memory-mapped, strict), so `deploy package`
    refuses what the endpoint would refuse at start.

    Raises:
        WeightsError: the file is unreadable, not a supported ResNet, holds what the container
            cannot serve, or has a different number of classes than `labels`.
    """
    try:
        state_dict = torch.load(weights, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise WeightsError(f"{weights} is not a readable state_dict ({err})") from None
    check_servable(state_dict, weights)
    spec = spec_from_state_dict(state_dict)
    if spec.num_classes != len(labels):
        raise WeightsError(
            f"{weights} has a {spec.num_classes}-class head but labels.json names {len(labels)} breeds; "
            "they come from different runs"
        )
    with torch.device("meta"):  # no random init of weights that are overwritten anyway
        model = build_model(spec)
    try:
        model.load_state_dict(state_dict, assign=True)
    except RuntimeError as err:
        problem = " ".join(str(err).split())  # torch's message spans lines; a CLI error is one
        raise WeightsError(f"{weights} does not fit a {spec.arch} with a {spec.head} head: {problem}") from None
    return model.eval()
