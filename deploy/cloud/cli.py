"""`up`, `down` and `status` subcommands: `python -m deploy up RUN key=value ...`.

`add_commands` plugs them into `python -m deploy`.
"""

from __future__ import annotations

import argparse

from omegaconf import DictConfig

from deploy.cloud import orchestrator
from deploy.cloud.config import load_config


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `up`, `down` and `status`; each sets `func(args)`, which raises DogbreedError on bad input."""
    up = subparsers.add_parser("up", help="deploy a trained run: endpoint, autoscaling, Lambda")
    up.add_argument("run", help="run dir or s3:// prefix with model.pth and labels.json")
    up.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.instance_type=ml.c5.xlarge")
    up.set_defaults(func=up_command)
    down = subparsers.add_parser("down", help="delete everything `up` created for deploy.name")
    down.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.delete_artifacts=true")
    down.set_defaults(func=down_command)
    status = subparsers.add_parser("status", help="show each deployed resource and its state")
    status.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.name=dogbreed-dev")
    status.set_defaults(func=status_command)


def up_command(args: argparse.Namespace) -> None:
    """Deploys `args.run` and prints what changed."""
    cfg, clients = _setup(args)
    changes = orchestrator.up(cfg, args.run, clients)
    print("\n".join(changes) if changes else "up to date: nothing changed")


def down_command(args: argparse.Namespace) -> None:
    """Deletes the deploy and prints what went."""
    cfg, clients = _setup(args)
    removed = orchestrator.down(cfg, clients)
    print("\n".join(f"deleted {item}" for item in removed) if removed else "nothing to delete")


def status_command(args: argparse.Namespace) -> None:
    """Prints each resource of the deploy and its state."""
    cfg, clients = _setup(args)
    rows = orchestrator.status(cfg, clients)
    width = max(len(kind) for kind, _, _ in rows)
    for kind, name, state in rows:
        print(f"{kind:<{width}}  {name}  {state}")


def _setup(args: argparse.Namespace) -> tuple[DictConfig, orchestrator.Clients]:
    cfg = load_config(args.overrides)
    return cfg, orchestrator.Clients.create(cfg.deploy.region)
