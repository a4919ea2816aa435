"""What only training does to the classifier: freeze policies, frozen BatchNorm, an earlier run's backbone, compile.

The network itself (`ModelSpec`, `build_model`, `spec_from_state_dict`) is
`dogbreed.serving.architecture`, which the inference handler rebuilds it from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import torch
from torch import nn

from dogbreed.errors import ConfigError, WeightsError
from dogbreed.train.runtime import Runtime

log = logging.getLogger(__name__)

FREEZE_POLICIES = {
    "none": (),  # every parameter trains
    "layer4": ("layer4", "fc"),  # the last stage and the head train
    "backbone": ("fc",),  # only the head trains
}


def load_backbone(model: nn.Module, path: Path) -> None:
    """Starts the backbone from an earlier run's weights (`model.pth`); the head stays new.

    The head is left out so the weights of a run on other classes fit; any other key that
    does not match is an error, so a wrong file never half-loads silently.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise WeightsError(f"model.init_weights={path}: not a readable state_dict ({err})") from None
    backbone = {key: value for key, value in state.items() if not key.startswith("fc.")}
    try:
        missing, unexpected = model.load_state_dict(backbone, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise WeightsError(f"model.init_weights={path} does not fit model.arch: {err}") from None
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        raise WeightsError(
            f"model.init_weights={path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    log.info("backbone initialised from %s", path)


def apply_freeze(model: nn.Module, policy: str) -> None:
    """Sets requires_grad by policy: `backbone`, `layer4` or `none`."""
    if policy not in FREEZE_POLICIES:
        raise ConfigError(f"model.freeze must be one of {sorted(FREEZE_POLICIES)}, got {policy!r}")
    trainable = FREEZE_POLICIES[policy]
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not trainable or name.split(".")[0] in trainable


def train_mode(model: nn.Module) -> None:
    """Training mode for the parts that train; frozen parts stay in eval mode.

    Without this, `model.train()` would let frozen BatchNorm layers update
    their running statistics, silently changing a "frozen" backbone.
    """
    model.train()
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            module.eval()


def compile_for_training(model: nn.Module, setting: str, runtime: Runtime) -> nn.Module:
    """Compiles the training model when asked, or on CUDA under `auto`.

    On CPU the train step gains little (20 vs 21 img/s measured for ResNet50)
    for ~50 s of compilation, so `auto` leaves it eager there. The compiled
    wrapper shares parameters with `model`, which is what gets saved.
    """
    if setting == "true" or (setting == "auto" and runtime.device.type == "cuda"):
        log.info("compiling the model for training")
        return cast(nn.Module, torch.compile(model))
    return model
