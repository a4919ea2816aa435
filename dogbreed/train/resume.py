"""Stopping and resuming a run exactly: mid-epoch batch replay, where the checkpoint comes from,
and the command that picks the run up again.

Exactness rests on three facts: the train loader's order is a function of (seed, epoch)
only; the RNG states at the stop are in the checkpoint; and on resume the batches
already trained are fetched again but not trained on, so data-loader workers, whose
seeds also derive from (seed, epoch), draw the same augmentations as before. That costs
decoding part of one epoch once, and holds for any fixed `data.num_workers`.
"""

from __future__ import annotations

import itertools
import logging
import shlex
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from dogbreed.errors import TrainingInterrupted
from dogbreed.storage import location, run_uploads, transfer
from dogbreed.train import checkpoint, distributed
from dogbreed.train.engine import EpochResult
from dogbreed.train.interrupt import StopRequest

log = logging.getLogger(__name__)

RESUME_DOWNLOADS = ".s3-resume"


def stop_agreed(stop: StopRequest) -> bool:
    """Whether to stop now, decided by all ranks together under torchrun.

    Ranks that stopped at different steps would wait forever for each other's gradients,
    so a request on any rank stops every rank after the same step.
    """
    if not distributed.any_rank(stop.requested):
        return False
    if not stop.requested:
        stop.request("another rank was asked to stop", 143)
    return True


class EpochBatches:
    """The train loader from batch `start` of an epoch, ending after the step in which a stop was requested."""

    def __init__(self, loader: DataLoader, start: int, limit: int | None, stop: StopRequest, desc: str) -> None:
        self.loader = loader
        self.total = min(len(loader), limit) if limit else len(loader)
        self.start = start
        self.stop = stop
        self.desc = desc
        self.done = start
        self.stopped = False

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        if self.start:
            log.info("%s: resuming at batch %d of %d", self.desc, self.start + 1, self.total)
            # Fetching draws augmentation randomness; the checkpoint's RNG state is what the next step saw.
            state = checkpoint.rng_state()
            for _ in range(self.start):
                next(batches)
            checkpoint.restore_rng_state(state)
        else:
            log.info("%s: started (%d batches)", self.desc, self.total)
        for batch in itertools.islice(batches, len(self)):
            yield batch
            self.done += 1
            if stop_agreed(self.stop) and self.done < self.total:
                self.stopped = True
                return


def merge_partial(partial: dict[str, float] | None, fit: EpochResult) -> EpochResult:
    """The whole epoch's numbers from the part before an interruption and the part after."""
    if not partial:
        return fit
    images = int(partial["images"]) + fit.images
    return EpochResult(
        (partial["loss_sum"] + fit.loss * fit.images) / images,
        (partial["correct"] + fit.accuracy * fit.images) / images,
        images,
        partial["seconds"] + fit.seconds,
    )


def partial_record(fit: EpochResult) -> dict[str, float]:
    return {
        "loss_sum": fit.loss * fit.images,
        "correct": fit.accuracy * fit.images,
        "images": fit.images,
        "seconds": fit.seconds,
    }


def resolve_resume(
    setting: str | None,
    output_root: Path,
    run: location.S3Location | None,
    make_s3_client: Callable[[], Any],
) -> Path | None:
    """The checkpoint `trainer.resume` names: a path, an s3:// URI, or `auto`.

    `auto` takes the newest unfinished local run under `output_root` and, when the run
    has an S3 location, its checkpoint in S3, whichever is newer.

    Args:
        setting: `trainer.resume`; empty starts afresh.
        output_root: Where unfinished local runs are looked for; downloads go under it.
        run: This run's S3 location with storage=s3, else None.
        make_s3_client: Called only when S3 is read, so local resumes need no credentials.
    """
    if not setting:
        return None
    downloads = output_root / RESUME_DOWNLOADS
    if str(setting).startswith("s3://"):
        source = location.S3Location.parse(str(setting))
        return transfer.download_verified(make_s3_client(), source, downloads / download_name(source))
    if setting != "auto":
        return Path(setting)
    local = checkpoint.find_resumable(output_root)
    remote = None
    if run is not None:
        client = make_s3_client()
        try:
            remote = run_uploads.unfinished_checkpoint(client, run, checkpoint.CHECKPOINT_NAME)
        except location.TRANSIENT as err:
            log.warning("trainer.resume=auto: cannot look in S3 (%s); local runs only", err)
    if remote is None:
        if local is None:
            log.info("trainer.resume=auto: no unfinished run found; starting fresh")
        return local
    found, head = remote
    if local is not None and (
        local.stat().st_mtime >= head["LastModified"].timestamp()
        or transfer.sha256_file(local) == head.get("Metadata", {}).get("sha256")
    ):
        return local
    return transfer.download_verified(client, found, downloads / download_name(found))


def download_name(source: location.S3Location) -> str:
    # Flat, so `find_resumable`'s **/checkpoint.pt never mistakes a download for a run.
    return f"{source.bucket}_{source.key.replace('/', '_')}"


def resume_command(checkpoint_ref: str, overrides: Sequence[str], extra: list[str]) -> str:
    """`python train.py` with the run's `overrides`, resuming from `checkpoint_ref`."""
    replaced = ("trainer.resume=", "hydra.run.dir=", "storage.run_name=")
    kept = [item for item in overrides if not item.startswith(replaced)]
    return shlex.join(["python", "train.py", *kept, f"trainer.resume={checkpoint_ref}", *extra])


def upload_and_explain_stop(
    stop: StopRequest,
    where: str,
    checkpoint_path: Path,
    output_dir: Path,
    uploads: run_uploads.RunUploads | None,
    overrides: Sequence[str],
) -> TrainingInterrupted:
    """Uploads the checkpoint just written; returns the exception that says how to resume.

    The upload gets `storage.interrupt_upload_budget_s` (`RunUploads.checkpoint(always=True)`),
    so a hung S3 cannot keep the run past a spot notice's two minutes. The message names the
    local checkpoint and, when the upload worked, the S3 copy with the command that resumes
    on another machine; the caller raises it.
    """
    lines = [
        f"stopped: {stop.reason}, {where}.",
        f"Checkpoint: {checkpoint_path}",
        "Resume here with:",
        "  " + resume_command(str(checkpoint_path.resolve()), overrides, [f"hydra.run.dir={output_dir.resolve()}"]),
    ]
    if uploads is not None:
        remote = uploads.dest.child(checkpoint.CHECKPOINT_NAME)
        if uploads.checkpoint(checkpoint_path, always=True):
            lines += [
                f"Uploaded to {remote.uri}; resume on another machine with:",
                "  " + resume_command(remote.uri, overrides, [f"storage.run_name={uploads.name}"]),
            ]
        else:
            push = run_uploads.push_command(output_dir, uploads.dest)
            lines.append(f"The checkpoint is NOT in S3; upload the run with: {push}")
    return TrainingInterrupted("\n".join(lines), stop.exit_code)
