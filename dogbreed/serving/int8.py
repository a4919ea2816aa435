"""The int8 network (`deploy.model.precision=int8`): static post-training quantisation for x86 CPUs.

FX graph mode with torch's x86 backend: convolutions and linears run on the quantized kernels that
ship inside the torch binary (fbgemm, with oneDNN where it is faster), with no compiler, so the
quantized model runs the same in an image without g++ as in one with it. (The PT2E flow that
replaces it upstream is only fast after `torch.compile`, which needs a C++ compiler in the image.)

The tarball holds only the quantized state_dict, loaded with `weights_only=True`: the container
rebuilds the float network from `serving.json`'s spec, prepares and converts it the same way (no
calibration: every scale and zero point comes from the state_dict), and loads the weights strictly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from dogbreed.serving.architecture import ModelSpec, build_model

ENGINE = "x86"
SCHEME = "fx-static-x86"


@contextmanager
def quiet() -> Iterator[None]:
    """torch.ao.quantization warns that it is deprecated, and observers that have seen no data warn too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def unsupported() -> str | None:
    """Why int8 cannot run on this torch build, or None."""
    if ENGINE not in torch.backends.quantized.supported_engines:
        return f"this torch build has no {ENGINE} quantized engine ({torch.backends.quantized.supported_engines})"
    return None


def fast_int8_cpu() -> str | None:
    """The CPU feature that makes int8 convolutions fast here (AMX or VNNI), or None (AVX2: slower, still right)."""
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(torch.cpu, "_is_vnni_supported", lambda: False)():
        return "VNNI"
    return None


def prepare(network: nn.Module, image_size: int) -> GraphModule:
    """The float network with observers in place of its quantizable ops (eval mode, CPU)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = ENGINE
    example = (torch.zeros(1, 3, image_size, image_size),)
    with quiet():
        return prepare_fx(network.eval().cpu().float(), get_default_qconfig_mapping(ENGINE), example)


def convert(prepared: GraphModule) -> GraphModule:
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        return convert_fx(prepared)


def spec_info(spec: ModelSpec) -> dict[str, Any]:
    """What `serving.json` records to rebuild the float network the int8 one came from."""
    return {"arch": spec.arch, "num_classes": spec.num_classes, "head": spec.head, "mlp_hidden": spec.mlp_hidden}


def load(state_dict: dict[str, Any], spec: dict[str, Any], image_size: int) -> nn.Module:
    """The int8 network of a quantized state_dict (from `torch.load(..., weights_only=True)`).

    Raises:
        RuntimeError: the state_dict does not fit the network the spec describes.
    """
    network = build_model(ModelSpec(spec["arch"], int(spec["num_classes"]), spec["head"], int(spec["mlp_hidden"])))
    quantized = convert(prepare(network, image_size))
    with quiet():
        quantized.load_state_dict(state_dict, strict=True)
    return quantized.eval()
