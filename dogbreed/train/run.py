"""`train(settings)`: set up, fit, finish. The whole job behind `train.py`.

`train.py` builds the `RunSettings` from the Hydra config (`dogbreed.train.settings`); this module
turns them into the data, the model, a `dogbreed.train.fit.Job` for the epoch loop and what resuming needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dogbreed import files
from dogbreed.data.folders import breed_name, discover_classes
from dogbreed.data.scan import Split, write_skipped_report
from dogbreed.errors import ConfigError
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.storage import location, probe, run_uploads
from dogbreed.tracking.base import RunInfo, Tracking
from dogbreed.train import checkpoint, distributed, reports
from dogbreed.train.features import FeatureCache, module_digest
from dogbreed.train.fit import Job, fit
from dogbreed.train.interrupt import StopRequest
from dogbreed.train.loaders import (
    compile_while_checking,
    make_feature_loaders,
    make_loaders,
    prepare_root,
    scan_on_main,
)
from dogbreed.train.network import apply_freeze, compile_for_training, load_backbone
from dogbreed.train.resume import resolve_resume
from dogbreed.train.runtime import Runtime, resolve_device
from dogbreed.train.settings import NetworkSettings, OptimizerSettings, RunSettings, resolved_yaml

log = logging.getLogger(__name__)

SKIPPED_NAME = "skipped_files.txt"


def train(settings: RunSettings) -> float:
    """Runs one training job and returns the best validation top-1 accuracy.

    SIGTERM, SIGINT or an EC2 spot notice stop it after the current step with a checkpoint
    (`TrainingInterrupted`); with storage=s3 a failed upload ends it with `UploadError`.
    """
    started = time.perf_counter()
    context = distributed.init(resolve_device(settings.device))  # a single process unless torchrun
    try:
        with StopRequest(settings.spot_notice_endpoint, settings.spot_poll_s) as stop, contextlib.ExitStack() as run:
            settings.output_dir.mkdir(parents=True, exist_ok=True)
            tracking = start_tracking(settings, context.is_main)  # rank 0's `logger=` loggers
            tracking.check()  # settings a backend refuses stop the run here, before anything else
            uploads = start_uploads(settings) if context.is_main else None  # storage=s3: the bucket is checked
            # Started before any data is read, closed with the run's outcome: a required logger that
            # cannot start stops the run at once.
            run.enter_context(tracking)
            job, state = set_up(settings, context, uploads, tracking, started)
            fit(job, state, stop)
            return finish(job, state)
    finally:
        distributed.shutdown()


def set_up(
    settings: RunSettings,
    context: distributed.Context,
    uploads: run_uploads.RunUploads | None,
    tracking: Tracking,
    started: float,
) -> tuple[Job, checkpoint.TrainingState]:
    """Builds the run from its settings: data, model, optimizer, and the state to start from."""
    output_dir = settings.output_dir
    seed_everything(settings.seed)
    runtime = Runtime.from_names(settings.device, settings.precision, settings.channels_last)
    if not context.is_main:  # rank 0 logs and draws progress bars for everyone
        logging.getLogger().setLevel(logging.WARNING)
    log.info(
        "device %s, precision %s, malloc %s, output %s",
        runtime.device,
        runtime.precision,
        "tuned" if os.environ.get("GLIBC_TUNABLES") else "default",
        output_dir,
    )
    root = prepare_root(settings.data, context)
    folders = discover_classes(root)
    model = build_network(settings.network, len(folders), runtime)
    cache, meanwhile = None, None  # a feature cache, and the compile of its extractor beside the scan
    if settings.feature_cache is not None:
        cache = FeatureCache(settings.feature_cache.directory)
        meanwhile = compile_while_checking(settings.feature_cache, cache, model, runtime, context.world_size)
    class_names, splits = prepare_data(settings, root, folders, context, meanwhile)
    loaders, trained = wire_for_training(settings, model, splits, runtime, context, cache)
    trainable = [p for p in model.parameters() if p.requires_grad]
    network = settings.network
    log.info(
        "%s (%s head, freeze=%s): %d of %d parameters train",
        network.arch,
        network.head,
        network.freeze,
        sum(p.numel() for p in trainable),
        sum(p.numel() for p in model.parameters()),
    )
    optimizer = build_optimizer(settings.optimizer, trainable, context.world_size)
    schedule = dataclasses.replace(settings.schedule, progress=settings.schedule.progress and context.is_main)
    job = Job(
        context=context,
        runtime=runtime,
        schedule=schedule,
        output_dir=output_dir,
        uploads=uploads,
        class_names=class_names,
        loaders=loaders,
        model=model,
        trained=trained,
        optimizer=optimizer,
        scheduler=instantiate(dict(settings.scheduler))(optimizer=optimizer),
        scaler=runtime.grad_scaler(),
        criterion=nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing),
        config=dict(settings.config),
        overrides=settings.overrides,
        model_dir=settings.model_dir,
        started=started,
        tracking=tracking,
    )
    # Rank 0 finds the checkpoint; every rank loads it (a shared path or s3:// across machines).
    resume_from = distributed.broadcast_object(find_checkpoint(settings, uploads) if context.is_main else None)
    if context.is_main:  # half-written files that kills of this run, or of the one it resumes, left
        files.remove_stale_temporaries(output_dir, *([resume_from.parent] if resume_from else []))
    if resume_from is None:
        return job, checkpoint.TrainingState()
    parts = (job.model, job.optimizer, job.scheduler, job.scaler)
    return job, checkpoint.restore_training_checkpoint(resume_from, *parts, class_names)


def start_uploads(settings: RunSettings) -> run_uploads.RunUploads | None:
    """The run's uploads with storage=s3 (None with storage=local).

    First checks that the bucket takes writes under the run's prefix (`probe.check_writable`: seconds,
    within the upload budget), so a wrong `storage.s3_uri` fails the run before any data is
    prepared. Then writes the resolved config into the run dir, so it goes up with the artifacts.
    """
    s3 = settings.storage
    if s3 is None:
        return None
    client = s3.client()
    probe.check_writable(client, s3.dest, "storage.s3_uri (or DOGBREED_S3_URI)", s3.uploads.budget_s, "storage=s3: ")
    # .hydra/config.yaml keeps interpolations; this copy says exactly what ran.
    (settings.output_dir / run_uploads.RESOLVED_CONFIG_NAME).write_text(resolved_yaml(settings.config))
    return run_uploads.RunUploads.start(
        settings.output_dir, s3.dest, s3.run_name, s3.uploads, client, s3.upload_checkpoints, s3.interrupt_budget_s
    )


def start_tracking(settings: RunSettings, is_main: bool) -> Tracking:
    """Rank 0's loggers, instantiated from their nodes; the other ranks log nothing."""
    if not is_main:
        return Tracking([], None)
    tracking = settings.tracking
    loggers = [instantiate(dict(node)) for node in tracking.loggers]
    run = RunInfo(tracking.run_name, settings.output_dir, dict(settings.config), tracking.sweep_dir)
    return Tracking(loggers, run)


def seed_everything(seed: int) -> None:
    """Seeds the global RNGs that model initialisation and augmentation draw from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(
    settings: RunSettings,
    root: Path,
    folders: list[str],
    context: distributed.Context,
    meanwhile: Callable[[dict[str, int]], object] | None = None,
) -> tuple[list[str], dict[str, Split]]:
    """Class names and checked splits; rank 0 lists problem files and writes labels.json."""
    record_dir = settings.cache_dir / "scans"
    output_dir = settings.output_dir
    splits = scan_on_main(root, folders, settings.scan_workers, context, record_dir, meanwhile)
    class_names = [breed_name(folder) for folder in folders]
    if context.is_main:
        reported = write_skipped_report(splits.values(), output_dir / SKIPPED_NAME)
        if reported:
            log.warning("%d problem file(s) listed in %s", reported, output_dir / SKIPPED_NAME)
        reports.write_labels(class_names, output_dir / reports.LABELS_NAME)
    return class_names, splits


def build_network(network: NetworkSettings, num_classes: int, runtime: Runtime) -> nn.Module:
    """The `model` group's network, initialised, frozen as asked, on the training device."""
    spec = ModelSpec(network.arch, num_classes, network.head, network.mlp_hidden)
    model = build_model(spec, pretrained=network.pretrained and network.init_weights is None)
    if network.init_weights is not None:
        load_backbone(model, network.init_weights)
    apply_freeze(model, network.freeze)
    # Module.to takes a device and a memory format together; torch's stubs have no such overload.
    model.to(runtime.device, memory_format=runtime.memory_format)  # type: ignore[call-overload]
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    return model


def wire_for_training(
    settings: RunSettings,
    model: nn.Module,
    splits: dict[str, Split],
    runtime: Runtime,
    context: distributed.Context,
    cache: FeatureCache | None,
) -> tuple[dict[str, Any], nn.Module]:
    """The loaders, and the module that trains on them: the model, or its head on `cache`'s features."""
    loaders: dict[str, Any]
    trained: nn.Module
    if cache is not None:
        assert settings.feature_cache is not None  # a cache is made only when it is set
        loaders = make_feature_loaders(settings.loader, settings.feature_cache, model, splits, runtime, context, cache)
        trained = model.get_submodule("fc")  # the head trains on features; model.pth still holds the whole model
    else:
        loaders = make_loaders(settings.loader, splits, runtime, context)
        trained = model
    if context.enabled:  # gradients averaged over ranks; `model` keeps the plain state_dict keys
        trained = DistributedDataParallel(
            trained, device_ids=[context.local_rank] if runtime.device.type == "cuda" else None
        )
    if cache is None:
        trained = compile_for_training(trained, settings.compile, runtime)
    return loaders, trained


def build_optimizer(settings: OptimizerSettings, params: list[nn.Parameter], world_size: int) -> torch.optim.Optimizer:
    """Instantiates `optim`; with `scale_lr_with_batch` the lr grows with the global batch (linear rule)."""
    optimizer = dict(settings.node)
    if world_size > 1:
        if settings.scale_lr_with_batch:
            log.info("optim.scale_lr_with_batch: lr %g x %d ranks = %g", optimizer["lr"], world_size,
                     optimizer["lr"] * world_size)  # fmt: skip
            optimizer["lr"] *= world_size
        else:
            log.info("%d ranks: global batch = %d x data.batch_size; lr unchanged (optim.scale_lr_with_batch=false)",
                     world_size, world_size)  # fmt: skip
    return instantiate(optimizer)(params=params)


def find_checkpoint(settings: RunSettings, uploads: run_uploads.RunUploads | None) -> Path | None:
    """The checkpoint `trainer.resume` names (a path, s3://..., or auto: local and S3), or None."""
    run = uploads.dest if uploads is not None else None
    client = settings.storage.client if settings.storage is not None else location.make_client
    return resolve_resume(settings.resume, settings.output_root, run, client)


def finish(job: Job, state: checkpoint.TrainingState) -> float:
    """Evaluates the best weights, then on rank 0 writes reports, exports and uploads; returns valid top-1."""
    if state.best_model is None:
        raise ConfigError("training finished without a single evaluated epoch; set trainer.epochs to 1 or more")
    # Resumed in a new run dir and no later epoch was better: model.pth is the checkpoint's best weights.
    if job.context.is_main and not job.weights_path.exists():
        files.atomic_torch_save(state.best_model, job.weights_path)
    job.model.load_state_dict(state.best_model)
    final = {name: job.evaluate(name) for name in ("valid", "test")}
    if job.context.enabled:
        distributed.check_identical_weights(module_digest(job.model), job.context.world_size)
    if not job.context.is_main:
        return final["valid"].top1
    seconds = time.perf_counter() - job.started
    reports.write_final_reports(job.output_dir, state, final, job.class_names, seconds, job.runtime)
    job.tracking.log_final(reports.final_metrics(state, final), [job.output_dir / n for n in reports.TRACKED_FILES])
    if job.model_dir is not None:
        reports.export_for_sagemaker(job.output_dir, job.model_dir, job.config)
    log.info(
        "best epoch %d: valid top1 %.3f | test top1 %.3f top5 %.3f",
        state.best_epoch,
        final["valid"].top1,
        final["test"].top1,
        final["test"].top5,
    )
    log.info("weights: %s", job.weights_path.resolve())
    if job.uploads is not None:  # raises UploadError (non-zero exit) naming what stayed local
        job.uploads.finish()
    return final["valid"].top1
