"""`python -m deploy predict`: top-k breeds for a folder, list file or s3:// prefix of photos, no server.

The model is loaded from the same `model.tar.gz` the endpoint gets, and each photo goes
through the endpoint's decode and eval preset (`dogbreed.serving.handler`), batched. One CSV
row per readable image; unreadable files go to a second CSV with the reason, and never stop
the run. Images under `NNN.Breed/` folders (the dogImages layout) are scored against their
folder's breed.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from dogbreed.data.folders import IMAGE_SUFFIXES, breed_name, printable
from dogbreed.errors import DogbreedError
from dogbreed.serving import handler
from dogbreed.serving.errors import RequestError

MAX_FILE_BYTES = 100 * 1024 * 1024  # far above any photo; a stray video or disk image is listed, not read
CLASS_FOLDER = re.compile(r"[0-9]+\.[^/]+")  # 001.Affenpinscher


class PredictError(DogbreedError):
    """The input or the options cannot be used as given."""


@dataclass(frozen=True)
class Item:
    """One input file: where to read it, how the CSV names it, and its breed when its folder says."""

    path: Path
    shown: str
    breed: str | None


@dataclass
class Summary:
    predicted: int = 0
    unreadable: int = 0
    labelled: int = 0
    top1_hits: int = 0
    top5_hits: int = 0


def folder_breed(path: Path) -> str | None:
    return breed_name(path.parent.name) if CLASS_FOLDER.fullmatch(path.parent.name) else None


def folder_items(root: Path, shown_root: str) -> list[Item]:
    """Every visible file under `root`, sorted; non-image suffixes are kept so they are reported."""
    items = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(folder) / name
            shown = f"{shown_root}/{path.relative_to(root).as_posix()}" if shown_root else str(path)
            items.append(Item(path, printable(shown), folder_breed(path)))
    return items


def list_inputs(source: str, workdir: Path) -> list[Item]:
    """The files of INPUT: a folder (recursively), a text file of paths (one a line), or an s3:// prefix."""
    if source.startswith("s3://"):
        from dogbreed.storage.location import S3Location, make_client
        from dogbreed.storage.mirror import sync_prefix

        local = workdir / "input"
        sync_prefix(make_client(), S3Location.parse(source), local)
        return folder_items(local, source.rstrip("/"))
    path = Path(source)
    if path.is_dir():
        return folder_items(path, "")
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [Item(Path(line), line, folder_breed(Path(line))) for line in lines if line and not line.startswith("#")]
    raise PredictError(f"{source} is neither a folder, a file listing images, nor an s3:// prefix")


def load(item: Item, predictor: handler.Predictor) -> Image.Image | str:
    """The decoded image, or why it cannot be read."""
    if item.path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {item.path.suffix or 'none'!r})"
    try:
        size = item.path.stat().st_size
        if size > MAX_FILE_BYTES:
            return f"{size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit"
        data = item.path.read_bytes()
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    if not data:
        return "empty file"
    try:
        return handler.decode(data, predictor.preset)
    except RequestError as err:  # the endpoint's own refusals: not an image, too many pixels, corrupt
        return err.message


def batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_files(
    items: list[Item], predictor: handler.Predictor, topk: int, batch_size: int, output: Path, errors: Path
) -> Summary:
    """Writes `output` (path, [breed], top-k breeds and probabilities) and `errors` (path, reason)."""
    summary = Summary()
    labelled = any(item.breed is not None for item in items)
    known = set(predictor.labels)
    header = ["path", *(["breed"] if labelled else [])]
    for rank in range(1, min(topk, len(predictor.labels)) + 1):
        header += [f"breed_{rank}", f"probability_{rank}"]
    with (
        output.open("w", newline="") as out,
        errors.open("w", newline="") as bad,
        ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool,  # PIL decodes outside the GIL
        tqdm(total=len(items), unit="img", desc="predict") as progress,
    ):
        rows, failures = csv.writer(out), csv.writer(bad)
        rows.writerow(header)
        failures.writerow(["path", "reason"])
        for batch in batches(items, batch_size):
            loaded = list(pool.map(lambda item: load(item, predictor), batch))
            good = [(item, image) for item, image in zip(batch, loaded, strict=True) if not isinstance(image, str)]
            for item, reason in zip(batch, loaded, strict=True):
                if isinstance(reason, str):
                    failures.writerow([item.shown, reason])
                    summary.unreadable += 1
            ranked = handler.classify([image for _, image in good], predictor, max(topk, 5)) if good else []
            for (item, _), top in zip(good, ranked, strict=True):
                breeds = [predictor.labels[index] for index, _ in top]
                row = [item.shown, *([item.breed or ""] if labelled else [])]
                for index, probability in top[:topk]:
                    row += [predictor.labels[index], f"{probability:.6f}"]
                rows.writerow(row)
                summary.predicted += 1
                if item.breed in known:
                    summary.labelled += 1
                    summary.top1_hits += breeds[0] == item.breed
                    summary.top5_hits += item.breed in breeds[:5]
            progress.update(len(batch))
    return summary


def errors_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_errors.csv")


def report(summary: Summary, output: Path) -> list[str]:
    """The lines `predict` prints at the end."""
    lines = [f"{summary.predicted} images -> {output}"]
    if summary.unreadable:
        lines.append(f"{summary.unreadable} unreadable files, with the reason, -> {errors_path(output)}")
    if summary.labelled:
        lines.append(
            f"dogImages layout, {summary.labelled} images of the model's breeds: "
            f"top-1 {summary.top1_hits / summary.labelled:.3f}, top-5 {summary.top5_hits / summary.labelled:.3f}"
        )
    return lines
