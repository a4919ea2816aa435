"""python -m acceptance [--yes] [--endpoint-url URL]: the acceptance run of `make integ` (acceptance/__init__.py)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path

import boto3

from acceptance import steps, sweep
from dogbreed.cli import DEBUG_OPTION, reported_errors

URI_ENV, YES_ENV = "DOGBREED_INTEG_S3_URI", "DOGBREED_INTEG_YES"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m acceptance", description=__doc__, parents=[DEBUG_OPTION])
    parser.add_argument("--yes", action="store_true", help=f"start without asking (or {YES_ENV}=1)")
    parser.add_argument("--s3-uri", default=os.environ.get(URI_ENV), help=f"s3://bucket/prefix (default ${URI_ENV})")
    parser.add_argument("--endpoint-url", help="an AWS emulator (e.g. a moto server) instead of AWS")
    parser.add_argument("--run-id", default=secrets.token_hex(3), help="names and tags the run (default: random)")
    parser.add_argument("--workdir", type=Path, default=Path("outputs/acceptance"))
    parser.add_argument("--poll-s", type=float, default=15.0, help="seconds between status checks")
    parser.add_argument("--ssh-cidr", help="who may SSH into the instance (default: this machine's address)")
    return parser.parse_args(argv)


def shipped_prices() -> dict[str, float]:
    """Hourly on-demand prices of the two types from the project's dated tables (us-east-1)."""
    hosting = json.loads((steps.REPO / "deploy" / "prices.json").read_text())["realtime_per_hour"]
    ec2 = json.loads((steps.REPO / "ami" / "prices.json").read_text())["on_demand"].get("us-east-1", {})
    return {"training": hosting.get(steps.TRAINING_TYPE, 0.0), "ec2": ec2.get(steps.EC2_TYPE, 0.0)}


def run_all(run: steps.Run) -> list[str]:
    """Every step in order, timed; the sweep runs whatever happened, and its findings are returned."""
    failure = None
    for name, step in steps.STEPS:
        started = time.monotonic()
        try:
            step(run)
        except Exception as err:  # the sweep and the report must still run; the error is re-raised below
            run.timings.append((name, time.monotonic() - started, f"failed: {err}"))
            failure = err
            break
        run.timings.append((name, time.monotonic() - started, "ok"))
        print(f"done {name} ({time.monotonic() - started:.0f} s)", flush=True)
    left = sweep.leftovers(run.client, run.run_id, run.name)
    steps.report(run, run.workdir / f"{run.run_id}.md", left)
    if failure is not None:
        raise failure
    return left


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    with reported_errors(getattr(args, "debug", False)):
        if not args.s3_uri or (args.endpoint_url is None and boto3.Session().get_credentials() is None):
            print(
                f"make integ: skipped; set {URI_ENV}=s3://bucket/prefix and AWS credentials to run it (nothing created)"
            )
            return 0
        run = steps.Run(
            args.s3_uri, args.run_id, args.workdir / args.run_id, args.endpoint_url, args.poll_s, args.ssh_cidr
        )
        print("\n".join(steps.plan(run, shipped_prices())))
        if not (args.yes or os.environ.get(YES_ENV) == "1"):
            print(f"nothing created; rerun with --yes (or {YES_ENV}=1) to start")
            return 0
        left = run_all(run)
        print(f"report: {run.workdir / (run.run_id + '.md')}")
        if left:
            raise steps.AcceptanceError(f"{len(left)} resource(s) left: {', '.join(left)}")
        print("leak sweep: nothing left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
