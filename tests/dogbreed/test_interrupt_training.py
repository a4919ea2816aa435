"""`python train.py` stopped by SIGTERM mid-epoch resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
import torch

from tests.helpers.config import REPO

BUCKET = "dogbreed-spot"


def cli_args(tmp_path: Path, run: str) -> list[str]:
    """Three classes of 16 small training images: 12 steps of 4 per epoch, a few seconds per run.

    Each run generates its own copy of the (deterministic) data, so two can run at once.
    """
    return [
        "data=synthetic",
        f"data.root={tmp_path / 'synthetic' / run}",
        "data.synthetic.classes=3",
        "data.synthetic.train_per_class=16",
        "data.synthetic.valid_per_class=2",
        "data.synthetic.test_per_class=2",
        "data.synthetic.width=40",
        "data.synthetic.height=32",
        "data.image_size=32",
        "data.batch_size=4",
        "data.eval_batch_size=8",
        "data.num_workers=0",
        "data.scan_workers=0",
        "model.arch=resnet18",
        "model.pretrained=false",
        "trainer.device=cpu",
        "trainer.precision=fp32",
        "trainer.epochs=2",
        "trainer.early_stopping_patience=null",
        "trainer.progress_bar=false",
        "trainer.interrupt.spot_notice=false",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"hydra.run.dir={tmp_path / 'outputs' / run}",
    ]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def start_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def interrupt_mid_epoch(args: list[str]) -> tuple[int, str]:
    """Starts train.py, sends SIGTERM as soon as epoch 1 has started, returns (exit code, output)."""
    process = start_cli(args)
    watchdog = threading.Timer(300, process.kill)
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "epoch 1/2: started" in line:
                process.send_signal(signal.SIGTERM)
        return process.wait(), "".join(lines)
    finally:
        watchdog.cancel()
        process.kill()


def resume_command(output: str) -> list[str]:
    lines = output.splitlines()
    command = lines[lines.index("Resume here with:") + 1].split()
    assert command[:2] == ["python", "train.py"]
    return command[2:]


def test_sigterm_mid_epoch_checkpoints_uploads_and_resumes_to_identical_weights(aws: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    storage = ["storage=s3", f"storage.s3_uri=s3://{BUCKET}/runs"]
    reference = start_cli(cli_args(tmp_path, "reference"))  # the uninterrupted run, alongside

    code, output = interrupt_mid_epoch([*cli_args(tmp_path, "spot"), *storage])

    assert code == 128 + signal.SIGTERM, output
    assert "stopped: received SIGTERM" in output
    run = tmp_path / "outputs" / "spot"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 0
    assert 1 <= saved["step"] < 12, "the stop must come mid-epoch, after the step in flight"
    local_bytes = (run / "checkpoint.pt").read_bytes()
    remote = s3.get_object(Bucket=BUCKET, Key="runs/spot/checkpoint.pt")
    assert sha256(remote["Body"].read()) == sha256(local_bytes) == remote["Metadata"]["sha256"]
    assert f"s3://{BUCKET}/runs/spot/checkpoint.pt" in output
    assert not (run / "metrics.json").exists()

    resumed_code, resumed_output = finish(start_cli(resume_command(output)))
    assert resumed_code == 0, resumed_output
    reference_code, reference_output = finish(reference)
    assert reference_code == 0, reference_output

    expected = tmp_path / "outputs" / "reference"
    final = torch.load(run / "checkpoint.pt", weights_only=True)
    uninterrupted = torch.load(expected / "checkpoint.pt", weights_only=True)
    assert final["epoch"] == 2 and final["step"] == 0
    for key, value in uninterrupted["model"].items():
        assert torch.equal(final["model"][key], value), key
    best, best_expected = (torch.load(p / "model.pth", weights_only=True) for p in (run, expected))
    assert all(torch.equal(best[key], value) for key, value in best_expected.items())
    # The interrupted epoch's loss is summed from two parts, hence approx.
    for got, want in zip(final["history"], uninterrupted["history"], strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)
        assert got["valid_loss"] == want["valid_loss"]
    model_in_s3 = s3.get_object(Bucket=BUCKET, Key="runs/spot/model.pth")["Body"].read()
    assert sha256(model_in_s3) == sha256((run / "model.pth").read_bytes())
