"""`up`, `down` and `status` subcommands: `python -m deploy up RUN key=value ...`.

`add_commands` plugs them into `python -m deploy`; `main` runs them on their own.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable

from omegaconf import DictConfig

from deploy.cloud import orchestrator
from deploy.cloud.config import load_config
from dogbreed.errors import DogbreedError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `up`, `down` and `status`; each sets `func(args) -> exit code` on the parsed args."""
    up = subparsers.add_parser("up", help="deploy a trained run: endpoint, autoscaling, Lambda")
    up.add_argument("run", help="run dir or s3:// prefix with model.pth and labels.json")
    up.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.instance_type=ml.c5.xlarge")
    up.set_defaults(func=_up)
    down = subparsers.add_parser("down", help="delete everything `up` created for deploy.name")
    down.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.delete_artifacts=true")
    down.set_defaults(func=_down)
    status = subparsers.add_parser("status", help="show each deployed resource and its state")
    status.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.name=dogbreed-dev")
    status.set_defaults(func=_status)


def main(argv: list[str] | None = None) -> int:
    """`python -m deploy.cloud.cli up|down|status ...`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m deploy.cloud.cli", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _command(body: Callable[[argparse.Namespace, DictConfig, orchestrator.Clients], int]) -> Callable[..., int]:
    """Loads config and clients for a subcommand; a DogbreedError is printed without a traceback (exit 1)."""

    @functools.wraps(body)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            cfg = load_config(args.overrides)
            return body(args, cfg, orchestrator.Clients.create(cfg.deploy.region))
        except DogbreedError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    return wrapper


@_command
def _up(args: argparse.Namespace, cfg: DictConfig, clients: orchestrator.Clients) -> int:
    changes = orchestrator.up(cfg, args.run, clients)
    print("\n".join(changes) if changes else "up to date: nothing changed")
    return 0


@_command
def _down(args: argparse.Namespace, cfg: DictConfig, clients: orchestrator.Clients) -> int:
    removed = orchestrator.down(cfg, clients)
    print("\n".join(f"deleted {item}" for item in removed) if removed else "nothing to delete")
    return 0


@_command
def _status(args: argparse.Namespace, cfg: DictConfig, clients: orchestrator.Clients) -> int:
    rows = orchestrator.status(cfg, clients)
    width = max(len(kind) for kind, _, _ in rows)
    for kind, name, state in rows:
        print(f"{kind:<{width}}  {name}  {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
