"""End-to-end training runs on generated data: artifacts, resume, early stopping, learning."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

from dogbreed.data.synthetic import SyntheticSpec, generate
from dogbreed.errors import DataError, TrainingInterrupted
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.train import checkpoint, fit
from dogbreed.train.checkpoint import find_resumable, load_checkpoint
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.images import jpeg_bytes
from tests.helpers.runs import ARTIFACTS


def test_run_with_broken_files_writes_every_artifact(make_cfg, tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "dogImages"
    shutil.copytree(tiny_dataset, root)
    (root / "train" / "001.Ellipse_0deg" / "zero.jpg").write_bytes(b"")
    (root / "valid" / "002.Rectangle_0deg" / "text.jpg").write_text("hello")
    (root / "test" / "003.Triangle_0deg" / "cut.jpg").write_bytes(jpeg_bytes()[:900])
    cfg = make_cfg(["trainer.epochs=2"], data_root=root)

    top1 = train(run_settings(cfg))

    run = Path(cfg.paths.output_dir)
    for name in ARTIFACTS:
        assert (run / name).stat().st_size > 0, name
    labels = json.loads((run / "labels.json").read_text())
    assert labels == {"0": "Ellipse 0deg", "1": "Rectangle 0deg", "2": "Triangle 0deg", "3": "Diamond 0deg"}
    skipped = (run / "skipped_files.txt").read_text().splitlines()
    assert len(skipped) == 3
    assert any("zero.jpg\tskipped\tempty file" in line for line in skipped)
    assert any("text.jpg\tskipped\tnot an image" in line for line in skipped)
    assert any("cut.jpg\tkept\ttruncated" in line for line in skipped)

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["valid"]["top1"] == pytest.approx(top1)
    assert set(metrics["test"]["per_class_accuracy"]) == set(labels.values())
    assert 0.0 <= metrics["test"]["top1"] <= metrics["test"]["top5"] <= 1.0
    with (run / "metrics.csv").open() as rows:
        assert [row["epoch"] for row in csv.DictReader(rows)] == ["1", "2"]
    for plot in ("curves.png", "confusion.png"):
        assert Image.open(run / plot).size[0] > 300

    model = build_model(ModelSpec("resnet18", 4))
    model.load_state_dict(torch.load(run / "model.pth", weights_only=True))
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["epoch"] == 2 and saved["class_names"] == list(labels.values())
    assert saved["config"]["optim"]["lr"] == cfg.optim.lr


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_ends_with_the_same_weights(make_cfg, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    # A checkpoint after every epoch: the crash below comes a fraction of a second after the last one.
    overrides = ["trainer.epochs=3", f"data.num_workers={workers}", "trainer.early_stopping_patience=null",
                 "trainer.checkpoint_every_s=0"]  # fmt: skip
    reference_cfg = make_cfg(overrides, run="reference")
    train(run_settings(reference_cfg))

    real_epoch = fit.train_one_epoch
    calls = []

    def interrupted_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(fit, "train_one_epoch", interrupted_epoch)
    interrupted_cfg = make_cfg(overrides, run="interrupted")
    with pytest.raises(KeyboardInterrupt):
        train(run_settings(interrupted_cfg))
    monkeypatch.setattr(fit, "train_one_epoch", real_epoch)
    partial = Path(interrupted_cfg.paths.output_dir) / "checkpoint.pt"
    assert load_checkpoint(partial)["epoch"] == 2

    resumed_cfg = make_cfg([*overrides, f"trainer.resume={partial}"], run="resumed")
    train(run_settings(resumed_cfg))

    for name in ("model.pth", "checkpoint.pt"):
        expected = torch.load(Path(reference_cfg.paths.output_dir) / name, weights_only=True)
        actual = torch.load(Path(resumed_cfg.paths.output_dir) / name, weights_only=True)
        expected, actual = (d["model"] if name == "checkpoint.pt" else d for d in (expected, actual))
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}:{key}"
    reference_rows = (Path(reference_cfg.paths.output_dir) / "metrics.csv").read_text().splitlines()
    resumed_rows = (Path(resumed_cfg.paths.output_dir) / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:7] for r in resumed_rows] == [r.split(",")[:7] for r in reference_rows]


def test_resume_auto_finds_the_newest_unfinished_run(tmp_path: Path) -> None:
    for name in ("old", "finished", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint.pt").write_bytes(b"x")
    (tmp_path / "finished" / "metrics.json").write_text("{}")
    (tmp_path / "old" / "checkpoint.pt").touch()
    (tmp_path / "new" / "checkpoint.pt").touch()
    assert find_resumable(tmp_path) == tmp_path / "new" / "checkpoint.pt"


def test_checkpoints_wait_for_their_interval_but_the_last_epoch_and_a_stop_always_write_one(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved_epochs: list[int] = []
    real_save = checkpoint.save_training_checkpoint

    def recorded_save(path, model, optimizer, scheduler, scaler, state, *rest) -> None:  # type: ignore[no-untyped-def]
        saved_epochs.append(state.epoch)
        real_save(path, model, optimizer, scheduler, scaler, state, *rest)

    monkeypatch.setattr(checkpoint, "save_training_checkpoint", recorded_save)
    overrides = ["trainer.epochs=3", "trainer.early_stopping_patience=null"]
    train(run_settings(make_cfg([*overrides, "trainer.checkpoint_every_s=0"], run="every")))
    assert saved_epochs == [1, 2, 3]

    saved_epochs.clear()
    train(run_settings(make_cfg([*overrides, "trainer.checkpoint_every_s=3600"], run="sparse")))
    assert saved_epochs == [3], "only the last epoch is checkpointed within the interval"

    real_evaluate = fit.Job.evaluate
    validations: list[str] = []

    def sigterm_in_epoch_2(job: fit.Job, split: str):  # type: ignore[no-untyped-def]
        result = real_evaluate(job, split)
        validations.append(split)
        if validations.count("valid") == 2:  # SIGTERM while epoch 2 validates
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(fit.Job, "evaluate", sigterm_in_epoch_2)
    saved_epochs.clear()
    stopped_cfg = make_cfg([*overrides, "trainer.checkpoint_every_s=3600"], run="stopped")
    with pytest.raises(TrainingInterrupted):
        train(run_settings(stopped_cfg))
    assert saved_epochs == [2]
    assert load_checkpoint(Path(stopped_cfg.paths.output_dir) / "checkpoint.pt")["epoch"] == 2


def test_resume_refuses_a_checkpoint_from_other_classes(make_cfg, tmp_path: Path) -> None:
    first = make_cfg(run="first")
    train(run_settings(first))
    other = generate(
        tmp_path / "other",
        SyntheticSpec(classes=3, train_per_class=8, valid_per_class=2, test_per_class=2, width=48, height=40),
    )
    cfg = make_cfg([f"trainer.resume={first.paths.output_dir}/checkpoint.pt"], data_root=other, run="second")
    with pytest.raises(DataError, match="cannot resume"):
        train(run_settings(cfg))


def test_early_stopping_ends_a_run_that_stopped_improving(make_cfg) -> None:
    # lr 0 with a frozen backbone: validation loss stays exactly the same every epoch.
    cfg = make_cfg(["trainer.epochs=6", "trainer.early_stopping_patience=2", "optim.lr=0", "model.freeze=backbone"])
    train(run_settings(cfg))
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["best_epoch"] == 1


def test_synthetic_data_is_learnable(make_cfg, tmp_path: Path) -> None:
    spec = SyntheticSpec(classes=5, train_per_class=40, valid_per_class=10, test_per_class=10, width=64, height=48)
    root = generate(tmp_path / "learnable", spec)
    cfg = make_cfg(["trainer.epochs=6", "optim=adamw", "optim.lr=2e-3", "model.freeze=none"], data_root=root)
    top1 = train(run_settings(cfg))
    test_top1 = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["test"]["top1"]
    assert top1 >= 0.6 and test_top1 >= 0.6  # chance is 0.2
