"""dogImages-shaped folders: class discovery, file scanning, and the Dataset.

Layout: `<root>/{train,valid,test}/NNN.Breed_name/*.jpg`. Breed names come from
the folder names (`001.Affenpinscher` -> `Affenpinscher`) and the class index is
the sorted folder order, identical in every split.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from dogbreed.data.folders import IMAGE_SUFFIXES, printable
from dogbreed.errors import DataError
from dogbreed.files import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of (or kept with a warning in) a split, and why."""

    path: Path
    reason: str
    kept: bool = False


@dataclass
class Split:
    """The usable images of one split, as (path, class index) pairs."""

    name: str
    samples: list[tuple[Path, int]]
    skipped: list[SkippedFile]


def check_image(path: Path) -> str | None:
    """Returns None for a clean image, else why it is broken.

    A reason starting with `truncated` marks an image that still decodes
    (partially); the scan keeps those. Decoding uses draft mode at 1/8 scale:
    the whole compressed stream is still read, so truncation and corruption
    are caught, at a fraction of the cost of a full decode.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        if _decodes(path, allow_truncated=False):
            return None
        _decodes(path, allow_truncated=True)
        return "truncated: image data ends early (kept, decoded partially)"
    except UnidentifiedImageError:
        return "not an image (no known image format)"
    except Image.DecompressionBombError as err:
        return f"too many pixels ({err})"
    except (OSError, SyntaxError, ValueError) as err:
        return printable(f"undecodable ({err})")


def _decodes(path: Path, allow_truncated: bool) -> bool:
    """Decodes at reduced scale; False when strict decoding hit a truncated stream."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        return True
    except OSError as err:
        if allow_truncated or "truncated" not in str(err):
            raise
        return False
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _list_candidates(split_dir: Path, folders: list[str]) -> tuple[list[tuple[Path, int]], list[SkippedFile]]:
    candidates: list[tuple[Path, int]] = []
    skipped: list[SkippedFile] = []
    for index, folder in enumerate(folders):
        try:
            entries = sorted(os.scandir(split_dir / folder), key=lambda e: e.name)
        except OSError as err:
            raise DataError(f"cannot list {printable(split_dir / folder)}: {err.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            problem = _entry_problem(entry)
            if problem is not None:
                skipped.append(SkippedFile(path, problem))
            elif entry.is_dir():
                continue  # a subfolder: not part of the layout
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                candidates.append((path, index))
            else:
                skipped.append(SkippedFile(path, printable(f"not an image file (suffix {path.suffix or 'none'!r})")))
    return candidates, skipped


def _entry_problem(entry: os.DirEntry[str]) -> str | None:
    """Why a folder entry is no file or folder to read (a symlink loop, a dangling link, a pipe), else None."""
    try:
        if entry.is_file() or entry.is_dir():
            return None
        os.stat(entry.path)  # raises for a dangling link
    except OSError as err:  # ELOOP from a symlink loop, EACCES, ...
        return f"unreadable ({err.strerror})"
    return "not a regular file (a pipe, socket or device)"


def files_digest(samples: list[tuple[Path, int]]) -> str:
    """SHA-256 over each file's path, size, mtime and label."""
    digest = hashlib.sha256()
    for path, target in samples:
        stat = path.stat()
        # Paths are bytes on disk: surrogateescape keeps any folder name (not only UTF-8) hashable.
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{target}\n".encode(errors="surrogateescape"))
    return digest.hexdigest()


# Bump when check_image's verdicts change: every recorded scan is then checked again.
SCAN_RECORD_VERSION = 1


@dataclass
class Listing:
    """One split's candidate files before any is decoded, and their verdicts if a scan record knows them.

    A record is keyed by each candidate's path, size, mtime and label (what the feature cache trusts
    too), so a rerun or sweep trial on unchanged files reads the verdicts instead of decoding every
    image again; any change to the files is a different key, and the split is checked afresh.
    """

    split: str
    directory: Path
    candidates: list[tuple[Path, int]]
    skipped: list[SkippedFile]
    record: Path | None
    reasons: list[str | None] | None

    @property
    def needs_checking(self) -> bool:
        return self.reasons is None


def list_split(root: Path, split: str, folders: list[str], record_dir: Path | None = None) -> Listing:
    """The split's candidate files, with their recorded verdicts when `record_dir` has them."""
    candidates, skipped = _list_candidates(root / split, folders)
    if record_dir is None:
        return Listing(split, root / split, candidates, skipped, None, None)
    key = hashlib.sha256(f"{SCAN_RECORD_VERSION}\0{split}\0{files_digest(candidates)}".encode()).hexdigest()
    record = record_dir / f"{split}-{key[:20]}.json"
    return Listing(split, root / split, candidates, skipped, record, _read_record(record, len(candidates)))


def _read_record(path: Path, count: int) -> list[str | None] | None:
    """The verdicts stored at `path`, or None when it is missing or not a record of `count` files."""
    try:
        stored = json.loads(path.read_text())
        problems = {int(index): str(reason) for index, reason in stored["problems"]}
        if stored["count"] != count or not all(0 <= index < count for index in problems):
            raise ValueError(f"a record of {stored['count']} files, not {count}")
    except FileNotFoundError:
        return None
    except Exception as err:  # a torn or foreign file: check the images again
        log.warning("scan record %s is unusable (%s); checking the images again", path, err)
        return None
    return [problems.get(index) for index in range(count)]


def check_splits(
    listings: list[Listing], workers: int = 0, meanwhile: Callable[[], object] | None = None
) -> list[Split]:
    """Each listing's split, its images without a recorded verdict checked (in one pool of `workers`
    processes when worth it) and their verdicts recorded.

    `meanwhile` runs on this thread while the images are checked, and only when there are images
    to check: a new dataset, whose features cannot be cached yet, so the caller can compile the
    model the extraction will need. It keeps one core busy, so the pool is a process smaller.
    """
    paths = [path for listing in listings if listing.needs_checking for path, _ in listing.candidates]
    beside = meanwhile if paths else None
    processes = workers - 1 if beside is not None else workers
    # A pool pays for its start above a few dozen images; beside `meanwhile` one process overlaps.
    use_pool = len(paths) > 64 and processes >= (1 if beside is not None else 2)
    with ProcessPoolExecutor(max_workers=processes) if use_pool else contextlib.nullcontext() as pool:
        # A pool has every chunk submitted now; without one, each image is checked as it is read below.
        checking = pool.map(check_image, paths, chunksize=64) if pool is not None else map(check_image, paths)
        if beside is not None:
            beside()
        verdicts = iter(list(checking))
    splits = []
    for listing in listings:
        reasons = listing.reasons if listing.reasons is not None else [next(verdicts) for _ in listing.candidates]
        splits.append(_split_with_verdicts(listing, reasons))
    return splits


def _split_with_verdicts(listing: Listing, reasons: list[str | None]) -> Split:
    """The listing's usable samples and skipped files; new verdicts are recorded first."""
    if listing.needs_checking and listing.record is not None:
        problems = [[index, reason] for index, reason in enumerate(reasons) if reason is not None]
        listing.record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps({"count": len(reasons), "problems": problems}), listing.record)
    samples = []
    skipped = list(listing.skipped)
    for (path, index), reason in zip(listing.candidates, reasons, strict=True):
        if reason is None:
            samples.append((path, index))
        elif reason.startswith("truncated"):
            samples.append((path, index))
            skipped.append(SkippedFile(path, reason, kept=True))
        else:
            skipped.append(SkippedFile(path, reason))
    if not samples:
        raise DataError(f"{printable(listing.directory)} has no readable images")
    return Split(listing.split, samples, skipped)


def scan_split(root: Path, split: str, folders: list[str], workers: int = 0, record_dir: Path | None = None) -> Split:
    """Lists and checks every image of one split: `list_split`, then `check_splits`."""
    return check_splits([list_split(root, split, folders, record_dir)], workers)[0]


def check_classes_have_images(folders: list[str], splits: dict[str, Split]) -> None:
    """A class without a training image cannot be learned: a DataError naming each.

    A class with training images but none in valid or test is only logged: its accuracy there is null.
    """
    counts = {name: Counter(index for _, index in split.samples) for name, split in splits.items()}
    untrainable = [printable(folder) for index, folder in enumerate(folders) if not counts["train"][index]]
    if untrainable:
        raise DataError(
            f"{len(untrainable)} class folder(s) have no usable training image: {', '.join(untrainable)}"
            " (add images or remove the folder from every split; skipped_files.txt lists the files left out)"
        )
    for name in (n for n in counts if n != "train"):
        unseen = [printable(folder) for index, folder in enumerate(folders) if not counts[name][index]]
        if unseen:
            log.warning("no %s image for %d class(es): %s", name, len(unseen), ", ".join(unseen))


def write_skipped_report(splits: Iterable[Split], path: Path) -> int:
    """Writes one `path<TAB>kept|skipped<TAB>reason` line per reported file; returns the count.

    Names are `printable`: any bytes survive, and a tab or newline in a name cannot break a line.
    """
    rows = [item for split in splits for item in split.skipped]
    lines = [f"{printable(item.path)}\t{'kept' if item.kept else 'skipped'}\t{printable(item.reason)}" for item in rows]
    atomic_write_text("".join(line + "\n" for line in lines), path)
    return len(rows)
