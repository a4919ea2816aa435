"""The dataset's folders: splits, breed folders and the names read off them.

Layout: `<root>/{train,valid,test}/NNN.Breed_name/*.jpg`. Breed names come from
the folder names (`001.Affenpinscher` -> `Affenpinscher`) and the class index is
the sorted folder order, identical in every split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from dogbreed.errors import DataError

log = logging.getLogger(__name__)


SPLITS = ("train", "valid", "test")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def printable(name: str | Path) -> str:
    """A file or folder name as text that prints, logs and encodes anywhere.

    Bytes that are not UTF-8 (lone surrogates after `os.fsdecode`) become `\\xNN`, and
    control characters (a tab or newline in a name) their backslash escape.
    """
    text = os.fsencode(name).decode("utf-8", errors="backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def breed_name(folder_name: str) -> str:
    """`001.Affenpinscher` -> `Affenpinscher`, `011.Australian_cattle_dog` -> `Australian cattle dog`.

    Odd bytes in the folder name are escaped (`printable`), so labels and plots can show it.
    """
    _, _, name = folder_name.partition(".")
    return printable(name or folder_name).replace("_", " ")


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the visible class folders in one split."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def discover_classes(root: Path, splits: Iterable[str] = SPLITS) -> list[str]:
    """Returns the class folder names shared by all splits, or raises naming the differences."""
    missing = [s for s in splits if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root} is not a dogImages-shaped folder: missing split folder(s) {', '.join(missing)}"
            f" (expected {root}/{{{','.join(SPLITS)}}}/NNN.Breed_name/*.jpg)"
        )
    per_split = {s: class_folders(root / s) for s in splits}
    reference_split, reference = next(iter(per_split.items()))
    if not reference:
        raise DataError(f"{root / reference_split} has no class folders")
    problems = []
    for split, folders in per_split.items():
        only_here = sorted(set(folders) - set(reference))
        absent_here = sorted(set(reference) - set(folders))
        if only_here:
            problems.append(f"only in {split}: {', '.join(map(printable, only_here))}")
        if absent_here:
            problems.append(f"missing from {split}: {', '.join(map(printable, absent_here))}")
    if problems:
        raise DataError(f"the splits under {root} have different class sets; " + "; ".join(problems))
    return reference
