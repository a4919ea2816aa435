"""python -m deploy: package, serve, invoke and demo a trained run locally; up, down, status on AWS.

Every subcommand is here; each `*_command(args)` raises DogbreedError on bad input, which `main`
prints as one line on stderr (dogbreed/entry.py).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from deploy.cloud import orchestrator
from deploy.cloud.config import load_config
from dogbreed.entry import DEBUG_OPTION, reported_errors


def package_command(args: argparse.Namespace) -> None:
    """Writes model.tar.gz for a run and prints its path and size."""
    from deploy.model_archive import package_run

    path = package_run(args.run, args.output, args.image_size)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


def max_batch(value: str) -> int:
    """`serve --max-batch`: checked here, before a model is loaded (DOGBREED_MAX_BATCH's range)."""
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"{value!r} is not a batch size from 1 to 64")
    return int(value)


def serve_command(args: argparse.Namespace) -> None:
    """Serves a run or model.tar.gz on a local port until stopped."""
    from deploy.server import prepare_model_dir, serve

    if args.no_compile:
        os.environ["DOGBREED_COMPILE"] = "0"
    if args.allow_loopback_urls:
        os.environ["DOGBREED_FETCH_ALLOW_LOOPBACK"] = "1"
    os.environ["DOGBREED_MAX_BATCH"] = str(args.max_batch)
    with tempfile.TemporaryDirectory(prefix="dogbreed-serve-") as workdir:
        model_dir = prepare_model_dir(args.source, Path(workdir))
        serve(model_dir, args.host, args.port, args.workers, args.handler)


def invoke_command(args: argparse.Namespace) -> None:
    """Sends one image to an endpoint (or through the Lambda handler) and prints the top-k."""
    from deploy.invoke import format_predictions, invoke, invoke_via_lambda, runtime_client

    client = runtime_client(args.endpoint_url)
    call = invoke_via_lambda if args.via_lambda else invoke
    print(format_predictions(call(args.target, args.endpoint, client, args.topk)))


def wait_for_ping(url: str, timeout: float = 60.0) -> None:
    """Returns once `url`/ping answers 200; raises the last connection error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def demo_command(args: argparse.Namespace) -> None:
    """Package -> local endpoint -> one generated image through the Lambda handler -> top-3 -> stop."""
    from deploy.invoke import format_predictions, invoke_via_lambda, runtime_client
    from deploy.model_archive import package_run
    from deploy.server import BackgroundServer, create_app, prepare_model_dir
    from dogbreed.serving import handler
    from dogbreed.synthetic import SyntheticSpec, render

    tarball = package_run(args.run)
    print(f"packaged {tarball} ({tarball.stat().st_size / 1e6:.1f} MB)")
    with tempfile.TemporaryDirectory(prefix="dogbreed-demo-") as workdir:
        predictor = handler.load_predictor(prepare_model_dir(str(tarball), Path(workdir)), compile_model=args.compile)
        with socket.socket() as probe:  # a free loopback port, so a running `serve` is not disturbed
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = BackgroundServer(create_app(handler, predictor), port).start()
        try:
            wait_for_ping(server.url)
            print(f"local endpoint {server.url} healthy ({predictor.info['serving']})")
            # Class 0 of the generated set the demo trained on; a seed the training data never used.
            image = render(0, SyntheticSpec(classes=len(predictor.labels)), np.random.default_rng(2026))
            path = Path(workdir) / "class0.jpg"
            image.save(path, quality=90)
            response = invoke_via_lambda(str(path), "local", runtime_client(server.url), topk=3)
            print(f"Lambda handler -> endpoint, one generated image of {predictor.labels[0]!r}:")
            print(format_predictions(response))
        finally:
            server.stop()
    print("local endpoint stopped")


def up_command(args: argparse.Namespace) -> None:
    """Deploys `args.run` and prints what changed."""
    cfg, clients = _cloud_setup(args)
    changes = orchestrator.up(cfg, args.run, clients)
    print("\n".join(changes) if changes else "up to date: nothing changed")


def down_command(args: argparse.Namespace) -> None:
    """Deletes the deploy and prints what went."""
    cfg, clients = _cloud_setup(args)
    removed = orchestrator.down(cfg, clients)
    print("\n".join(f"deleted {item}" for item in removed) if removed else "nothing to delete")


def status_command(args: argparse.Namespace) -> None:
    """Prints each resource of the deploy and its state."""
    cfg, clients = _cloud_setup(args)
    rows = orchestrator.status(cfg, clients)
    width = max(len(kind) for kind, _, _ in rows)
    for kind, name, state in rows:
        print(f"{kind:<{width}}  {name}  {state}")


def _cloud_setup(args: argparse.Namespace) -> tuple[DictConfig, orchestrator.Clients]:
    cfg = load_config(args.overrides)
    return cfg, orchestrator.Clients.create(cfg.deploy.region)


def parser() -> argparse.ArgumentParser:
    """The `python -m deploy` parser; each subcommand sets `func(args)`."""
    root = argparse.ArgumentParser(
        prog="python -m deploy", description=__doc__.split("\n\n")[0], parents=[DEBUG_OPTION]
    )
    commands = root.add_subparsers(dest="command", required=True)
    add = functools.partial(commands.add_parser, parents=[DEBUG_OPTION])  # --debug after the name too
    # up, down, status: the AWS side (deploy/cloud/), configured by `deploy.key=value` overrides.
    up = add("up", help="deploy a trained run: endpoint, autoscaling, Lambda")
    up.add_argument("run", help="run dir or s3:// prefix with model.pth and labels.json")
    up.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.instance_type=ml.c5.xlarge")
    up.set_defaults(func=up_command)
    down = add("down", help="delete everything `up` created for deploy.name")
    down.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.delete_artifacts=true")
    down.set_defaults(func=down_command)
    status = add("status", help="show each deployed resource and its state")
    status.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.name=dogbreed-dev")
    status.set_defaults(func=status_command)

    package = add("package", help="write model.tar.gz for the SageMaker PyTorch container")
    package.add_argument("run", help="run directory or s3:// prefix of one")
    package.add_argument("-o", "--output", type=Path, help="tarball path (default: <run>/model.tar.gz)")
    package.add_argument("--image-size", type=int, help="override data.image_size (runs without a config: 224)")
    package.set_defaults(func=package_command)

    serve = add("serve", help="the SageMaker container contract on a local port")
    serve.add_argument("source", help="run directory, s3:// run prefix or model.tar.gz")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="processes, each with its own model")
    serve.add_argument("--no-compile", action="store_true", help="skip torch.compile (faster start, slower answers)")
    serve.add_argument("--allow-loopback-urls", action="store_true", help="let {'url'} requests fetch from loopback")
    serve.add_argument(
        "--max-batch", type=max_batch, default=8, help="requests waiting together run as one batch of up to N (1: off)"
    )
    serve.add_argument("--handler", help="module with model_fn/input_fn/predict_fn/output_fn (default: ours)")
    serve.set_defaults(func=serve_command)

    invoke = add("invoke", help="send an image file or URL, print the top-k breeds")
    invoke.add_argument("target", help="image file or http(s) URL")
    invoke.add_argument("--endpoint", default="local", help="endpoint name")
    invoke.add_argument("--endpoint-url", help="e.g. http://127.0.0.1:8080 for `serve` (default: AWS)")
    invoke.add_argument("--via-lambda", action="store_true", help="go through the Lambda handler, run here")
    invoke.add_argument("--topk", type=int, default=3)
    invoke.set_defaults(func=invoke_command)

    demo = add("demo", help="package a run, serve it, one image through the Lambda handler")
    demo.add_argument("run", help="trained run directory")
    demo.add_argument("--compile", action="store_true", help="torch.compile the model first (~20-50 s on CPU)")
    demo.set_defaults(func=demo_command)
    return root


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns 0, or exits with the status and line of `dogbreed.entry`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    with reported_errors(getattr(args, "debug", False)):
        args.func(args)
    return 0
