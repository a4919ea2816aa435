"""benchmarks/gpu.sh, as far as a machine without CUDA can take it: it refuses at once, and what it runs composes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.config import REPO, compose_config

SCRIPT = REPO / "benchmarks" / "gpu.sh"


def test_without_cuda_it_says_so_and_does_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results.txt"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(SCRIPT), str(results)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: benchmarks/gpu.sh needs a CUDA GPU and {sys.executable} sees none; run it on a lent GPU machine"
    ]
    assert not results.exists()


def test_the_fine_tune_it_runs_composes_with_decoding_on_the_device() -> None:
    command = re.search(r'"\$python" train\.py (.*?) >"\$work/finetune\.log"', SCRIPT.read_text(), re.S)
    assert command is not None
    overrides = [
        item.replace('"$work', "/tmp/work").strip('"') for item in command.group(1).replace("\\\n", " ").split()
    ]
    cfg = compose_config(overrides)
    assert cfg.data.decode_on_device is True and cfg.model.arch == "resnet50" and cfg.model.freeze == "none"
    assert cfg.data.root == "/tmp/work/data" and cfg.data.expected_classes == 133
