"""Fetching the public dogImages zip: download, verify, extract, once.

The zip is written to `<name>.part` and renamed only when complete, then
checked (zip CRCs, the three splits, the expected class count) before anything
is extracted, so an interrupted or corrupt download never looks like a dataset.
"""

from __future__ import annotations

import http.client
import logging
import shutil
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from dogbreed.data.folders import SPLITS
from dogbreed.errors import DataError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def download_file(url: str, destination: Path, timeout_s: float = 30.0) -> Path:
    """Streams `url` to `destination` through a `.part` file, with a progress bar."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                partial.open("wb") as out,
                tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
        received = partial.stat().st_size
        if total is not None and received != total:
            raise DataError(f"download of {url} stopped early: {received} of {total} bytes")
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets, short reads
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DataError(f"could not download {url} ({reason})") from err
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(destination)
    return destination


def verify_dogimages_zip(archive: Path, expected_classes: int | None) -> str:
    """Checks the archive and returns the folder inside it that holds the splits."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad_member = zf.testzip()
            names = zf.namelist()
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive} is not a valid zip file ({err})") from err
    if bad_member is not None:
        raise DataError(f"{archive} is corrupt: CRC check failed for {bad_member}")

    classes: dict[tuple[str, str], set[str]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if parts and parts[0] == "__MACOSX":  # resource forks added by macOS zip tools
            continue
        for depth, part in enumerate(parts[:-1]):
            if part in SPLITS and depth + 1 < len(parts) - 1:
                prefix = "/".join(parts[:depth])
                classes.setdefault((prefix, part), set()).add(parts[depth + 1])
                break
    prefixes = {prefix for prefix, _ in classes}
    for prefix in sorted(prefixes):
        found = {split: classes.get((prefix, split), set()) for split in SPLITS}
        if all(found.values()):
            counts = {split: len(folders) for split, folders in found.items()}
            if expected_classes is not None and any(c != expected_classes for c in counts.values()):
                raise DataError(f"{archive} has {counts} class folders per split, expected {expected_classes}")
            return prefix
    raise DataError(f"{archive} does not contain the {'/'.join(SPLITS)} split folders")


def fetch_dogimages(root: Path, url: str, expected_classes: int | None) -> Path:
    """Downloads, verifies and extracts the dataset so that `root` holds the splits."""
    archive = root.parent / (PurePosixPath(url).name or "dogImages.zip")
    if not archive.exists():
        log.info("%s not found; downloading %s", root, url)
        try:
            download_file(url, archive)
        except DataError as err:
            raise DataError(
                f"{err}.\nThe dogImages dataset is not at {root} and could not be downloaded. "
                f"Either point data.root=... at a copy (layout {{train,valid,test}}/NNN.Breed/*.jpg, "
                f"a local folder) or train on generated images with data=synthetic."
            ) from None
    inner = verify_dogimages_zip(archive, expected_classes)
    staging = root.parent / (root.name + ".extracting")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.namelist() if not inner or m.startswith(inner + "/")]
        zf.extractall(staging, members=[m for m in members if _is_safe_member(m)])
    extracted = staging / inner if inner else staging
    extracted.replace(root)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("extracted %s to %s", archive.name, root)
    return root


def _is_safe_member(name: str) -> bool:
    """Rejects absolute paths and `..` so a crafted zip cannot write outside the target."""
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts
