"""python -m ami {launch,status,ssh,logs,pull,down,policy} [ami.key=value ...] | choose [--flags]."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
from pathlib import Path

import boto3
from botocore.config import Config
from omegaconf import OmegaConf

from ami import choose, launcher, policies
from ami.config import load_config
from ami.errors import AmiError
from ami.pricing import PriceTable, live_prices
from dogbreed.cli import DEBUG_OPTION, reported_errors

log = logging.getLogger(__name__)

# Offline the price lookup must give up quickly and fall back to the shipped table.
QUICK = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line (sys.argv when `argv` is None); `choose` also gets `throughput`."""
    parser = argparse.ArgumentParser(prog="python -m ami", description=__doc__, parents=[DEBUG_OPTION])
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "launch": "create or reuse the security group, role, key pair and instance(s); print the ssh command",
        "status": "list the instances of ami.name",
        "ssh": "ssh into the first running instance",
        "logs": "print train.log from CloudWatch Logs (over SSH when it has none)",
        "pull": "download a run directory from <ami.s3_uri>/runs/ to outputs/ (every file SHA-256 checked)",
        "down": "cancel spot requests, terminate the instances, delete the group, profile, role and created key pair",
        "policy": "print the IAM policy the user of ami needs on the EC2 side (ami.region, ami.s3_uri)",
    }
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text, parents=[DEBUG_OPTION])
        words = "[RUN] and config overrides" if name == "pull" else "config overrides"
        sub.add_argument("overrides", nargs="*", help=f"{words}, e.g. ami.instance_type=g4dn.xlarge")
        if name == "logs":
            sub.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)")
        if name == "launch":
            sub.add_argument(
                "--skip-preflight",
                action="store_true",
                help="do not read Service Quotas or simulate permissions first (for callers that may not)",
            )
    pick = commands.add_parser("choose", help="list instance types that fit, cheapest first", parents=[DEBUG_OPTION])
    pick.add_argument("--min-vcpus", type=int, default=0)
    pick.add_argument("--min-memory-gb", type=float, default=0, help="GiB of RAM")
    pick.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None, help="only GPU / only CPU types")
    pick.add_argument("--min-gpu-memory-gb", type=float, default=0)
    pick.add_argument("--spot", action="store_true", help="show spot prices and cost runs at spot prices")
    pick.add_argument("--region", default=None, help="default: boto3's region, else us-east-1")
    pick.add_argument("--pricing-region", default="us-east-1", help="Pricing API endpoint (us-east-1, ap-south-1)")
    pick.add_argument(
        "--images-per-second",
        action="append",
        default=[],
        metavar="N|TYPE=N",
        help="measured training throughput; repeat TYPE=N per type (default: ami/throughput.json, from the benchmarks)",
    )
    pick.add_argument(
        "--training",
        choices=["head", "full"],
        default="head",
        help="what the run trains, for the default images/s: head only (the default config) or full fine-tune",
    )
    pick.add_argument("--images", type=int, default=choose.DOGIMAGES_TRAIN_IMAGES, help="images per epoch")
    pick.add_argument("--epochs", type=int, default=10)
    pick.add_argument("--offline", action="store_true", help="use only the shipped price table")
    args = parser.parse_args(argv)
    if args.command == "pull":
        # RUN is the one word without `=`; everything else is an override.
        runs = [word for word in args.overrides if "=" not in word]
        if len(runs) > 1:
            parser.error(f"pull takes one run name, got {' '.join(runs)}")
        args.run = runs[0] if runs else None
        args.overrides = [word for word in args.overrides if "=" in word]
    if args.command == "choose":
        try:  # a malformed flag value is bad usage, reported like argparse's own errors
            args.throughput = choose.parse_throughput(args.images_per_second)
        except AmiError as err:
            pick.error(str(err))
    return args


def run_choose(args: argparse.Namespace) -> None:
    """Prints the instance types that fit, cheapest first, priced live unless --offline."""
    table = PriceTable.shipped()
    region = args.region or boto3.Session().region_name or "us-east-1"
    needs = choose.Requirements(args.min_vcpus, args.min_memory_gb, args.gpu, args.min_gpu_memory_gb)
    candidates = [row.instance_type for row in choose.options(table, region, needs, {}, 0, 0, False)]
    if not args.offline and candidates:
        pricing = boto3.client("pricing", region_name=args.pricing_region, config=QUICK)
        ec2 = boto3.client("ec2", region_name=region, config=QUICK) if args.spot else None
        table = live_prices(table, region, candidates, pricing, ec2)
    defaults, measured_on = choose.default_throughput(table.specs, args.training)
    # A single --images-per-second N applies to every type, so it replaces the defaults wholesale.
    throughput = args.throughput if "*" in args.throughput else {**defaults, **args.throughput}
    rows = choose.options(table, region, needs, throughput, args.images, args.epochs, args.spot)
    if not rows:
        raise AmiError("no instance type in the table fits; relax --min-* or --gpu/--no-gpu")
    shipped = f"shipped table of {table.as_of}"
    origin = table.origin or {"on_demand": shipped, "spot": f"{shipped} (estimate)"}
    spot_note = f"; spot: {origin['spot']}" if args.spot else ""
    print(f"region {region}; on-demand prices: {origin['on_demand']}{spot_note}")
    source = (
        "the given images/s"
        if "*" in args.throughput
        else (
            f"{args.training} training images/s from the benchmarks of {measured_on} (ami/throughput.json)"
            + (", or as given" if args.throughput else "")
        )
    )
    print(f"run = {args.images} images x {args.epochs} epochs at {source}")
    print(choose.format_table(rows, args.spot))


def print_policy(args: argparse.Namespace) -> None:
    """The operator policy for the configured region, to attach beside deploy/iam/deployer-policy.json."""
    ami = load_config(args.overrides).ami
    session = boto3.Session(region_name=ami.region)
    if session.region_name is None:
        raise AmiError("no AWS region: set ami.region=<region> (the policy allows that region only)")
    s3_uri = None if OmegaConf.is_missing(ami, "s3_uri") else str(ami.s3_uri)
    partition = session.get_partition_for_region(session.region_name)
    print(json.dumps(policies.operator_policy(partition, session.region_name, "*", s3_uri), indent=2))


def run_instance_command(args: argparse.Namespace) -> None:
    """launch, status, ssh, logs, pull or down for the instances (and runs) of `ami.name`."""
    if getattr(args, "skip_preflight", False):
        args.overrides.append("ami.preflight=false")
    cfg = load_config(args.overrides)
    clients = launcher.Clients.create(cfg.ami.region)
    if args.command == "launch":
        started = launcher.launch(cfg, clients)
        for instance in started:
            print(launcher.describe(cfg, instance))
        if started[0]["State"]["Name"] == "running":
            print("connect: " + shlex.join(launcher.ssh_command(cfg.ami, started[0])))
        else:  # reused, and stopped by ami.on_finish or the idle watcher
            print(f"{cfg.ami.name}'s instances are {started[0]['State']['Name']}; python -m ami down starts over")
        print("progress: python -m ami logs -f; results: python -m ami pull")
    elif args.command == "status":
        found = launcher.status(cfg, clients)
        print("\n".join(launcher.describe(cfg, i) for i in found) or f"no instances named {cfg.ami.name}")
        for line in launcher.describe_spot_requests(cfg, clients):
            print(line)
    elif args.command == "logs":
        if not launcher.show_logs(cfg, clients, args.follow, print):
            command = launcher.tail_command(cfg, clients, args.follow)
            log.info("no CloudWatch log events yet for %s; reading train.log over SSH", cfg.ami.name)
            os.execvp(command[0], command)
    elif args.command == "pull":
        for path in launcher.pull_run(cfg, clients, args.run, Path("outputs")):
            print(path)
    elif args.command == "ssh":
        command = launcher.ssh_command(cfg.ami, launcher.first_running(cfg, clients))
        os.execvp(command[0], command)
    else:
        removed = launcher.down(cfg, clients)
        print("removed: " + ", ".join(removed) if removed else f"nothing left to remove for {cfg.ami.name}")


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns 0, or exits with the status and line of `dogbreed.cli`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    with reported_errors(getattr(args, "debug", False), region_setting="ami.region=<region>"):
        if args.command == "choose":
            run_choose(args)
        elif args.command == "policy":
            print_policy(args)
        else:
            run_instance_command(args)
    return 0
