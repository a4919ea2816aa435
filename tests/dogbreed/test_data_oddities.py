"""Odd datasets and disks: symlink loops, non-UTF-8 names, empty classes, killed and full-disk writes."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import torch

from dogbreed import files
from dogbreed.data.folders import SPLITS, breed_name, discover_classes, printable
from dogbreed.data.scan import scan_split, write_skipped_report
from dogbreed.errors import DataError, DogbreedError
from dogbreed.train import checkpoint, reports
from dogbreed.train.loaders import scan_dataset
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.images import write_image

ODD = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8, so a lone surrogate after fsdecode


def test_symlink_loop_is_skipped_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "001.Akita"
    write_image(folder / "good.jpg")
    (folder / "self.jpg").symlink_to("self.jpg")
    (folder / "a.jpg").symlink_to("b.jpg")
    (folder / "b.jpg").symlink_to("a.jpg")
    (folder / "dangling.jpg").symlink_to("nowhere.jpg")

    split = scan_split(tmp_path, "train", ["001.Akita"])

    assert [path.name for path, _ in split.samples] == ["good.jpg"]
    reasons = {item.path.name: item.reason for item in split.skipped}
    assert set(reasons) == {"self.jpg", "a.jpg", "b.jpg", "dangling.jpg"}
    assert "symbolic links" in reasons["self.jpg"]
    assert all(not item.kept for item in split.skipped)


def test_broken_file_with_non_utf8_name_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "001.Akita"
    write_image(folder / "good.jpg")
    (folder / f"{ODD}.jpg").write_bytes(b"")
    (folder / "tab\there.txt").write_text("x")

    split = scan_split(tmp_path, "train", ["001.Akita"])
    report = tmp_path / "skipped_files.txt"
    assert write_skipped_report([split], report) == 2

    lines = report.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert any(line.endswith("caf\\xe9.jpg\tskipped\tempty file (0 bytes)") for line in lines)
    assert any("tab\\there.txt\tskipped\tnot an image file" in line for line in lines)


def test_printable_names_survive_any_bytes() -> None:
    assert printable(ODD) == "caf\\xe9"
    assert printable("café\nx") == "café\\nx"
    assert breed_name(f"004.{ODD}_dog") == "caf\\xe9 dog"
    assert printable(Path("plain/name.jpg")) == "plain/name.jpg"


@pytest.mark.parametrize(
    "freeze",
    [
        "none",  # image loaders
        "backbone",  # the feature cache
    ],
)
def test_non_utf8_class_folder_trains_to_metrics_json(
    make_cfg, tiny_dataset: Path, tmp_path: Path, freeze: str
) -> None:
    root = tmp_path / "dogImages"
    shutil.copytree(tiny_dataset, root)
    for split in SPLITS:
        (root / split / "002.Rectangle_0deg").rename(root / split / f"002.{ODD}_$dog$")
    cfg = make_cfg(["trainer.epochs=1", f"model.freeze={freeze}"], data_root=root)

    train(run_settings(cfg))

    run = Path(cfg.paths.output_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "caf\\xe9 $dog$" in metrics["test"]["per_class_accuracy"]
    assert json.loads((run / "labels.json").read_text())["1"] == "caf\\xe9 $dog$"
    assert (run / "confusion.png").stat().st_size > 0
    assert checkpoint.find_resumable(run.parent) is None  # resume=auto no longer picks the finished run


def test_class_without_training_images_is_an_error_naming_it(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "dogImages"
    shutil.copytree(tiny_dataset, root)
    for split in SPLITS:
        (root / split / "005.Empty_breed").mkdir()
    write_image(root / "valid" / "005.Empty_breed" / "only_valid.jpg")
    # Every training file broken: no usable training image either.
    train_folder = root / "train" / "003.Triangle_0deg"
    for image in train_folder.iterdir():
        image.write_bytes(b"")

    with pytest.raises(DataError) as raised:
        scan_dataset(root, discover_classes(root), scan_workers=0)
    message = str(raised.value)
    assert "003.Triangle_0deg" in message and "005.Empty_breed" in message
    assert "001." not in message


def test_class_empty_only_in_valid_is_logged(tiny_dataset: Path, tmp_path: Path, caplog) -> None:
    root = tmp_path / "dogImages"
    shutil.copytree(tiny_dataset, root)
    for image in (root / "valid" / "001.Ellipse_0deg").iterdir():
        image.unlink()
    splits = scan_dataset(root, discover_classes(root), scan_workers=0)
    assert {target for _, target in splits["train"].samples} == {0, 1, 2, 3}  # the class still trains
    assert "no valid image for 1 class(es): 001.Ellipse_0deg" in caplog.text


def test_stale_temporaries_of_atomic_writes_are_removed(tmp_path: Path) -> None:
    dead_pid = 2**22 + 1  # above Linux's pid_max: never a live process
    stale = tmp_path / f".checkpoint.pt.{dead_pid}.tmp"
    reused = tmp_path / f".model.pth.{os.getpid()}.tmp"  # our pid, but written before this process started
    fresh = tmp_path / f".labels.json.{os.getpid()}.tmp"  # ours, from this process: a write under way
    live = tmp_path / f".checkpoint.pt.{os.getppid()}.tmp"  # a live process writing now
    others = [tmp_path / ".notes.tmp", tmp_path / f"checkpoint.pt.{dead_pid}.tmp", tmp_path / "data.tmp"]
    for path in (stale, reused, fresh, live, *others):
        path.write_bytes(b"x")
    old = files.PROCESS_STARTED - 60
    os.utime(reused, (old, old))

    removed = files.remove_stale_temporaries(tmp_path)

    assert sorted(removed) == sorted([stale, reused])
    assert not stale.exists() and not reused.exists()
    assert fresh.exists() and live.exists() and all(path.exists() for path in others)


def test_resumed_run_removes_what_killed_writes_left(make_cfg) -> None:
    first = make_cfg(["trainer.epochs=1"], run="first")
    train(run_settings(first))
    first_dir = Path(first.paths.output_dir)
    (first_dir / "metrics.json").unlink()  # as if killed before the end
    leftover = first_dir / f".checkpoint.pt.{2**22 + 1}.tmp"
    leftover.write_bytes(bytes(1000))

    second = make_cfg(["trainer.epochs=2", f"trainer.resume={first_dir / 'checkpoint.pt'}"], run="second")
    train(run_settings(second))

    assert not leftover.exists()


class FillingFile:
    """A file whose disk fills after `room` bytes, as a write to a full disk fails."""

    def __init__(self, out: BinaryIO, room: int, code: int) -> None:
        self.out, self.room, self.code = out, room, code

    def write(self, data: bytes) -> int:
        if self.room < len(data):
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.out.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_during_checkpoint_is_one_clear_error(tmp_path: Path, monkeypatch, code: int) -> None:
    path = tmp_path / "checkpoint.pt"
    files.atomic_torch_save({"weights": torch.ones(10)}, path)
    before = path.read_bytes()
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, out: real_save(obj, FillingFile(out, 2000, code)))

    with pytest.raises(files.DiskFullError) as raised:
        files.atomic_torch_save({"weights": torch.zeros(100_000)}, path)

    assert isinstance(raised.value, DogbreedError)
    message = str(raised.value)
    assert str(path) in message and "needs at least" in message and "MB" in message and "free" in message
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no torn temporary


def test_full_disk_while_writing_reports_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # some filesystems fail only when data reaches the disk
    with pytest.raises(files.DiskFullError, match=r"metrics\.json"):
        reports.write_json({"top1": 0.5}, tmp_path / "metrics.json")
    with pytest.raises(files.DiskFullError, match=r"labels\.json"):
        reports.write_labels(["a"], tmp_path / "labels.json")
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_stay_as_they_are(tmp_path: Path, monkeypatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError) as raised:
        files.atomic_write_bytes(b"x", tmp_path / "file")
    assert not isinstance(raised.value, DogbreedError)
    assert list(tmp_path.iterdir()) == []
