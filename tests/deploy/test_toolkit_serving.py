"""The packaged model served by the real SageMaker PyTorch inference toolkit (the code inside the image).

`sagemaker_pytorch_serving_container.handler_service.HandlerService` is what TorchServe runs in
the PyTorch inference container (`deploy.image.backend=torchserve`): `initialize(context)` imports
`code/inference.py` and calls `model_fn`, and `handle([{"body": ...}], context)` runs
input/predict/output and turns `RequestError`s into their status. Each case runs
`tests/helpers/toolkit.py` in a `python -I -S` child whose environment is what `deploy up` gives the
container, with only `code/` of the extracted archive and site-packages (torch, the toolkit)
importable, as in the image.
"""

from __future__ import annotations

import io
import json
import os
import site
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploy.model_archive import package_run
from tests.helpers.images import jpeg_bytes
from tests.helpers.runs import train_run

TOOLKIT = Path(__file__).parents[1] / "helpers" / "toolkit.py"
FIVE_MB = 5_000_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """A tiny run's model.tar.gz, extracted as SageMaker extracts it to /opt/ml/model."""
    root = tmp_path_factory.mktemp("toolkit")
    tarball = package_run(str(train_run(root / "run", tiny_dataset)), root / "model.tar.gz")
    with tarfile.open(tarball) as tar:
        tar.extractall(root / "opt_ml_model", filter="data")
    return root / "opt_ml_model"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small JPEG, and a PNG of noise just over 5 MB (under the real-time cap, over the serverless one)."""
    root = tmp_path_factory.mktemp("images")
    small = root / "small.jpg"
    small.write_bytes(jpeg_bytes())
    pixels = np.random.default_rng(0).integers(0, 255, (1320, 1320, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=0)
    large = root / "large.png"
    large.write_bytes(buffer.getvalue())
    assert FIVE_MB < large.stat().st_size < 6 * 1024 * 1024
    return {"small": small, "large": large}


def serve(model_dir: Path, requests: list[tuple[Path, str]], env: dict[str, str]) -> tuple[list[dict], str]:
    """Starts the toolkit's handler service on the model, sends `requests`; returns the answers and the log."""
    payload = json.dumps([(str(path), content_type) for path, content_type in requests])
    argv = ["requests", str(model_dir / "code"), str(model_dir), json.dumps(site.getsitepackages()), payload]
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(TOOLKIT), *argv],
        cwd=model_dir,
        env={key: value for key, value in env.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    return answers, result.stderr


def base_env(**changes: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {**os.environ, "DOGBREED_COMPILE": None, "DOGBREED_MAX_BODY_BYTES": None}
    return {**env, **changes}


def served_model(answer: dict) -> dict:
    assert answer["status"] == 200, answer["body"][:500]
    return json.loads(answer["body"])["model"]["serving"]


def test_without_a_compiler_on_path_the_model_serves_eager_and_takes_6_mb(
    model_dir: Path, images: dict[str, Path], tmp_path: Path
) -> None:
    """Real-time settings (compile wanted, 6 MB cap) in a container without g++: eager, and a 5 MB image is fine."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    requests = [(images["large"], "image/png"), (images["small"], "image/jpeg")]
    answers, log = serve(model_dir, requests, base_env(PATH=str(empty_bin), CXX=None))
    assert [served_model(answer)["compiled"] for answer in answers] == [False, False]
    assert "serving the model eager: no C++ compiler (g++) on PATH" in log
    assert json.loads(answers[0]["body"])["predictions"]


def test_a_compiler_that_fails_falls_back_to_eager(model_dir: Path, images: dict[str, Path]) -> None:
    """Compiling is attempted and really fails (the C++ compiler exits 1): the worker serves eager instead of dying."""
    answers, log = serve(model_dir, [(images["small"], "image/jpeg")], base_env(CXX="false"))
    assert served_model(answers[0])["compiled"] is False
    assert "serving the model eager: compiling failed" in log
    assert json.loads(answers[0]["body"])["predictions"]


def test_serverless_settings_cap_the_body_at_4_mb(model_dir: Path, images: dict[str, Path]) -> None:
    """What `deploy up` sets on a serverless model: 4 MB cap and no compile."""
    env = base_env(DOGBREED_MAX_BODY_BYTES=str(4 * 1024 * 1024), DOGBREED_COMPILE="0")
    answers, log = serve(model_dir, [(images["large"], "image/png"), (images["small"], "image/jpeg")], env)
    too_large, small = answers
    assert too_large["status"] == 413
    first_line = too_large["body"].split("\n", 1)[0]  # the toolkit appends the traceback after the message
    assert "over the 4,194,304-byte limit" in first_line
    assert served_model(small)["compiled"] is False
    assert "serving the model eager" not in log  # compile was switched off, not failed


@pytest.mark.slow
def test_with_a_compiler_the_model_is_compiled(model_dir: Path, images: dict[str, Path]) -> None:
    """The default real-time container: compiled during initialize (before /ping), then answering."""
    answers, _ = serve(model_dir, [(images["small"], "image/jpeg")], base_env())
    assert served_model(answers[0])["compiled"] is True
