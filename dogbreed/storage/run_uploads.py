"""Run artifacts in S3: a run's uploads, the `push` retry command, the checkpoint of an unfinished run.

Every file goes up through `dogbreed.storage.transfer.S3Uploader` (transfer manager, SHA-256 checked by
S3 and by `head_object`, retried, never a partial object that looks complete). A failed
upload never stops training: the files stay in the run directory and `push` finishes the job.
Each upload has a time budget, so a hung S3 delays training by at most that; a bucket that is
missing or not writable fails the run at its start (`dogbreed.storage.probe`), not after the first epoch.

    python -m dogbreed.storage push RUN_DIR s3://bucket/prefix/run-name
    python -m dogbreed.storage put FILE s3://bucket/prefix/run-name/checkpoint.pt   (one file)
    python -m dogbreed.storage sync s3://bucket/dogImages/ data/s3cache/bucket/dogImages   (see dogbreed.storage.mirror)
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError

from dogbreed.errors import DogbreedError
from dogbreed.storage.location import TRANSIENT, S3Location, permanent_failure
from dogbreed.storage.transfer import S3Uploader, UploadSettings, VerificationError, head_or_none

log = logging.getLogger(__name__)

RESOLVED_CONFIG_NAME = "config.yaml"


class UploadError(DogbreedError):
    """Some artifacts could not be uploaded; they are all still in the run directory."""


def run_files(run_dir: Path) -> list[Path]:
    """Every artifact of a run, relative to it; atomic-write leftovers (`.*.tmp`) are not artifacts."""
    return sorted(
        path.relative_to(run_dir)
        for path in run_dir.rglob("*")
        if path.is_file() and not (path.name.startswith(".") and path.name.endswith(".tmp"))
    )


def push_command(run_dir: Path, dest: S3Location) -> str:
    """The shell command that uploads (the rest of) `run_dir` to `dest`."""
    return shlex.join(["python", "-m", "dogbreed.storage", "push", str(run_dir.resolve()), dest.uri])


def push(uploader: S3Uploader, run_dir: Path, dest: S3Location) -> list[Path]:
    """Uploads every artifact of `run_dir` under `dest`; returns the files that could not be uploaded.

    Once a file fails because S3 cannot be reached at all, or refuses in a way no retry
    changes (no such bucket, access denied), the rest are not tried: each would fail the
    same way, after its whole time budget when S3 hangs.
    """
    files = run_files(run_dir)
    failed: list[Path] = []
    for index, relative in enumerate(files):
        try:
            uploader.upload(run_dir / relative, dest.child(relative.as_posix()))
        except (*TRANSIENT, VerificationError) as err:
            log.error("could not upload %s: %s", relative, err)
            if isinstance(err, BotoCoreError) or permanent_failure(err):
                return [*failed, *files[index:]]
            failed.append(relative)
    return failed


def upload_failure(run_dir: Path, dest: S3Location, failed: list[Path]) -> UploadError:
    """The error naming the files `push` could not upload and the command that retries."""
    names = ", ".join(str(path) for path in failed)
    return UploadError(
        f"{len(failed)} artifact(s) not uploaded to {dest.uri}: {names}. Everything is kept in {run_dir}; "
        f"upload it when S3 is reachable with:\n  {push_command(run_dir, dest)}"
    )


def unfinished_checkpoint(
    client: Any, run: S3Location, checkpoint_name: str
) -> tuple[S3Location, dict[str, Any]] | None:
    """The run's checkpoint in S3 and its `head_object`, unless the run finished (has metrics.json)."""
    location = run.child(checkpoint_name)
    found = head_or_none(client, location)
    if found is None or head_or_none(client, run.child("metrics.json")) is not None:
        return None
    return location, found


class StopFlag(Protocol):
    """What `RunUploads` needs of `dogbreed.train.interrupt.StopRequest`."""

    @property
    def requested(self) -> bool: ...


class RunUploads:
    """The S3 side of one training run: the checkpoint as it is written, every artifact at the end.

    A failed upload never stops training; the files stay in the run dir and `finish` reports them.
    """

    def __init__(
        self,
        uploader: S3Uploader,
        run_dir: Path,
        name: str,
        dest: S3Location,
        every_epoch: bool,
        stop_budget_s: float | None = None,
    ) -> None:
        self.uploader = uploader
        self.run_dir = run_dir
        self.name = name
        self.dest = dest
        self.every_epoch = every_epoch
        self.stop_budget_s = stop_budget_s

    @classmethod
    def start(
        cls,
        run_dir: Path,
        dest: S3Location,
        name: str,
        settings: UploadSettings,
        client: Any,
        every_epoch: bool,
        stop_budget_s: float | None = None,
    ) -> RunUploads:
        """Uploads of `run_dir` to `dest`.

        Args:
            run_dir: the local run directory; artifact keys are paths relative to it.
            dest: the run's S3 folder (`dogbreed.train.settings.run_location`).
            name: the run name, for the resume command on another machine.
            settings: tries, backoff, time budget and multipart split of each upload.
            client: the S3 client to upload with.
            every_epoch: upload the checkpoint each time an epoch writes it, not only on `finish` or interruption.
            stop_budget_s: time budget of the checkpoint upload on a stop (it must fit in a
                spot notice's two minutes); None: the budget of `settings`.
        """
        log.info("artifacts will be uploaded to %s", dest.uri)
        return cls(S3Uploader(client, settings), run_dir, name, dest, every_epoch, stop_budget_s)

    def checkpoint(self, path: Path, always: bool = False, stop: StopFlag | None = None) -> bool:
        """Uploads the checkpoint if `every_epoch` (or `always`, on a stop); True when S3 now holds it.

        An epoch's upload gets the settings' time budget and is given up as soon as `stop` is
        requested, so it never delays the checkpoint a spot notice asks for; the stop's own
        upload (`always`) gets `stop_budget_s`.
        """
        if not (self.every_epoch or always):
            return False
        dest = self.dest.child(path.relative_to(self.run_dir).as_posix())
        try:
            if always:
                self.uploader.upload(path, dest, budget_s=self.stop_budget_s)
            else:
                give_up = None if stop is None else lambda: stop.requested
                self.uploader.upload(path, dest, give_up=give_up)
        except (*TRANSIENT, VerificationError) as err:
            log.warning("checkpoint not uploaded (kept in %s; training goes on): %s", self.run_dir, err)
            return False
        return True

    def finish(self) -> None:
        """Uploads every artifact; raises `UploadError` naming what is not in S3 and how to retry."""
        failed = push(self.uploader, self.run_dir, self.dest)
        if failed:
            raise upload_failure(self.run_dir, self.dest, failed)
        log.info("all artifacts are in %s", self.dest.uri)
