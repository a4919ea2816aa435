"""`python -m dogbreed.storage {push,put,sync}`: a run directory, one file or a prefix, verified."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location, make_client
from dogbreed.storage.mirror import sync_prefix
from dogbreed.storage.run_uploads import push, upload_failure
from dogbreed.storage.transfer import S3Uploader, UploadSettings

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """`push`, `put` or `sync`; returns 0, or exits with the status and line of `dogbreed.cli`."""
    # The command line's own imports; the module above is the library that training uses.
    import boto3
    from botocore.exceptions import NoCredentialsError

    from dogbreed.cli import DEBUG_OPTION, reported_errors

    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.storage", description=__doc__.split("\n\n")[0], parents=[DEBUG_OPTION]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    push_parser = commands.add_parser(
        "push", help="upload a run directory to s3://bucket/prefix/run-name (verified)", parents=[DEBUG_OPTION]
    )
    push_parser.add_argument("run_dir", type=Path)
    push_parser.add_argument("s3_uri")
    put_parser = commands.add_parser(
        "put", help="upload one file to s3://bucket/key (verified; replaces what is there)", parents=[DEBUG_OPTION]
    )
    put_parser.add_argument("file", type=Path)
    put_parser.add_argument("s3_uri")
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
        if args.command == "put" and (not args.file.is_file() or not dest.key or dest.key.endswith("/")):
            raise DogbreedError(f"put takes a file and the object's full s3://bucket/key, got {args.file} {dest.uri}")
        client = make_client()
        if boto3.Session().get_credentials() is None:
            # Said once, now, rather than after every file's upload retries have failed.
            raise NoCredentialsError()
        if args.command == "sync":
            sync_prefix(client, dest, args.dest)
            return 0
        if args.command == "put":
            S3Uploader(client, UploadSettings()).upload(args.file, dest)
            log.info("%s is in %s (sha256 verified)", args.file, dest.uri)
            return 0
        failed = push(S3Uploader(client, UploadSettings()), args.run_dir, dest)
        if failed:
            raise upload_failure(args.run_dir, dest, failed)
    log.info("%s is complete in %s", args.run_dir, dest.uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
