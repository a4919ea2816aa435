"""Shared by the benchmarks: a dogImages-sized generated dataset and measured subprocess runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dogbreed.allocator import TUNABLES
from dogbreed.data.synthetic import SyntheticSpec, generate

REPO = Path(__file__).resolve().parents[1]
# 133 breeds, ~6,650 / 800 / 800 images of 500x375 like dogImages, 1 in 25 at 2000x1500.
DOGIMAGES_SIZED = SyntheticSpec(
    classes=133, train_per_class=50, valid_per_class=6, test_per_class=6, width=500, height=375, large_every=25
)
QUICK = SyntheticSpec(classes=10, train_per_class=12, valid_per_class=4, test_per_class=4, width=500, height=375,
                      large_every=25)  # fmt: skip


def dataset(root: Path, quick: bool) -> Path:
    spec = QUICK if quick else DOGIMAGES_SIZED
    started = time.perf_counter()
    generate(root, spec)
    print(f"# data: {root} ({spec.classes} classes, {spec.train_per_class}/class train; "
          f"ready in {time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    return root


def environment(tuned_malloc: bool | None) -> dict[str, str]:
    """The benchmark's environment with glibc malloc tuned (ours), at its defaults (baseline), or
    (None) left to the program, as a user's shell leaves it: `train.py` tunes it itself, `deploy
    serve` does not."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = str(REPO)
    if tuned_malloc:
        env["GLIBC_TUNABLES"] = TUNABLES
    elif tuned_malloc is not None:
        env["DOGBREED_MALLOC_TUNING"] = "0"  # train.py would otherwise tune it itself
    return env


@dataclass
class Measured:
    stdout: str
    seconds: float
    peak_rss_mb: float

    def last_json(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def run(args: list[str], tuned_malloc: bool, extra_env: dict[str, str] | None = None) -> Measured:
    """Runs a Python command to completion; wall time and the peak RSS of its largest process."""
    started = time.perf_counter()
    env = environment(tuned_malloc) | (extra_env or {})
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    stdout = process.stdout.read()
    # wait4 gives this child's own resource usage: ru_maxrss is its peak RSS in kB (Linux).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed with exit code {process.returncode}")
    return Measured(stdout, seconds, usage.ru_maxrss / 1024)


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline else "n/a"


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def amx_supported() -> bool:
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def machine_line(precision: str) -> str:
    """The CPU, its cores and whether AMX does the matrix work: every benchmark prints it."""
    amx = "used" if amx_supported() and precision == "bf16" else ("not used" if amx_supported() else "absent")
    return f"# {cpu_model()}, {os.cpu_count()} cores, AMX {amx} ({precision}), {torch.get_num_threads()} torch threads"


def goal(name: str, value: float, target: float, direction: str, template: str = "{:.2f}x") -> str:
    """One line `make bench` collects into its summary: the measured value against the issue's goal."""
    met = value >= target if direction == ">=" else value <= target
    shown, wanted = template.format(value), template.format(target)
    return f"GOAL {name}: {shown} (goal {direction} {wanted}: {'met' if met else 'missed'})"
