"""Files written whole or not at all: write beside, fsync, rename; and the leftovers of killed writes."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


# `.<name>.<pid>.tmp`: the temporary file of an atomic write by process <pid>.
TEMPORARY_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


# Temporaries older than this process were left by an earlier one, even when their pid was reused.
PROCESS_STARTED = time.time()


class DiskFullError(DogbreedError):
    """A write ran out of disk space or quota; the previous version of the file is untouched."""


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes next to `path`, then renames: a crash or a full disk never leaves a torn file.

    Raises:
        DiskFullError: The disk or the quota is full; names the path, the space needed and free.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as err:  # torch.save wraps the OSError of a write in a RuntimeError
        if _disk_full(err):
            raise _disk_full_error(path, temporary) from err
        raise
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: Path) -> None:
    atomic_write(path, lambda out: out.write(data))


def atomic_write_text(text: str, path: Path) -> None:
    """UTF-8; characters that do not encode (lone surrogates from odd file names) as backslash escapes."""
    atomic_write_bytes(text.encode("utf-8", errors="backslashreplace"), path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` through `atomic_write`."""
    atomic_write(path, lambda out: torch.save(obj, out))


def _disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from or while handling, is ENOSPC or EDQUOT."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _disk_full_error(path: Path, temporary: Path) -> DiskFullError:
    """Names the path, how much was written before the disk filled (or the last version's size), and what is free."""
    needed = max((p.stat().st_size for p in (temporary, path) if p.exists()), default=0)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    return DiskFullError(
        f"no space left on the disk holding {path}: writing it needs at least {_megabytes(needed)}"
        f" and {_megabytes(free)} is free (disk or quota full); free some space and rerun"
        " (trainer.resume=auto continues from the last checkpoint)"
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def remove_stale_temporaries(*directories: Path) -> list[Path]:
    """Deletes the `.<name>.<pid>.tmp` files that killed atomic writes left in `directories`.

    Only ours (that name pattern), and only when their process is gone or the file is older
    than this process (the pid was reused, as in a restarted container); returns what was removed.
    """
    removed = []
    for entry in (e for directory in directories for e in directory.glob(".*.tmp")):
        match = TEMPORARY_PATTERN.match(entry.name)
        if match is None or not entry.is_file():
            continue
        try:
            stale = not _process_alive(int(match["pid"])) or entry.stat().st_mtime < PROCESS_STARTED
            if stale:
                entry.unlink()
                removed.append(entry)
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes: %s", len(removed), removed)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OverflowError, OSError):
        return False
    return True
