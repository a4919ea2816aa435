"""Device, precision and memory-format choices, made once from the config."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from dogbreed.errors import ConfigError
from dogbreed.serving.hardware import cpu_has_fast_bf16

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is available (use trainer.device=auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"trainer.device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware runs it natively, else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if name not in PRECISIONS:
        raise ConfigError(f"trainer.precision must be auto, fp32, bf16 or fp16, got {name!r}")
    return name


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed."""

    device: torch.device
    precision: str
    channels_last: bool = True

    @classmethod
    def from_names(cls, device: str, precision: str, channels_last: bool = True) -> Runtime:
        resolved = resolve_device(device)
        return cls(resolved, resolve_precision(precision, resolved), channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling is needed for fp16 only; bf16 has fp32's exponent range."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def to_device(self, inputs: torch.Tensor) -> torch.Tensor:
        """Image batches (4-D) get the memory format; feature batches (2-D) just move."""
        if inputs.dim() == 4:
            return inputs.to(self.device, memory_format=self.memory_format, non_blocking=True)
        return inputs.to(self.device, non_blocking=True)
