"""What the CPU runs natively: the automatic precision choice of training and serving."""

from __future__ import annotations

import torch


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 (AVX512-BF16 or AMX), where bf16 autocast pays.

    oneDNN also emulates bf16 on plain AVX-512, but that is slower than fp32.
    """
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
