"""What the machine can do: native bf16 on the CPU, and whether compiling the model can pay off here."""

from __future__ import annotations

import importlib.util
import os
import shutil

import torch


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 (AVX512-BF16 or AMX), where bf16 autocast pays.

    oneDNN also emulates bf16 on plain AVX-512, but that is slower than fp32.
    """
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def compile_blocker(device: torch.device) -> str | None:
    """Why torch.compile cannot work on `device` here, or None when it is worth trying.

    Inductor writes C++ for the CPU (built with `$CXX`, else g++) and Triton kernels for
    CUDA. Without them the attempt spends seconds tracing the model before it fails, at
    every worker start.
    """
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "triton (inductor's GPU code generator) is not installed"
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) on PATH for inductor's CPU code"
    return None
