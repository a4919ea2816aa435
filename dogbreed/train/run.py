"""`train(cfg)`: set up from the config, fit, finish. The whole job behind `train.py`.

Only this module reads the Hydra config: it builds plain settings for `dogbreed.train.loaders`,
a `dogbreed.train.fit.Job` for the epoch loop, and the values `dogbreed.train.resume` needs.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dogbreed import files
from dogbreed.data.folders import breed_name, discover_classes
from dogbreed.data.scan import Split, write_skipped_report
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.storage import location, runs
from dogbreed.train import checkpoint, distributed, reports, settings
from dogbreed.train.features import FeatureCache, module_digest
from dogbreed.train.fit import Job, Schedule, fit
from dogbreed.train.loaders import (
    compile_while_checking,
    make_feature_loaders,
    make_loaders,
    prepare_root,
    scan_on_main,
    use_feature_cache,
    worker_count,
)
from dogbreed.train.network import apply_freeze, load_backbone
from dogbreed.train.resume import resolve_resume
from dogbreed.train.runtime import Runtime, resolve_device

log = logging.getLogger(__name__)

SKIPPED_NAME = "skipped_files.txt"


def train(cfg: DictConfig) -> float:
    """Runs one training job and returns the best validation top-1 accuracy.

    SIGTERM, SIGINT or an EC2 spot notice stop it after the current step with a checkpoint
    (`TrainingInterrupted`); with storage=s3 a failed upload ends it with `UploadError`.
    """
    context = distributed.init(resolve_device(cfg.trainer.device))  # a single process unless torchrun
    try:
        with settings.stop_request(cfg.trainer.interrupt) as stop:
            job, state = set_up(cfg, context)  # with storage=s3, fails fast on a bucket it cannot write to
            with job.tracking:  # rank 0's `logger=` loggers: started here, closed with the run's outcome
                fit(job, state, stop)
                return finish(job, state)
    finally:
        distributed.shutdown()


def set_up(cfg: DictConfig, context: distributed.Context) -> tuple[Job, checkpoint.TrainingState]:
    """Builds the run from the config: data, model, optimizer, and the state to start from."""
    started = time.perf_counter()
    trainer = cfg.trainer
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(trainer.seed)
    runtime = Runtime.from_names(trainer.device, trainer.precision, trainer.channels_last)
    if not context.is_main:  # rank 0 logs and draws progress bars for everyone
        logging.getLogger().setLevel(logging.WARNING)
    uploads = settings.run_uploads(cfg, output_dir) if context.is_main else None  # None with storage=local
    log.info(
        "device %s, precision %s, malloc %s, output %s",
        runtime.device,
        runtime.precision,
        "tuned" if os.environ.get("GLIBC_TUNABLES") else "default",
        output_dir,
    )
    root = prepare_root(settings.data_source(cfg.data), context)
    folders = discover_classes(root)
    model = build_network(cfg, len(folders), runtime)
    cache, meanwhile = None, None  # a feature cache, and the compile of its extractor beside the scan
    if use_feature_cache(cfg.trainer.feature_cache, cfg.model.freeze):
        cache_settings = settings.feature_cache_settings(cfg)
        cache = FeatureCache(cache_settings.directory)
        meanwhile = compile_while_checking(cache_settings, cache, model, runtime, context.world_size)
    class_names, splits = prepare_data(cfg, root, folders, output_dir, context, meanwhile)
    loaders, trained = wire_for_training(cfg, model, splits, runtime, context, cache)
    trainable = [p for p in model.parameters() if p.requires_grad]
    log.info(
        "%s (%s head, freeze=%s): %d of %d parameters train",
        cfg.model.arch,
        cfg.model.head,
        cfg.model.freeze,
        sum(p.numel() for p in trainable),
        sum(p.numel() for p in model.parameters()),
    )
    optimizer = build_optimizer(cfg.optim, trainable, context.world_size)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    job = Job(
        context=context,
        runtime=runtime,
        schedule=Schedule(
            epochs=trainer.epochs,
            seed=trainer.seed,
            limit_batches=trainer.limit_batches,
            patience=trainer.early_stopping_patience,
            progress=trainer.progress_bar and context.is_main,
            checkpoint_every_s=trainer.checkpoint_every_s,
        ),
        output_dir=output_dir,
        uploads=uploads,
        class_names=class_names,
        loaders=loaders,
        model=model,
        trained=trained,
        optimizer=optimizer,
        scheduler=instantiate(cfg.sched)(optimizer=optimizer),
        scaler=runtime.grad_scaler(),
        criterion=nn.CrossEntropyLoss(label_smoothing=trainer.label_smoothing),
        config=config,
        model_dir=Path(cfg.paths.model_dir) if cfg.paths.get("model_dir") else None,
        started=started,
        tracking=settings.tracking(cfg, output_dir, config, context.is_main),
    )
    # Rank 0 finds the checkpoint; every rank loads it (a shared path or s3:// across machines).
    resume_from = distributed.broadcast_object(find_checkpoint(cfg, uploads) if context.is_main else None)
    if context.is_main:  # half-written files that kills of this run, or of the one it resumes, left
        files.remove_stale_temporaries(output_dir, *([resume_from.parent] if resume_from else []))
    if resume_from is None:
        return job, checkpoint.TrainingState()
    parts = (job.model, job.optimizer, job.scheduler, job.scaler)
    return job, checkpoint.restore_training_checkpoint(resume_from, *parts, class_names)


def seed_everything(seed: int) -> None:
    """Seeds the global RNGs that model initialisation and augmentation draw from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(
    cfg: DictConfig,
    root: Path,
    folders: list[str],
    output_dir: Path,
    context: distributed.Context,
    meanwhile: Callable[[dict[str, int]], object] | None = None,
) -> tuple[list[str], dict[str, Split]]:
    """Class names and checked splits; rank 0 lists problem files and writes labels.json."""
    record_dir = Path(cfg.paths.cache_dir) / "scans"
    splits = scan_on_main(root, folders, worker_count(cfg.data.scan_workers), context, record_dir, meanwhile)
    class_names = [breed_name(folder) for folder in folders]
    if context.is_main:
        reported = write_skipped_report(splits.values(), output_dir / SKIPPED_NAME)
        if reported:
            log.warning("%d problem file(s) listed in %s", reported, output_dir / SKIPPED_NAME)
        reports.write_labels(class_names, output_dir / reports.LABELS_NAME)
    return class_names, splits


def build_network(cfg: DictConfig, num_classes: int, runtime: Runtime) -> nn.Module:
    """The `model` config's network, initialised, frozen as asked, on the training device."""
    spec = ModelSpec(cfg.model.arch, num_classes, cfg.model.head, cfg.model.mlp_hidden)
    model = build_model(spec, pretrained=cfg.model.pretrained and not cfg.model.get("init_weights"))
    if cfg.model.get("init_weights"):
        load_backbone(model, Path(cfg.model.init_weights))
    apply_freeze(model, cfg.model.freeze)
    # Module.to takes a device and a memory format together; torch's stubs have no such overload.
    model.to(runtime.device, memory_format=runtime.memory_format)  # type: ignore[call-overload]
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    return model


def wire_for_training(
    cfg: DictConfig,
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
        loaders = make_feature_loaders(
            settings.loader_settings(cfg), settings.feature_cache_settings(cfg), model, splits, runtime, context, cache
        )
        trained = model.get_submodule("fc")  # the head trains on features; model.pth still holds the whole model
    else:
        loaders = make_loaders(settings.loader_settings(cfg), splits, runtime, context)
        trained = model
    if context.enabled:  # gradients averaged over ranks; `model` keeps the plain state_dict keys
        trained = DistributedDataParallel(
            trained, device_ids=[context.local_rank] if runtime.device.type == "cuda" else None
        )
    if cache is None:
        trained = compile_for_training(trained, cfg.trainer.compile, runtime)
    return loaders, trained


def compile_for_training(model: nn.Module, setting: Any, runtime: Runtime) -> nn.Module:
    """Compiles the training model when asked, or on CUDA under `auto`.

    On CPU the train step gains little (20 vs 21 img/s measured for ResNet50)
    for ~50 s of compilation, so `auto` leaves it eager there. The compiled
    wrapper shares parameters with `model`, which is what gets saved.
    """
    setting = str(setting).lower()
    if setting == "true" or (setting == "auto" and runtime.device.type == "cuda"):
        log.info("compiling the model for training")
        return cast(nn.Module, torch.compile(model))
    return model


def build_optimizer(optim_cfg: DictConfig, params: list[nn.Parameter], world_size: int) -> torch.optim.Optimizer:
    """Instantiates `optim`; with `scale_lr_with_batch` the lr grows with the global batch (linear rule)."""
    settings = cast(dict[str, Any], OmegaConf.to_container(optim_cfg, resolve=True))
    scale = settings.pop("scale_lr_with_batch", False)
    if world_size > 1:
        if scale:
            log.info("optim.scale_lr_with_batch: lr %g x %d ranks = %g", settings["lr"], world_size,
                     settings["lr"] * world_size)  # fmt: skip
            settings["lr"] *= world_size
        else:
            log.info("%d ranks: global batch = %d x data.batch_size; lr unchanged (optim.scale_lr_with_batch=false)",
                     world_size, world_size)  # fmt: skip
    return instantiate(settings)(params=params)


def find_checkpoint(cfg: DictConfig, uploads: runs.RunUploads | None) -> Path | None:
    """The checkpoint `trainer.resume` names (a path, s3://..., or auto: local and S3), or None."""
    # The run's S3 location is the one its uploads go to, worked out once by `settings.run_uploads`.
    run = uploads.dest if uploads is not None else None
    client = functools.partial(settings.storage_client, cfg.storage) if run is not None else location.make_client
    return resolve_resume(cfg.trainer.resume, Path(cfg.paths.output_root), run, client)


def finish(job: Job, state: checkpoint.TrainingState) -> float:
    """Evaluates the best weights, then on rank 0 writes reports, exports and uploads; returns valid top-1."""
    if state.best_model is None:
        raise RuntimeError("training finished without a single evaluated epoch (trainer.epochs must be >= 1)")
    # Resumed in a new run dir and no later epoch was better: model.pth is the checkpoint's best weights.
    if job.context.is_main and not job.weights_path.exists():
        files.atomic_torch_save(state.best_model, job.weights_path)
    job.model.load_state_dict(state.best_model)
    final = {name: job.evaluate(name) for name in ("valid", "test")}
    if job.context.enabled:
        check_identical_weights(job.model, job.context)
    if not job.context.is_main:
        return final["valid"].top1
    seconds = time.perf_counter() - job.started
    reports.write_final_reports(job.output_dir, state, final, job.class_names, seconds, job.runtime)
    job.tracking.log_final(reports.final_metrics(state, final), [job.output_dir / n for n in reports.TRACKED_FILES])
    if job.model_dir is not None:
        export_for_sagemaker(job.output_dir, job.model_dir, job.config)
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


def check_identical_weights(model: nn.Module, context: distributed.Context) -> None:
    """DDP keeps replicas in step; a mismatch would mean silently wrong results, so fail loudly."""
    digests = distributed.gather_objects(module_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"the {context.world_size} ranks ended with different weights: {digests}")
    log.info("weights identical on all %d ranks (sha256 %s...)", context.world_size, digests[0][:12])


def export_for_sagemaker(output_dir: Path, model_dir: Path, config: dict[str, Any]) -> None:
    """Into SM_MODEL_DIR, which SageMaker tars into the job's model.tar.gz: what `deploy package` needs
    (weights, labels, model_info.json with the image size and versions, the config) and metrics.json,
    the launcher's objective."""
    names = [checkpoint.WEIGHTS_NAME, reports.LABELS_NAME, reports.METRICS_JSON, ".hydra/config.yaml"]
    for name in names:
        if (output_dir / name).is_file():
            (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(output_dir / name, model_dir / name)
    reports.write_model_info(config, model_dir / reports.MODEL_INFO_NAME)
    log.info("copied %s and wrote %s to %s", ", ".join(names), reports.MODEL_INFO_NAME, model_dir)
