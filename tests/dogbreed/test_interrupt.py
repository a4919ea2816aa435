"""Stop requests: signals, a second signal, and EC2 spot notices from a local IMDSv2 server."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dogbreed.errors import TrainingInterrupted
from dogbreed.train import checkpoint
from dogbreed.train.interrupt import StopRequest
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.config import REPO
from tests.helpers.imds import FakeIMDS


def wait_for(condition: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_spot_notice_requests_a_stop(imds: FakeIMDS) -> None:
    with StopRequest(imds.url, spot_poll_s=0.05) as stop:
        assert wait_for(lambda: imds.polls >= 2), "the poller must use the IMDSv2 token"
        assert not stop.requested
        imds.notice = {"action": "terminate", "time": "2026-11-24T01:00:00Z"}
        assert wait_for(lambda: stop.requested)
    assert "spot interruption notice (terminate at 2026-11-24T01:00:00Z)" in stop.reason
    assert stop.exit_code == 128 + signal.SIGTERM


def test_no_metadata_service_means_no_spot_watch(closed_port: int) -> None:
    with StopRequest(f"http://127.0.0.1:{closed_port}", spot_poll_s=0.05) as stop:
        poller = stop._poller
        assert wait_for(lambda: not poller.is_alive())
    assert not stop.requested


def test_sigterm_sets_the_flag_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_for(lambda: stop.requested)
        assert stop.exit_code == 128 + signal.SIGTERM
        assert "received SIGTERM" in stop.reason
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_signal_exits_at_once_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import torch
        from pathlib import Path
        from dogbreed.files import atomic_torch_save
        from dogbreed.train.interrupt import StopRequest

        path = Path({str(tmp_path / "checkpoint.pt")!r})
        with StopRequest() as stop:
            step = 0
            while True:  # keeps writing after the first signal, like a checkpoint save in progress
                step += 1
                atomic_torch_save({{"step": step, "weights": torch.full((500_000,), float(step))}}, path)
                if step == 3:
                    print("ready", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.poll() is None, "the first signal only asks for a stop"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        process.kill()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert torch.equal(saved["weights"], torch.full((500_000,), float(saved["step"])))


def test_spot_notice_during_training_stops_after_one_step_with_a_resumable_checkpoint(imds: FakeIMDS, make_cfg) -> None:
    imds.notice = {"action": "stop", "time": "2026-11-24T01:00:00Z"}
    cfg = make_cfg([f"trainer.interrupt.imds_endpoint={imds.url}", "trainer.interrupt.spot_poll_s=0.05"])

    with pytest.raises(TrainingInterrupted) as stopped:
        # The notice arrives while the data is scanned; the first step still completes.
        train(run_settings(cfg))

    assert stopped.value.exit_code == 128 + signal.SIGTERM
    message = str(stopped.value)
    assert "EC2 spot interruption notice (stop at" in message
    run = Path(cfg.paths.output_dir)
    assert f"trainer.resume={(run / 'checkpoint.pt').resolve()}" in message
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (0, 1)
    assert not (run / "metrics.json").exists()


def test_checkpoint_written_for_a_stop_keeps_the_best_weights(tmp_path: Path) -> None:
    # Mid-epoch, the current weights are no longer those of the best epoch: they must be saved apart.
    state = checkpoint.TrainingState(epoch=1, best_epoch=1, step=3, best_model={"w": torch.ones(1)})
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    checkpoint.save_training_checkpoint(
        tmp_path / "c.pt",
        model,
        optimizer,
        scheduler,
        torch.amp.GradScaler("cpu", enabled=False),
        state,
        {},
        ["a"],
    )
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert saved["step"] == 3 and torch.equal(saved["best_model"]["w"], torch.ones(1))


class SignalOnLog(logging.Handler):
    """Sends this process SIGTERM when a log message contains `text`: a stop at a known point."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            os.kill(os.getpid(), signal.SIGTERM)


def test_mid_epoch_resume_is_exact_with_loader_workers(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    # Skipped batches are fetched again on resume, so each worker's augmentation RNG advances as before.
    common = ["data.num_workers=2", "data.batch_size=4", "trainer.epochs=1"]
    common.append("trainer.interrupt.spot_notice=false")
    stopper = SignalOnLog("epoch 1/1: started")
    caplog.set_level(logging.INFO, logger="dogbreed.train.resume")
    logging.getLogger("dogbreed.train.resume").addHandler(stopper)
    try:
        with pytest.raises(TrainingInterrupted):
            train(run_settings(make_cfg(common, run="stopped")))
    finally:
        logging.getLogger("dogbreed.train.resume").removeHandler(stopper)
    stopped = make_cfg(common, run="stopped")
    path = Path(stopped.paths.output_dir) / "checkpoint.pt"
    assert torch.load(path, weights_only=True)["step"] >= 1
    train(run_settings(make_cfg([*common, f"trainer.resume={path}"], run="stopped")))
    reference = make_cfg(common, run="reference")
    train(run_settings(reference))

    final = torch.load(path, weights_only=True)["model"]
    expected = torch.load(Path(reference.paths.output_dir) / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(final[key], value) for key, value in expected.items())
