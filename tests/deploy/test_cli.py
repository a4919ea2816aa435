"""python -m deploy serve / invoke / demo as a user runs them, and the compiled path (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from deploy.cli import main, wait_for_ping
from deploy.model_archive import package_run
from dogbreed.serving import handler
from tests.helpers.config import REPO
from tests.helpers.images import image_bytes
from tests.helpers.net import free_port
from tests.helpers.runs import train_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    return train_run(tmp_path_factory.mktemp("serving-cli") / "run", tiny_dataset)


def test_serve_answers_invoke_and_stops_cleanly_on_sigterm(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tarball = package_run(str(run_dir), tmp_path / "model.tar.gz")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "deploy", "serve", str(tarball), "--port", str(port), "--no-compile"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ping(url, timeout=90)
        image = tmp_path / "dog.jpg"
        image.write_bytes(image_bytes())
        labels = set(json.loads((run_dir / "labels.json").read_text()).values())
        assert main(["invoke", str(image), "--endpoint-url", url, "--topk", "2"]) == 0
        direct = capsys.readouterr().out.splitlines()
        assert main(["invoke", str(image), "--endpoint-url", url, "--topk", "2", "--via-lambda"]) == 0
        via_lambda = capsys.readouterr().out.splitlines()
        assert direct == via_lambda and len(direct) == 3  # model line + top-2
        assert any(label in direct[1] for label in labels)
        with pytest.raises(SystemExit) as stop:
            main(["invoke", str(tmp_path / "missing.jpg"), "--endpoint-url", url])
        assert stop.value.code == 1
        assert "neither an image file nor" in capsys.readouterr().err
        server.send_signal(signal.SIGTERM)
        # uvicorn drains, then re-raises the signal so the exit status says why it stopped.
        assert server.wait(timeout=30) == -signal.SIGTERM
    finally:
        if server.poll() is None:
            server.kill()
    log = server.stdout.read()
    assert '"POST /endpoints/local/invocations HTTP/1.1" 200' in log  # one access-log line per request
    assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log


def test_demo_prints_the_top3_and_stops(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", str(run_dir)]) == 0
    out = capsys.readouterr().out
    ranked = [line for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    labels = set(json.loads((run_dir / "labels.json").read_text()).values())
    assert len(ranked) == 3 and all(any(label in line for label in labels) for line in ranked)
    assert out.rstrip().endswith("local endpoint stopped")


@pytest.mark.slow
def test_compiled_model_agrees_with_eager(run_dir: Path, tmp_path: Path) -> None:
    with tarfile.open(package_run(str(run_dir), tmp_path / "model.tar.gz")) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    request = handler.input_fn(image_bytes(), "image/jpeg")
    request.logits = True
    eager = handler.predict_fn(request, handler.load_predictor(tmp_path / "model", compile_model=False))
    compiled_predictor = handler.load_predictor(tmp_path / "model", compile_model=True)
    with torch._dynamo.config.patch(error_on_recompile=True):  # warm-up left nothing to compile on a request
        compiled = handler.predict_fn(request, compiled_predictor)
    assert compiled_predictor.info["serving"]["compiled"] is True
    assert [p["index"] for p in compiled["predictions"]] == [p["index"] for p in eager["predictions"]]
    tolerance = 0.05 if compiled_predictor.dtype == torch.bfloat16 else 1e-3
    assert torch.allclose(torch.tensor(compiled["logits"]), torch.tensor(eager["logits"]), atol=tolerance)
