"""python -m deploy: package, serve, invoke, predict, demo and loadtest a trained run locally; up, down, status on AWS.

Every subcommand is here; each `*_command(args)` raises DogbreedError on bad input, which `main`
prints as one line on stderr (dogbreed/cli.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from deploy.cloud import cost, orchestrator
from deploy.cloud.config import load_config, load_model_settings
from deploy.cloud.errors import DeployError
from dogbreed.cli import DEBUG_OPTION, compose_config, reported_errors

RUN_OVERRIDES = "deploy.model overrides for a run, e.g. deploy.model.precision=int8"


def package_command(args: argparse.Namespace) -> None:
    """Writes model.tar.gz for a run and prints its path, size and precision (int8: its checks)."""
    from deploy.model_archive import package_run, packaged_info

    path = package_run(args.run, args.output, args.image_size, load_model_settings(args.overrides))
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    quantization = packaged_info(path).get("quantization")
    if quantization:
        top1, images = quantization["top1"], quantization["calibration"]["images"]
        print(f"int8: top-1 agreement with float {quantization['top1_agreement']:.4f} on "
              f"{quantization['validation_images']} validation images; top-1 float {top1['float']:.4f}, "
              f"int8 {top1['int8']:.4f}; calibrated on {images} training images")  # fmt: skip


def max_batch(value: str) -> int:
    """`serve --max-batch`: checked here, before a model is loaded, by the handler's own DOGBREED_MAX_BATCH check."""
    from dogbreed.serving.handler import batch_limit  # torch: serve loads it anyway

    try:
        return batch_limit(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a batch size from 1 to 64") from None


def serve_command(args: argparse.Namespace) -> None:
    """Serves a run or model.tar.gz on a local port until stopped."""
    from deploy.server import prepare_model_dir, serve

    if args.no_compile:
        os.environ["DOGBREED_COMPILE"] = "0"
    if args.allow_loopback_urls:
        os.environ["DOGBREED_FETCH_ALLOW_LOOPBACK"] = "1"
    os.environ["DOGBREED_MAX_BATCH"] = str(args.max_batch)
    with tempfile.TemporaryDirectory(prefix="dogbreed-serve-") as workdir:
        model_dir = prepare_model_dir(args.source, Path(workdir), load_model_settings(args.overrides))
        serve(model_dir, args.host, args.port, args.workers, args.handler)


def invoke_command(args: argparse.Namespace) -> None:
    """Sends one image to an endpoint (or through the Lambda handler) and prints the top-k."""
    from deploy.invoke import format_predictions, invoke, invoke_via_lambda, runtime_client

    client = runtime_client(args.endpoint_url)
    call = invoke_via_lambda if args.via_lambda else invoke
    print(format_predictions(call(args.target, args.endpoint, client, args.topk)))


def predict_command(args: argparse.Namespace) -> None:
    """Top-k breeds for every photo of INPUT into a CSV; prints the counts (and top-1/top-5 for dogImages folders)."""
    from deploy.predict import PredictError, errors_path, list_inputs, predict_files, report
    from deploy.server import prepare_model_dir
    from dogbreed.serving import handler

    if args.sagemaker:
        transform_command(args)
        return
    if args.topk < 1 or args.batch_size < 1:
        raise PredictError("--topk and --batch-size must be at least 1")
    with tempfile.TemporaryDirectory(prefix="dogbreed-predict-") as workdir:
        items = list_inputs(args.input, Path(workdir))
        if not items:
            raise PredictError(f"no files in {args.input}")
        model_dir = prepare_model_dir(args.model, Path(workdir), load_model_settings(args.overrides))
        predictor = handler.load_predictor(model_dir, compile_model=False)
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        summary = predict_files(items, predictor, args.topk, args.batch_size, output, errors_path(output))
    print("\n".join(report(summary, output)))


def transform_command(args: argparse.Namespace) -> None:
    """`predict --sagemaker`: a SageMaker Batch Transform job of model `--model` over an s3:// INPUT."""
    from deploy.cloud import batch_transform
    from deploy.predict import PredictError

    output = args.output
    if not (args.input.startswith("s3://") and output.startswith("s3://")):
        raise PredictError("--sagemaker reads an s3:// INPUT and writes to an s3:// --output prefix")
    clients = orchestrator.Clients.create(args.region)
    name = batch_transform.job_name(args.model)
    request = batch_transform.transform_request(
        name, args.model, args.input, output, args.instance_type, args.instance_count
    )
    arn = batch_transform.submit(clients.sagemaker, request)
    print(f"started batch transform job {name} ({arn})")
    print(f"one <image>.out JSON per image under {output}; follow it with:")
    print(f"  aws sagemaker describe-transform-job --transform-job-name {name} --query TransformJobStatus")


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
    from dogbreed.data.synthetic import SyntheticSpec, render
    from dogbreed.serving import handler

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
    """Deploys `args.run` (or `--model`: a registered version or a run) and prints what changed."""
    from deploy.cloud import releases

    if args.model is not None and args.run is not None:  # with --model, the first positional is an override
        if "=" not in args.run:
            raise DeployError(f"give a run ({args.run}) or --model {args.model}, not both")
        args.overrides.insert(0, args.run)
    source = args.model if args.model is not None else args.run
    if source is None:
        raise DeployError("give a run to deploy, or --model latest-approved|VERSION|RUN")
    if args.skip_preflight:
        args.overrides.append("deploy.preflight=false")
    cfg, clients = _cloud_setup(args)
    release = releases.resolve(cfg, source, clients)
    changes = orchestrator.up(cfg, release.run if release else source, clients, release=release)
    print("\n".join(changes) if changes else "up to date: nothing changed")
    print("\n".join(cost.summary(cfg.deploy)))


def setup_command(args: argparse.Namespace) -> None:
    """Creates (or updates) the permissions boundary for the S3 prefixes named, once per account."""
    from dogbreed.aws import boundary, iam
    from dogbreed.storage.location import S3AddressError, S3Location

    given = [*args.prefixes, *args.overrides]  # overrides may come before or after --replace
    overrides = [item for item in given if "=" in item and not item.startswith("s3://")]
    try:
        prefixes = [S3Location.parse(uri) for uri in given if uri not in overrides]
    except S3AddressError as err:
        raise DeployError(f"setup takes s3://bucket/prefix locations: {err}") from None
    cfg = compose_config("deploy", overrides, "deploy.permissions_boundary=team-boundary").deploy
    clients = orchestrator.Clients.create(cfg.region)
    partition, account = iam.caller(clients.sts)
    arn = iam.boundary_arn(partition, account, str(cfg.permissions_boundary))
    done = boundary.ensure(clients.iam, arn, prefixes, partition, replace=args.replace)
    allowed = ", ".join(boundary.object_patterns(boundary.fetch(clients.iam, arn) or {}))
    print(f"{done} permissions boundary {arn}: the roles dogbreed creates may use S3 objects {allowed} only")


def policy_command(args: argparse.Namespace) -> None:
    """Prints the deployer policy for the S3 prefixes named (the ones `setup` gave the boundary)."""
    from deploy.cloud import policies
    from dogbreed.storage.location import S3AddressError, S3Location

    try:
        prefixes = [S3Location.parse(uri) for uri in args.prefixes]
    except S3AddressError as err:
        raise DeployError(f"policy takes s3://bucket/prefix locations: {err}") from None
    print(json.dumps(policies.deployer_policy(prefixes), indent=2))


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
    print("\n".join(cost.summary(cfg.deploy)))


def loadtest_command(args: argparse.Namespace) -> None:
    """Sends a bounded burst of requests to one target; prints latency, errors and instance counts."""
    from deploy import loadtest

    images = loadtest.load_images(Path(args.images))
    sample = None
    if args.target == "local":
        send = loadtest.http_sender(f"{args.endpoint_url.rstrip('/')}/invocations")
    elif args.target == "url":
        if not args.url:
            raise loadtest.LoadTestError("--target url needs --url https://<id>.lambda-url.<region>.on.aws/")
        send = loadtest.http_sender(args.url, sign_region=loadtest.function_url_region(args.url))
    elif args.target == "endpoint":
        send = loadtest.endpoint_sender(args.endpoint, args.concurrency)
    else:
        send = loadtest.lambda_sender(args.function or f"{args.endpoint}-invoke", args.concurrency)
    if args.target != "local":  # every AWS target ends at the SageMaker endpoint: watch it scale
        sample = loadtest.instance_sampler(args.endpoint)
    report = loadtest.run(send, images, args.requests, args.concurrency, args.max_seconds, sample, args.sample_s)
    args.output.mkdir(parents=True, exist_ok=True)
    print("\n".join(loadtest.summary(report)))
    print(f"wrote {loadtest.write_csv(report, args.output / 'requests.csv')}")
    print(f"wrote {loadtest.plot(report, args.output / 'latency.png')}")


def register_command(args: argparse.Namespace) -> None:
    """Registers a run as a new version in the model package group `deploy.name`."""
    from deploy.cloud import releases

    cfg, clients = _cloud_setup(args)
    package, changes = releases.register(cfg, args.run, clients)
    print("\n".join(changes))
    print(f"version {package['ModelPackageVersion']}: {package['ModelApprovalStatus']} ({package['ModelPackageArn']})")


def models_command(args: argparse.Namespace) -> None:
    """Lists the registered versions with their metrics and approval status."""
    from deploy.cloud import releases

    cfg, clients = _cloud_setup(args)
    rows = releases.models(cfg, clients)
    if not rows:
        print(f"no registered versions in model package group {cfg.deploy.name}")
        return
    columns = ["version", "status", "valid_top1", "test_top1", "test_top5", "live", "run"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    for row in [dict(zip(columns, columns, strict=True)), *rows]:
        print("  ".join(f"{row[c]:<{widths[c]}}" for c in columns).rstrip())


def approve_command(args: argparse.Namespace) -> None:
    """Approves (or rejects) a registered version."""
    from deploy.cloud import releases

    cfg, clients = _cloud_setup(args)
    status = "Rejected" if args.reject else "Approved"
    print(f"{releases.approve(cfg, args.version, clients, status)}: {status}")


def rollback_command(args: argparse.Namespace) -> None:
    """Redeploys the model that was live before the current one."""
    from deploy.cloud import releases

    cfg, clients = _cloud_setup(args)
    release, changes = releases.rollback(cfg, clients)
    what = f"version {release.model_version}" if release.model_version else release.run
    print("\n".join([f"rolling back to {what} ({release.model_data})", *changes]))


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
    _add_cloud_commands(add)
    _add_local_commands(add)
    _add_operating_commands(add)
    return root


def _add_cloud_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """up, down, status: the AWS side (deploy/cloud/), configured by `deploy.key=value` overrides."""
    up = add("up", help="deploy a trained run: endpoint, autoscaling, Lambda")
    up.add_argument("run", nargs="?", help="run dir or s3:// prefix with model.pth and labels.json")
    up.add_argument("--model", help="latest-approved, a registered VERSION, or a run (instead of RUN)")
    up.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.instance_type=ml.c5.xlarge")
    up.add_argument(
        "--skip-preflight",
        action="store_true",
        help="do not read Service Quotas or simulate permissions first (for callers that may not)",
    )
    up.set_defaults(func=up_command)
    setup = add("setup", help="once per account: the permissions boundary for the S3 prefixes you will use")
    setup.add_argument(
        "prefixes",
        nargs="+",
        help="s3://bucket/prefix locations (deploys, ami runs, training data), then optional overrides, "
        "e.g. deploy.permissions_boundary=team-boundary",
    )
    setup.add_argument("--replace", action="store_true", help="allow only these prefixes (default: add them)")
    setup.set_defaults(func=setup_command, overrides=[])
    policy = add("policy", help="print the IAM policy the deploying user needs, for the S3 prefixes you use")
    policy.add_argument(
        "prefixes", nargs="*", help="s3://bucket/prefix locations (none: keys under a dogbreed/ folder)"
    )
    policy.set_defaults(func=policy_command)
    down = add("down", help="delete everything `up` created for deploy.name")
    down.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.delete_artifacts=true")
    down.set_defaults(func=down_command)
    status = add("status", help="show each deployed resource and its state")
    status.add_argument("overrides", nargs="*", help="deploy config overrides, e.g. deploy.name=dogbreed-dev")
    status.set_defaults(func=status_command)


def _add_local_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """package, serve, invoke, predict, demo: a run on this machine."""
    package = add("package", help="write model.tar.gz for the SageMaker PyTorch container")
    package.add_argument("run", help="run directory or s3:// prefix of one")
    package.add_argument("-o", "--output", type=Path, help="tarball path (default: <run>/model.tar.gz)")
    package.add_argument("--image-size", type=int, help="override data.image_size (runs without a config: 224)")
    package.add_argument("overrides", nargs="*", help="deploy.model overrides, e.g. deploy.model.precision=int8")
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
    serve.add_argument(
        "overrides", nargs="*", help="deploy.model overrides for a run, e.g. deploy.model.precision=int8"
    )
    serve.set_defaults(func=serve_command)

    invoke = add("invoke", help="send an image file or URL, print the top-k breeds")
    invoke.add_argument("target", help="image file or http(s) URL")
    invoke.add_argument("--endpoint", default="local", help="endpoint name")
    invoke.add_argument("--endpoint-url", help="e.g. http://127.0.0.1:8080 for `serve` (default: AWS)")
    invoke.add_argument("--via-lambda", action="store_true", help="go through the Lambda handler, run here")
    invoke.add_argument("--topk", type=int, default=3)
    invoke.set_defaults(func=invoke_command)

    predict = add("predict", help="top-k breeds for a folder, list file or s3:// prefix of photos, into a CSV")
    predict.add_argument("input", help="folder (searched recursively), text file of image paths, or s3:// prefix")
    predict.add_argument("--model", required=True, help="run directory, model.tar.gz or s3:// run prefix")
    predict.add_argument("-o", "--output", default="predictions.csv", help="CSV path (with --sagemaker: s3:// prefix)")
    predict.add_argument("--topk", type=int, default=5)
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument(
        "--sagemaker",
        action="store_true",
        help="submit a SageMaker Batch Transform job instead: --model names a SageMaker model (see `status`), "
        "INPUT and --output are s3:// prefixes",
    )
    predict.add_argument("--instance-type", default="ml.m5.xlarge", help="with --sagemaker")
    predict.add_argument("--instance-count", type=int, default=1, help="with --sagemaker")
    predict.add_argument("--region", help="with --sagemaker (default: boto3's)")
    predict.add_argument(
        "overrides", nargs="*", help="deploy.model overrides for a run, e.g. deploy.model.precision=int8"
    )
    predict.set_defaults(func=predict_command)

    demo = add("demo", help="package a run, serve it, one image through the Lambda handler")
    demo.add_argument("run", help="trained run directory")
    demo.add_argument("--compile", action="store_true", help="torch.compile the model first (~20-50 s on CPU)")
    demo.set_defaults(func=demo_command)


def _add_operating_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """The registry (register -> approve -> up --model latest-approved -> rollback) and the load test."""
    register = add("register", help="package and upload a run, register it in the model package group <name>")
    register.add_argument("run", help="finished run dir or s3:// prefix (with metrics.json)")
    register.add_argument("overrides", nargs="*", help="deploy overrides, e.g. deploy.registry.approval=Approved")
    register.set_defaults(func=register_command)
    models = add("models", help="list registered versions with metrics and approval status")
    models.add_argument("overrides", nargs="*", help="deploy config overrides")
    models.set_defaults(func=models_command)
    approve = add("approve", help="approve a registered version (so `up --model latest-approved` takes it)")
    approve.add_argument("version", help="version number from `models`")
    approve.add_argument("--reject", action="store_true", help="mark it Rejected instead")
    approve.add_argument("overrides", nargs="*", help="deploy config overrides")
    approve.set_defaults(func=approve_command)
    rollback = add("rollback", help="redeploy the model that was live before the current one")
    rollback.add_argument("overrides", nargs="*", help="deploy config overrides")
    rollback.set_defaults(func=rollback_command)

    loadtest = add("loadtest", help="a bounded burst of requests: latency percentiles, errors, instance count")
    loadtest.add_argument("images", help="an image file or a folder of .jpg/.jpeg/.png (sent in turn)")
    loadtest.add_argument("--requests", type=int, default=200, help="requests to send in all")
    loadtest.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    loadtest.add_argument("--max-seconds", type=float, default=600, help="requests not started by then are skipped")
    loadtest.add_argument("--target", choices=("local", "endpoint", "lambda", "url"), default="local")
    loadtest.add_argument("--endpoint-url", default="http://127.0.0.1:8080", help="local: where `serve` listens")
    loadtest.add_argument("--endpoint", default="dogbreed", help="endpoint name (deploy.name); sampled for scaling")
    loadtest.add_argument("--function", help="lambda: function name (default: <endpoint>-invoke), alias live")
    loadtest.add_argument("--url", help="url: the function URL (signed with SigV4 when credentials are set)")
    loadtest.add_argument("--sample-s", type=float, default=10, help="seconds between instance-count samples")
    loadtest.add_argument("-o", "--output", type=Path, default=Path("loadtest"), help="folder for CSV and plot")
    loadtest.set_defaults(func=loadtest_command)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; `key=value` overrides may also come after options (`package RUN -o X key=value`)."""
    root = parser()
    args, extra = root.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra
    elif extra:
        root.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns 0, or exits with the status and line of `dogbreed.cli`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse(argv)
    with reported_errors(getattr(args, "debug", False)):
        args.func(args)
    return 0
