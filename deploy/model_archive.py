"""Run directory (its s3:// copy, or a SageMaker training job's model.tar.gz) -> model.tar.gz for either
SageMaker inference container: Ray Serve (the default) or PyTorch/TorchServe.

Layout: `model.pth`, `labels.json` and `serving.json` (image size, architecture, version info) at the
root, with `config.yaml`, the Ray Serve application the Ray Serve container runs. Under `code/`: the
`dogbreed.serving` package whole, with `dogbreed/__init__.py` above it, and its `inference.py` again as
`code/inference.py`, where the TorchServe container looks for its entry point. Each container ignores
the other's file, so one tarball serves both. The images have torch, torchvision and pillow (and Ray)
but not this project; the serving package imports nothing else, so it is all `code/` needs. The
weights are loaded into the model the labels describe, and run once, before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import dogbreed
import dogbreed.serving
from deploy.precision import FLOAT, INT8, ModelSettings
from deploy.quantize import QuantizeError, quantize
from dogbreed.errors import DogbreedError, WeightsError
from dogbreed.serving import int8
from dogbreed.serving.architecture import load_weights, spec_from_state_dict
from dogbreed.serving.handler import SERVING_INFO_NAME
from dogbreed.train.checkpoint import CHECKPOINT_NAME, WEIGHTS_NAME
from dogbreed.train.reports import LABELS_NAME, MODEL_INFO_NAME, read_labels

log = logging.getLogger(__name__)

TARBALL_NAME = "model.tar.gz"
RAY_SERVE_CONFIG_NAME = "config.yaml"
# What the Ray Serve container runs (`serve run /opt/ml/model/config.yaml`): its adapter sends every
# /invocations to route `/`; /opt/ml/model/code is on its PYTHONPATH.
RAY_SERVE_CONFIG = """\
# The Ray Serve application of model.tar.gz (deploy.image.backend=rayserve); written by python -m deploy package.
applications:
  - name: dogbreed
    route_prefix: /
    import_path: dogbreed.serving.ray_app:app
"""
DEFAULT_IMAGE_SIZE = 224  # torchvision's ImageNet size; SageMaker training output has no config
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
# What a training job's model.tar.gz may hold that packaging reads (SM_MODEL_DIR, see dogbreed/train/run.py).
JOB_MODEL_FILES = (WEIGHTS_NAME, LABELS_NAME, HYDRA_CONFIG.as_posix(), MODEL_INFO_NAME)
TRAINING_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class PackageError(DogbreedError):
    """The run cannot be packaged as given."""


def is_training_job(run: str) -> bool:
    """A SageMaker training job name rather than a run: not s3://, not an existing path."""
    return not run.startswith("s3://") and not Path(run).exists() and bool(TRAINING_JOB_NAME.match(run))


def download_run(uri: str, destination: Path) -> tuple[Path, str]:
    """Copies the files packaging reads into `destination`; returns it and the run's name.

    `uri` is an s3:// run prefix, a training job's `s3://…/<job>/output/model.tar.gz`, or the
    job's name (its model.tar.gz is looked up). A run prefix goes through `dogbreed.storage.transfer`, so files
    uploaded by a training run are checked against the SHA-256 recorded at upload; optional
    files that are absent are skipped. A job's model.tar.gz is SageMaker's, written without one.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from dogbreed.storage import location, transfer

    try:
        if is_training_job(uri):
            return extract_job_model(job_model_uri(uri), destination), uri
        if uri.endswith(TARBALL_NAME):
            return extract_job_model(uri, destination), uri.split("/")[-3]
        prefix = location.S3Location.parse(uri).as_prefix()
        client = location.make_client()
        for name in (WEIGHTS_NAME, LABELS_NAME, CHECKPOINT_NAME, HYDRA_CONFIG.as_posix(), MODEL_INFO_NAME):
            source = prefix.child(name)
            if transfer.head_or_none(client, source) is None:
                log.info("%s has no %s", uri, name)
                continue
            transfer.download_verified(client, source, destination / name)
    except (ClientError, BotoCoreError) as err:  # no credentials, no region, endpoint unreachable
        raise PackageError(f"cannot read {uri}: {err}") from None
    return destination, uri.rstrip("/").rsplit("/", 1)[-1]


def job_model_uri(job: str) -> str:
    """The model.tar.gz a completed training job wrote."""
    import boto3

    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=job)
    if description["TrainingJobStatus"] != "Completed":
        raise PackageError(f"training job {job} is {description['TrainingJobStatus']}, not Completed")
    return description["ModelArtifacts"]["S3ModelArtifacts"]


def extract_job_model(uri: str, destination: Path) -> Path:
    """The packaging files of a training job's model.tar.gz, extracted into `destination`."""
    from dogbreed.storage.location import S3Location, make_client

    source = S3Location.parse(uri)
    body = make_client().get_object(Bucket=source.bucket, Key=source.key)["Body"]
    with tarfile.open(fileobj=body, mode="r|gz") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if member.isfile() and name in JOB_MODEL_FILES:
                tar.extract(member, destination, filter="data")
    return destination


def model_info(run_dir: Path) -> dict[str, Any]:
    """model_info.json, which a SageMaker training job writes next to model.pth; {} when absent."""
    path = run_dir / MODEL_INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def image_size_of(run_dir: Path, default: int) -> int:
    """data.image_size from checkpoint.pt, else .hydra/config.yaml, else model_info.json, else `default`."""
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        # mmap: the optimizer state in there can be hundreds of MB; only the config is read.
        saved = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
        return int(saved["config"]["data"]["image_size"])
    if (run_dir / HYDRA_CONFIG).is_file():
        from omegaconf import OmegaConf  # training dependency, not needed in the container

        return int(OmegaConf.load(run_dir / HYDRA_CONFIG).data.image_size)
    if "image_size" in model_info(run_dir):
        return int(model_info(run_dir)["image_size"])
    log.warning(
        "%s has none of %s, %s, %s: packaging for %d px (--image-size sets it)",
        run_dir, CHECKPOINT_NAME, HYDRA_CONFIG, MODEL_INFO_NAME, default,
    )  # fmt: skip
    return default


def trained_versions(run_dir: Path) -> dict[str, str]:
    """The library versions the run trained with (torch above all), from checkpoint.pt or model_info.json."""
    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.is_file():
        return dict(model_info(run_dir).get("versions", {}))
    return dict(torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True).get("versions", {}))


def serving_info(run_dir: Path, name: str, labels: list[str], image_size: int) -> dict[str, Any]:
    """What the handler needs besides the weights, and what each response reports as `model`."""
    weights = run_dir / WEIGHTS_NAME
    model = load_weights(weights, labels)  # as the container loads them: weights only, strict
    try:
        with torch.inference_mode():  # a real forward pass, in fp32 as a CPU container without bf16 runs it
            model.float()(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as err:
        raise WeightsError(f"{weights} loads but does not run on a {image_size} px image: {err}") from None
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    spec = spec_from_state_dict(model.state_dict())
    return {
        "name": name,
        "image_size": image_size,
        "arch": spec.arch,
        "head": spec.head,
        "num_classes": len(labels),
        "weights_sha256": digest,
        "dogbreed": dogbreed.__version__,
        "trained_with": trained_versions(run_dir),
        "precision": FLOAT,
    }


def shipped_code() -> list[tuple[Path, str]]:
    """(source file, member name) for `code/`: the entry point, `dogbreed/__init__.py`, then the serving package.

    The package directory is walked (sorted, so the tarball is reproducible) rather than
    listed: a module added to `dogbreed.serving` ships without a list to keep in step.
    """
    package_init = Path(dogbreed.__file__).resolve()
    source_root = package_init.parents[1]
    serving_dir = Path(dogbreed.serving.__file__).resolve().parent
    modules = sorted(path.relative_to(source_root).as_posix() for path in serving_dir.rglob("*.py"))
    return [
        (serving_dir / "inference.py", "code/inference.py"),
        (package_init, "code/dogbreed/__init__.py"),
        *((source_root / module, f"code/{module}") for module in modules),
    ]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mtime = int(datetime.now(timezone.utc).timestamp())
    tar.addfile(member, io.BytesIO(data))


def write_tarball(run_dir: Path, info: dict[str, Any], output: Path, weights: Path | None = None) -> None:
    """Writes next to `output` and renames, so a failure never leaves a half tarball that looks complete.

    `weights` is shipped as model.pth instead of the run's (the int8 state_dict)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(handle)
    try:
        # fp32 weights compress by ~7% at best, for seconds of CPU per 100 MB: store them.
        with tarfile.open(temporary, "w:gz", compresslevel=0) as tar:
            tar.add(weights or run_dir / WEIGHTS_NAME, WEIGHTS_NAME)
            tar.add(run_dir / LABELS_NAME, LABELS_NAME)
            _add_bytes(tar, SERVING_INFO_NAME, (json.dumps(info, indent=2) + "\n").encode())
            _add_bytes(tar, RAY_SERVE_CONFIG_NAME, RAY_SERVE_CONFIG.encode())
            for source, name in shipped_code():
                tar.add(source, name)
        os.replace(temporary, output)
    finally:
        Path(temporary).unlink(missing_ok=True)


def package_run(
    run: str, output: Path | None = None, image_size: int | None = None, model: ModelSettings | None = None
) -> Path:
    """Validates a run and writes its model.tar.gz.

    Args:
        run: a run directory, the s3:// prefix of one, a training job's s3://…/model.tar.gz or its name.
        output: the tarball path; default `<run dir>/model.tar.gz` (`./model.tar.gz` for the others).
        image_size: overrides the size found in the run (which otherwise defaults to 224).
        model: `deploy.model`; int8 quantises the network on the run's own data (`deploy.quantize`);
            None packages the float network.

    Returns:
        The path of the written tarball.

    Raises:
        PackageError: files are missing.
        WeightsError: the weights do not load into the model labels.json describes.
        QuantizeError: int8 without data to calibrate on, or answering too unlike the float network.
    """
    with tempfile.TemporaryDirectory(prefix="dogbreed-package-") as scratch:
        if run.startswith("s3://") or is_training_job(run):
            run_dir, name = download_run(run, Path(scratch))
            output = output or Path.cwd() / TARBALL_NAME
        else:
            run_dir = Path(run)
            name = run_dir.resolve().name
            output = output or run_dir / TARBALL_NAME
        missing = [file for file in (WEIGHTS_NAME, LABELS_NAME) if not (run_dir / file).is_file()]
        if missing:
            raise PackageError(f"{run} is not a trained run: {' and '.join(missing)} missing")
        try:
            labels = read_labels(run_dir / LABELS_NAME)
        except (ValueError, KeyError) as err:
            raise PackageError(f"{run}/{LABELS_NAME} is not an index -> breed mapping ({err!r})") from None
        size = image_size or image_size_of(run_dir, DEFAULT_IMAGE_SIZE)
        info = serving_info(run_dir, name, labels, size)
        weights = None
        if model is not None and model.precision == INT8:
            weights = Path(scratch) / "model.int8.pth"
            info = quantized_info(run_dir, labels, size, model, info, weights)
        write_tarball(run_dir, info, output, weights)
    log.info("packaged %s (%s %s, %d classes, %d px) -> %s", run, info["precision"], info["arch"], len(labels), size,
             output)  # fmt: skip
    return output


def packaged_info(tarball: Path) -> dict[str, Any]:
    """The serving.json of a written tarball."""
    with tarfile.open(tarball, "r:*") as tar:
        member = tar.extractfile(SERVING_INFO_NAME)
        return json.loads(member.read()) if member else {}


def quantized_info(
    run_dir: Path, labels: list[str], size: int, model: ModelSettings, info: dict[str, Any], weights: Path
) -> dict[str, Any]:
    """Quantises the run's network into `weights` (its state_dict); returns serving.json's info for it."""
    network = load_weights(run_dir / WEIGHTS_NAME, labels)
    quantized, report = quantize(network, labels, size, data_root_of(run_dir, model), model)
    torch.save(quantized.state_dict(), weights)
    spec = int8.spec_info(spec_from_state_dict(network.state_dict()))
    return {
        **info,
        "precision": INT8,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "quantization": {**report, "spec": spec},
    }


def data_root_of(run_dir: Path, model: ModelSettings) -> Path:
    """The dataset to calibrate and check int8 on: `deploy.model.data_root`, else the run's `data.root`
    (an s3:// one mirrored into the run's `data.s3_cache`, new or changed objects only).

    Raises:
        QuantizeError: the run records no data root, or it is not on this machine.
    """
    data = run_config(run_dir).get("data", {})
    root = model.data_root or data.get("root")
    if not root:
        raise QuantizeError(f"{run_dir} records no data.root; set deploy.model.data_root to its dataset")
    if str(root).startswith("s3://"):
        from dogbreed.storage.mirror import sync_to_cache

        return sync_to_cache(str(root), Path(data.get("s3_cache") or "data/s3cache"))
    if not Path(root).is_dir():
        raise QuantizeError(
            f"the run's data root {root} is not on this machine; set deploy.model.data_root to its dataset "
            "(a folder or s3:// prefix); nothing written"
        )
    return Path(root)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config the run trained with: checkpoint.pt's, else `.hydra/config.yaml` (data only)."""
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        return dict(torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True).get("config", {}))
    if (run_dir / HYDRA_CONFIG).is_file():
        from omegaconf import OmegaConf

        config = OmegaConf.load(run_dir / HYDRA_CONFIG)
        return {"data": {key: OmegaConf.select(config, f"data.{key}") for key in ("root", "s3_cache")}}
    return {}
