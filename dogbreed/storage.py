"""Run artifacts in S3: verified uploads, the `push` retry command, checkpoint lookup and download.

Uploads go through boto3's transfer manager (multipart, concurrent parts) with SHA-256
checksums that S3 checks on receipt; afterwards `head_object` must report the local size
and checksum, else the object is deleted and the upload retried. A failed multipart
upload is aborted (by s3transfer at once, or by the next attempt when S3 was down), so a
key never holds a partial object that looks complete. Credentials, region and endpoint
come from the standard boto3 chain (instance profile on EC2, `AWS_ENDPOINT_URL`).

    python -m dogbreed.storage push RUN_DIR s3://bucket/prefix/run-name
    python -m dogbreed.storage sync s3://bucket/dogImages/ data/s3cache/bucket/dogImages   (see dogbreed.datasync)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from omegaconf import OmegaConf
from s3transfer.utils import ChunksizeAdjuster

from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)

MiB = 1024 * 1024
RESOLVED_CONFIG_NAME = "config.yaml"
# Uploads that fail in these ways are worth another try; anything else is a bug or bad input.
TRANSIENT = (BotoCoreError, ClientError, S3UploadFailedError)


class UploadError(DogbreedError):
    """Some artifacts could not be uploaded; they are all still in the run directory."""


class VerificationError(Exception):
    """The object S3 holds after an upload does not match the local file."""


@dataclass(frozen=True)
class S3Location:
    """An `s3://bucket/key` address; `key` is a prefix when it ends with `/`."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            raise DogbreedError(f"{uri!r} is not an S3 address; expected s3://bucket/prefix")
        bucket, _, key = uri[5:].partition("/")
        return cls(bucket, key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Location:
        base = self.key.rstrip("/")
        return S3Location(self.bucket, f"{base}/{name}" if base else name)

    def as_prefix(self) -> S3Location:
        return self if not self.key or self.key.endswith("/") else S3Location(self.bucket, self.key + "/")


@dataclass(frozen=True)
class Digest:
    """A file's size and SHA-256, whole and as S3 computes it for a multipart upload."""

    size: int
    sha256: str
    full_b64: str
    composite_b64: str

    def expected_checksum(self, threshold: int) -> str:
        # s3transfer switches to multipart at size >= threshold; S3 then checksums the part checksums.
        return self.full_b64 if self.size < threshold else self.composite_b64


def file_digest(path: Path, part_size: int) -> Digest:
    whole = hashlib.sha256()
    parts = []
    with path.open("rb") as source:
        while chunk := source.read(part_size):
            whole.update(chunk)
            parts.append(hashlib.sha256(chunk).digest())
    composite = hashlib.sha256(b"".join(parts)).digest()
    return Digest(
        path.stat().st_size,
        whole.hexdigest(),
        base64.b64encode(whole.digest()).decode(),
        base64.b64encode(composite).decode(),
    )


def sha256_of(path: Path) -> str:
    return file_digest(path, 8 * MiB).sha256


@dataclass(frozen=True)
class UploadSettings:
    """How hard to try, and how the transfer manager splits and parallelises a file."""

    attempts: int = 3
    backoff_s: float = 2.0
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 8

    @classmethod
    def from_config(cls, storage: Any) -> UploadSettings:
        return cls(
            attempts=int(storage.upload_attempts),
            backoff_s=float(storage.retry_backoff_s),
            multipart_threshold=int(storage.multipart_threshold_mb * MiB),
            multipart_chunksize=int(storage.multipart_chunk_mb * MiB),
            max_concurrency=int(storage.max_concurrency),
        )

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
        )

    def part_size(self, size: int) -> int:
        # The same adjustment s3transfer makes for files that would need more than 10,000 parts.
        return ChunksizeAdjuster().adjust_chunksize(self.multipart_chunksize, size)


def make_client(storage: Any | None = None) -> Any:
    """An S3 client from the standard chain; `storage` config sets retries and timeouts."""
    if storage is None:
        return boto3.client("s3", config=Config(retries={"mode": "standard"}))
    config = Config(
        retries={"mode": "standard", "max_attempts": int(storage.request_attempts)},
        connect_timeout=float(storage.connect_timeout_s),
        read_timeout=float(storage.read_timeout_s),
    )
    return boto3.client("s3", config=config)


def error_code(err: Exception) -> str:
    return err.response["Error"]["Code"] if isinstance(err, ClientError) else type(err).__name__


class S3Uploader:
    """Verified, retried uploads of local files to S3 keys."""

    def __init__(self, client: Any, settings: UploadSettings) -> None:
        self.client = client
        self.settings = settings

    def upload(self, path: Path, dest: S3Location) -> None:
        """Uploads `path` to `dest` unless S3 already holds the same bytes; raises after the last attempt."""
        digest = file_digest(path, self.settings.part_size(path.stat().st_size))
        if self.holds(dest, digest):
            log.info("%s already in S3 at %s", path.name, dest.uri)
            return
        for attempt in range(1, self.settings.attempts + 1):
            try:
                self.abort_incomplete(dest)
                self.client.upload_file(
                    str(path),
                    dest.bucket,
                    dest.key,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": digest.sha256}},
                    Config=self.settings.transfer_config(),
                )
                self.verify(dest, digest)
                log.info("uploaded %s to %s (%d bytes, sha256 verified)", path.name, dest.uri, digest.size)
                return
            except (*TRANSIENT, VerificationError) as err:
                log.warning(
                    "upload of %s to %s failed (try %d/%d): %s", path, dest.uri, attempt, self.settings.attempts, err
                )
                if attempt == self.settings.attempts:
                    raise
                time.sleep(self.settings.backoff_s * 2 ** (attempt - 1))

    def holds(self, dest: S3Location, digest: Digest) -> bool:
        """True when `dest` exists with this file's size and SHA-256 (a finished earlier upload)."""
        try:
            head = self.client.head_object(Bucket=dest.bucket, Key=dest.key)
        except ClientError as err:
            if error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        except BotoCoreError:
            return False  # unreachable: the upload attempts will report it
        return head["ContentLength"] == digest.size and head.get("Metadata", {}).get("sha256") == digest.sha256

    def verify(self, dest: S3Location, digest: Digest) -> None:
        head = self.client.head_object(Bucket=dest.bucket, Key=dest.key, ChecksumMode="ENABLED")
        # Real S3 suffixes multipart checksums with "-<parts>"; moto does not.
        checksum = head.get("ChecksumSHA256", "").split("-")[0]
        expected = digest.expected_checksum(self.settings.multipart_threshold)
        if head["ContentLength"] != digest.size or checksum != expected:
            # Never leave an object behind that looks complete but is not this file.
            self.client.delete_object(Bucket=dest.bucket, Key=dest.key)
            raise VerificationError(
                f"{dest.uri}: S3 has {head['ContentLength']} bytes, sha256 {checksum or 'missing'}; "
                f"expected {digest.size} bytes, sha256 {expected}"
            )

    def abort_incomplete(self, dest: S3Location) -> None:
        """Aborts multipart uploads of `dest` left by an attempt that could not clean up (S3 was down)."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=dest.bucket, Prefix=dest.key)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] == dest.key:
                        self.client.abort_multipart_upload(
                            Bucket=dest.bucket, Key=dest.key, UploadId=upload["UploadId"]
                        )
                        log.info("aborted an incomplete multipart upload of %s", dest.uri)
        except ClientError as err:
            if error_code(err) != "AccessDenied":
                raise
            # Without s3:ListBucketMultipartUploads a bucket lifecycle rule has to clean these up.
            log.debug("cannot list multipart uploads of %s: %s", dest.uri, err)


def run_files(run_dir: Path) -> list[Path]:
    """Every artifact of a run, relative to it; atomic-write leftovers (`.*.tmp`) are not artifacts."""
    return sorted(
        path.relative_to(run_dir)
        for path in run_dir.rglob("*")
        if path.is_file() and not (path.name.startswith(".") and path.name.endswith(".tmp"))
    )


def push_command(run_dir: Path, dest: S3Location) -> str:
    return shlex.join(["python", "-m", "dogbreed.storage", "push", str(run_dir.resolve()), dest.uri])


def push(uploader: S3Uploader, run_dir: Path, dest: S3Location) -> list[Path]:
    """Uploads every artifact of `run_dir` under `dest`; returns the files that could not be uploaded.

    Once a file fails because S3 cannot be reached at all, the rest are not tried: with
    timeouts, each would take minutes to fail the same way.
    """
    files = run_files(run_dir)
    failed = []
    for index, relative in enumerate(files):
        try:
            uploader.upload(run_dir / relative, dest.child(relative.as_posix()))
        except (*TRANSIENT, VerificationError) as err:
            log.error("could not upload %s: %s", relative, err)
            if isinstance(err, BotoCoreError):
                return [*failed, *files[index:]]
            failed.append(relative)
    return failed


def upload_failure(run_dir: Path, dest: S3Location, failed: list[Path]) -> UploadError:
    names = ", ".join(str(path) for path in failed)
    return UploadError(
        f"{len(failed)} artifact(s) not uploaded to {dest.uri}: {names}. Everything is kept in {run_dir}; "
        f"upload it when S3 is reachable with:\n  {push_command(run_dir, dest)}"
    )


def head_or_none(client: Any, location: S3Location) -> dict[str, Any] | None:
    try:
        return client.head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as err:
        if error_code(err) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def unfinished_checkpoint(
    client: Any, run: S3Location, checkpoint_name: str
) -> tuple[S3Location, dict[str, Any]] | None:
    """The run's checkpoint in S3 and its `head_object`, unless the run finished (has metrics.json)."""
    location = run.child(checkpoint_name)
    found = head_or_none(client, location)
    if found is None or head_or_none(client, run.child("metrics.json")) is not None:
        return None
    return location, found


def download_verified(client: Any, source: S3Location, dest: Path) -> Path:
    """Downloads `source` to `dest` and checks it against the SHA-256 recorded at upload."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        head = client.head_object(Bucket=source.bucket, Key=source.key)
        client.download_file(source.bucket, source.key, str(dest))
    except ClientError as err:
        raise DogbreedError(f"cannot download {source.uri}: {error_code(err)} ({err})") from None
    expected = head.get("Metadata", {}).get("sha256")
    if expected and sha256_of(dest) != expected:
        dest.unlink()
        raise DogbreedError(f"{source.uri} does not match the sha256 recorded at upload; download it again")
    log.info("downloaded %s to %s", source.uri, dest)
    return dest


def run_name(cfg: Any, output_dir: Path) -> str:
    """`storage.run_name`, else the run dir relative to paths.output_root (or the working dir)."""
    if cfg.storage.get("run_name"):
        return str(cfg.storage.run_name)
    run = output_dir.resolve()
    for base in (Path(cfg.paths.output_root).resolve(), Path.cwd()):
        if run.is_relative_to(base) and run != base:
            return run.relative_to(base).as_posix()
    return run.name


def run_location(cfg: Any, output_dir: Path) -> S3Location:
    """Where the run's artifacts go: `<storage.s3_uri>/<run name>`."""
    if not cfg.storage.get("s3_uri"):
        raise DogbreedError(
            "storage=s3 needs storage.s3_uri=s3://bucket/prefix (or DOGBREED_S3_URI in the environment)"
        )
    return S3Location.parse(str(cfg.storage.s3_uri)).child(run_name(cfg, output_dir))


class RunUploads:
    """The S3 side of one training run: the checkpoint after each epoch, every artifact at the end.

    A failed upload never stops training; the files stay in the run dir and `finish` reports them.
    """

    def __init__(self, uploader: S3Uploader, run_dir: Path, name: str, dest: S3Location, every_epoch: bool) -> None:
        self.uploader = uploader
        self.run_dir = run_dir
        self.name = name
        self.dest = dest
        self.every_epoch = every_epoch

    @classmethod
    def from_config(cls, cfg: Any, run_dir: Path) -> RunUploads | None:
        """None unless `storage.backend` is s3."""
        if cfg.storage.backend != "s3":
            return None
        dest = run_location(cfg, run_dir)
        log.info("artifacts will be uploaded to %s", dest.uri)
        # .hydra/config.yaml keeps interpolations; this copy says exactly what ran.
        (run_dir / RESOLVED_CONFIG_NAME).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        uploader = S3Uploader(make_client(cfg.storage), UploadSettings.from_config(cfg.storage))
        return cls(uploader, run_dir, run_name(cfg, run_dir), dest, bool(cfg.storage.upload_checkpoints))

    def checkpoint(self, path: Path, always: bool = False) -> bool:
        """Uploads the checkpoint if `storage.upload_checkpoints` (or `always`); True when S3 now holds it."""
        if not (self.every_epoch or always):
            return False
        try:
            self.uploader.upload(path, self.dest.child(path.relative_to(self.run_dir).as_posix()))
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


def main(argv: list[str] | None = None) -> int:
    """`push` or `sync`; returns 0, or exits with the status and line of `dogbreed.entry`."""
    # The command line's own imports; the module above is the library that training uses.
    import boto3
    from botocore.exceptions import NoCredentialsError

    from dogbreed.entry import DEBUG_OPTION, reported_errors

    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.storage", description=__doc__.split("\n\n")[0], parents=[DEBUG_OPTION]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    push_parser = commands.add_parser(
        "push", help="upload a run directory to s3://bucket/prefix/run-name (verified)", parents=[DEBUG_OPTION]
    )
    push_parser.add_argument("run_dir", type=Path)
    push_parser.add_argument("s3_uri")
    sync_parser = commands.add_parser(
        "sync", help="mirror an s3:// prefix into a local folder (only new or changed)", parents=[DEBUG_OPTION]
    )
    sync_parser.add_argument("s3_uri")
    sync_parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors(getattr(args, "debug", False)):
        dest = S3Location.parse(args.s3_uri)
        if args.command == "push" and not args.run_dir.is_dir():
            raise DogbreedError(f"{args.run_dir} is not a directory; pass the run directory to upload")
        client = make_client()
        if boto3.Session().get_credentials() is None:
            # Said once, now, rather than after every file's upload retries have failed.
            raise NoCredentialsError()
        if args.command == "sync":
            from dogbreed.datasync import sync_prefix  # datasync builds on this module

            sync_prefix(client, dest, args.dest)
            return 0
        failed = push(S3Uploader(client, UploadSettings()), args.run_dir, dest)
        if failed:
            raise upload_failure(args.run_dir, dest, failed)
    log.info("%s is complete in %s", args.run_dir, dest.uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
