"""Scanning a dogImages-shaped folder: what is kept, skipped and reported, and why."""

from __future__ import annotations

import io
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.data import scan
from dogbreed.data.dataset import ImageFolderDataset
from dogbreed.data.folders import SPLITS, breed_name, discover_classes
from dogbreed.data.scan import scan_split
from dogbreed.errors import DataError
from dogbreed.serving.preprocess import EvalPreset, decode_image
from tests.helpers.images import jpeg_bytes, write_image


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((60, 80, 3), 90, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def broken_split(tmp_path: Path) -> Path:
    """One split, one class, with a clean image and one of every broken kind."""
    folder = tmp_path / "train" / "001.Affenpinscher"
    write_image(folder / "good.jpg")
    write_image(folder / "upper.JPG", fmt="JPEG")
    write_image(folder / "upper.PNG", fmt="PNG")
    write_image(folder / "long.jpeg", fmt="JPEG")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture")
    good_png = png_bytes()
    (folder / "corrupt.png").write_bytes(good_png[:60] + bytes(40) + good_png[100:])
    (folder / "truncated.jpg").write_bytes(jpeg_bytes()[: len(jpeg_bytes()) * 6 // 10])
    (folder / "readme.txt").write_text("not an image file")
    (folder / ".DS_Store").write_bytes(b"\0\1hidden")
    (folder / ".hidden.jpg").write_bytes(b"")
    return tmp_path


def test_scan_keeps_clean_images_and_reports_each_broken_kind(broken_split: Path) -> None:
    split = scan_split(broken_split, "train", ["001.Affenpinscher"])

    kept = sorted(path.name for path, _ in split.samples)
    assert kept == ["good.jpg", "long.jpeg", "truncated.jpg", "upper.JPG", "upper.PNG"]
    reasons = {item.path.name: (item.kept, item.reason) for item in split.skipped}
    assert set(reasons) == {"empty.jpg", "notes.jpg", "corrupt.png", "truncated.jpg", "readme.txt"}
    assert reasons["empty.jpg"] == (False, "empty file (0 bytes)")
    assert reasons["notes.jpg"][0] is False and "not an image" in reasons["notes.jpg"][1]
    assert reasons["corrupt.png"][0] is False and reasons["corrupt.png"][1].startswith("undecodable")
    assert reasons["truncated.jpg"][0] is True and reasons["truncated.jpg"][1].startswith("truncated")
    assert reasons["readme.txt"][0] is False and "suffix '.txt'" in reasons["readme.txt"][1]


def test_parallel_scan_agrees_with_serial(broken_split: Path) -> None:
    folder = broken_split / "train" / "001.Affenpinscher"
    for index in range(70):  # enough files for the process pool to be used
        write_image(folder / f"extra_{index:02d}.jpg")
    serial = scan_split(broken_split, "train", ["001.Affenpinscher"], workers=0)
    parallel = scan_split(broken_split, "train", ["001.Affenpinscher"], workers=2)
    assert parallel.samples == serial.samples
    assert parallel.skipped == serial.skipped


def test_a_rescan_of_unchanged_files_takes_the_recorded_verdicts_without_decoding(
    broken_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = tmp_path / "scans"
    first = scan_split(broken_split, "train", ["001.Affenpinscher"], record_dir=records)
    monkeypatch.setattr(scan, "check_image", lambda path: pytest.fail(f"{path.name} was decoded again"))

    again = scan_split(broken_split, "train", ["001.Affenpinscher"], record_dir=records)

    assert again.samples == first.samples
    assert again.skipped == first.skipped  # broken and truncated files are still reported


def test_a_changed_file_gets_its_split_checked_again(
    broken_split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = tmp_path / "scans"
    scan_split(broken_split, "train", ["001.Affenpinscher"], record_dir=records)
    good = broken_split / "train" / "001.Affenpinscher" / "good.jpg"
    good.write_bytes(b"")  # emptied since the last scan
    checked: list[str] = []
    real_check = scan.check_image
    monkeypatch.setattr(scan, "check_image", lambda path: checked.append(path.name) or real_check(path))

    split = scan_split(broken_split, "train", ["001.Affenpinscher"], record_dir=records)

    assert "good.jpg" in checked
    reasons = {item.path.name: item.reason for item in split.skipped}
    assert reasons["good.jpg"] == "empty file (0 bytes)"


def test_work_given_to_the_scan_runs_beside_the_check_of_new_images_only(broken_split: Path, tmp_path: Path) -> None:
    folder = broken_split / "train" / "001.Affenpinscher"
    for index in range(70):  # enough files for the process pool to be used
        write_image(folder / f"extra_{index:02d}.jpg")
    records = tmp_path / "scans"
    checkers_running: list[int] = []

    (split,) = scan.check_splits(
        [scan.list_split(broken_split, "train", ["001.Affenpinscher"], records)],
        workers=2,
        meanwhile=lambda: checkers_running.append(len(multiprocessing.active_children())),
    )

    assert checkers_running == [1]  # it ran once, while one worker process (of 2, less its core) checked
    serial = scan_split(broken_split, "train", ["001.Affenpinscher"], workers=0)
    assert split.samples == serial.samples and split.skipped == serial.skipped
    scan.check_splits(  # a rerun has recorded verdicts: nothing to check, so nothing runs beside
        [scan.list_split(broken_split, "train", ["001.Affenpinscher"], records)],
        workers=2,
        meanwhile=lambda: pytest.fail("ran with no image to check"),
    )


def test_a_torn_scan_record_is_ignored_and_the_images_checked(broken_split: Path, tmp_path: Path) -> None:
    records = tmp_path / "scans"
    first = scan_split(broken_split, "train", ["001.Affenpinscher"], record_dir=records)
    (record,) = records.iterdir()
    record.write_text(record.read_text()[:10])

    again = scan_split(broken_split, "train", ["001.Affenpinscher"], record_dir=records)

    assert again.skipped == first.skipped
    assert json.loads(record.read_text())["count"] == 8  # rewritten whole: a verdict for each of the 8 image files


def test_truncated_image_still_decodes_for_training(broken_split: Path) -> None:
    image = decode_image(broken_split / "train" / "001.Affenpinscher" / "truncated.jpg")
    assert image.mode == "RGB" and image.size == (160, 120)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA"])
def test_every_colour_mode_becomes_rgb_tensor(tmp_path: Path, mode: str) -> None:
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    path = write_image(tmp_path / f"image.{fmt.lower()}", mode=mode, fmt=fmt)
    dataset = ImageFolderDataset([(path, 0)], EvalPreset(32))
    tensor, target = dataset[0]
    assert tensor.shape == (3, 32, 32) and target == 0


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert decode_image(path).getpixel((4, 4)) == (255, 255, 255)


def test_draft_decode_matches_full_decode_within_resampling_noise(tmp_path: Path) -> None:
    large = Image.radial_gradient("L").resize((2048, 1536)).convert("RGB")
    path = tmp_path / "large.jpg"
    large.save(path, quality=95)
    preset = EvalPreset(224)
    drafted = decode_image(path, min_size=preset.resize_size)
    assert min(drafted.size) < 1536  # draft mode really decoded at a reduced scale
    full = preset(decode_image(path))
    fast = preset(drafted)
    assert (full - fast).abs().mean() < 0.02


def test_breed_names_come_from_folder_names() -> None:
    assert breed_name("001.Affenpinscher") == "Affenpinscher"
    assert breed_name("011.Australian_cattle_dog") == "Australian cattle dog"


def test_classes_are_sorted_folder_order(tmp_path: Path) -> None:
    for split in SPLITS:
        for folder in ("002.Beagle", "001.Akita", ".cache"):
            (tmp_path / split / folder).mkdir(parents=True)
    assert discover_classes(tmp_path) == ["001.Akita", "002.Beagle"]


def test_splits_with_different_classes_name_the_differences(tmp_path: Path) -> None:
    for split in SPLITS:
        (tmp_path / split / "001.Akita").mkdir(parents=True)
    (tmp_path / "train" / "002.Beagle").mkdir()
    (tmp_path / "test" / "003.Boxer").mkdir()
    with pytest.raises(DataError) as raised:
        discover_classes(tmp_path)
    message = str(raised.value)
    assert "missing from valid: 002.Beagle" in message
    assert "only in test: 003.Boxer" in message


def test_missing_split_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "train" / "001.Akita").mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing split folder.*valid, test"):
        discover_classes(tmp_path)


def test_split_with_no_readable_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train" / "001.Akita").mkdir(parents=True)
    (tmp_path / "train" / "001.Akita" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no readable images"):
        scan_split(tmp_path, "train", ["001.Akita"])


@pytest.mark.parametrize("min_size", [None, 16])
def test_exif_orientation_is_applied_in_the_shared_decode(tmp_path: Path, min_size: int | None) -> None:
    """A phone photo stored landscape with 'rotate 90° clockwise' (orientation 6) comes out portrait."""
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)
    pixels[:, :30] = (255, 0, 0)  # left half red: after the rotation it is the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(pixels).save(path, "JPEG", exif=exif, quality=95)
    image = decode_image(path, min_size)
    assert image.size == (30, 60)
    top, bottom = np.asarray(image)[5, 15], np.asarray(image)[55, 15]
    assert top[0] > 200 > bottom[0]
