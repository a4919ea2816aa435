"""The Hydra config as one frozen `RunSettings`, built once at the top of a run: the only module of the
library that reads the config.

Every config key is read here, so a renamed key has exactly one place to change; everything below
`dogbreed.train.run.train` takes these settings or plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dogbreed.data.synthetic import SyntheticSpec
from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location, make_client
from dogbreed.storage.transfer import MiB, UploadSettings
from dogbreed.train.features import ExtractionSettings
from dogbreed.train.fit import Schedule
from dogbreed.train.loaders import DataSource, FeatureCacheSettings, LoaderSettings, use_feature_cache, worker_count


@dataclass(frozen=True)
class NetworkSettings:
    """The `model` group: which network, how it starts, what trains."""

    arch: str
    head: str
    mlp_hidden: int
    pretrained: bool
    init_weights: Path | None  # an earlier run's model.pth to start the backbone from
    freeze: str


@dataclass(frozen=True)
class OptimizerSettings:
    """The `optim` group: the optimizer's node (a partial `_target_`) and whether its lr grows with the ranks."""

    node: Mapping[str, Any]
    scale_lr_with_batch: bool


@dataclass(frozen=True)
class S3Settings:
    """`storage=s3`: where the run's artifacts go and how the uploads behave.

    Attributes:
        dest: `<storage.s3_uri>/<run name>`.
        run_name: The run's name under `storage.s3_uri`.
        uploads: Tries, parts and the time budget of each upload.
        request_attempts / connect_timeout_s / read_timeout_s: Each S3 request's own tries and timeouts.
        upload_checkpoints: Upload `checkpoint.pt` after the epochs that write one.
        interrupt_budget_s: The time the checkpoint upload of a stop may take (None: no limit).
    """

    dest: S3Location
    run_name: str
    uploads: UploadSettings
    request_attempts: int
    connect_timeout_s: float
    read_timeout_s: float
    upload_checkpoints: bool
    interrupt_budget_s: float | None

    def client(self) -> Any:
        """An S3 client with these per-request tries and timeouts."""
        return make_client(self.request_attempts, self.connect_timeout_s, self.read_timeout_s)


@dataclass(frozen=True)
class TrackingSettings:
    """The `logger` group: each logger's node (instantiated on rank 0 only), and what names the run."""

    loggers: tuple[Mapping[str, Any], ...]
    run_name: str
    sweep_dir: Path | None  # the multirun directory when this run is a trial of a sweep


@dataclass(frozen=True)
class RunSettings:
    """Everything one training run is told, built once from the config by `run_settings`."""

    output_dir: Path
    output_root: Path  # where `trainer.resume=auto` looks for unfinished runs
    model_dir: Path | None  # SageMaker's SM_MODEL_DIR
    cache_dir: Path
    device: str
    precision: str
    channels_last: bool
    seed: int
    spot_notice_endpoint: str | None  # IMDS to poll for EC2 spot notices; None: signals only
    spot_poll_s: float
    data: DataSource
    scan_workers: int
    loader: LoaderSettings
    feature_cache: FeatureCacheSettings | None  # None: the whole model trains on images
    network: NetworkSettings
    optimizer: OptimizerSettings
    scheduler: Mapping[str, Any]  # the `sched` node (a partial _target_)
    schedule: Schedule
    label_smoothing: float
    compile: str  # auto | true | false
    resume: str | None
    storage: S3Settings | None  # None with storage=local
    tracking: TrackingSettings
    config: Mapping[str, Any]  # the resolved config, saved in checkpoints and model_info.json
    overrides: tuple[str, ...]  # the command line's overrides, for the command that resumes the run


def run_settings(cfg: DictConfig) -> RunSettings:
    """The composed `train.yaml` config as `RunSettings`.

    Raises:
        DogbreedError: storage=s3 without storage.s3_uri.
    """
    trainer, data, model, paths = cfg.trainer, cfg.data, cfg.model, cfg.paths
    output_dir = Path(paths.output_dir)
    interrupt = trainer.interrupt
    return RunSettings(
        output_dir=output_dir,
        output_root=Path(paths.output_root),
        model_dir=Path(paths.model_dir) if paths.get("model_dir") else None,
        cache_dir=Path(paths.cache_dir),
        device=str(trainer.device),
        precision=str(trainer.precision),
        channels_last=bool(trainer.channels_last),
        seed=int(trainer.seed),
        spot_notice_endpoint=str(interrupt.imds_endpoint) if interrupt.spot_notice else None,
        spot_poll_s=float(interrupt.spot_poll_s),
        data=data_source(data),
        scan_workers=worker_count(data.scan_workers),
        loader=loader_settings(cfg),
        feature_cache=feature_cache_settings(cfg) if use_feature_cache(trainer.feature_cache, model.freeze) else None,
        network=NetworkSettings(
            arch=str(model.arch),
            head=str(model.head),
            mlp_hidden=int(model.mlp_hidden),
            pretrained=bool(model.pretrained),
            init_weights=Path(model.init_weights) if model.get("init_weights") else None,
            freeze=str(model.freeze),
        ),
        optimizer=optimizer_settings(cfg.optim),
        scheduler=container(cfg.sched),
        schedule=Schedule(
            epochs=int(trainer.epochs),
            seed=int(trainer.seed),
            limit_batches=trainer.limit_batches,
            patience=trainer.early_stopping_patience,
            progress=bool(trainer.progress_bar),
            checkpoint_every_s=float(trainer.checkpoint_every_s),
        ),
        label_smoothing=float(trainer.label_smoothing),
        compile=str(trainer.compile).lower(),
        resume=str(trainer.resume) if trainer.resume else None,
        storage=s3_settings(cfg, output_dir) if cfg.storage.backend == "s3" else None,
        tracking=tracking_settings(cfg, output_dir),
        config=container(cfg),
        overrides=tuple(HydraConfig.get().overrides.task) if HydraConfig.initialized() else (),
    )


def container(node: DictConfig) -> dict[str, Any]:
    """A config node as plain, resolved dicts and lists."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))


def optimizer_settings(optim: DictConfig) -> OptimizerSettings:
    """The `optim` group; `scale_lr_with_batch` is ours, not the optimizer's."""
    node = container(optim)
    scale = bool(node.pop("scale_lr_with_batch", False))
    return OptimizerSettings(node, scale)


def data_source(data: DictConfig) -> DataSource:
    """The `data` config group as a `DataSource`."""
    synthetic = SyntheticSpec(**data.synthetic) if data.synthetic is not None else None
    return DataSource(str(data.root), synthetic, data.download_url, data.expected_classes, Path(data.s3_cache))


def loader_settings(cfg: DictConfig) -> LoaderSettings:
    """How the loaders batch and decode, from `data` and the `trainer.seed`."""
    return LoaderSettings(
        image_size=cfg.data.image_size,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        workers=worker_count(cfg.data.num_workers),
        seed=cfg.trainer.seed,
        decode_on_device=cfg.data.decode_on_device,
    )


def feature_cache_settings(cfg: DictConfig) -> FeatureCacheSettings:
    """Where and how backbone features are cached, from `paths`, `data` and `trainer`."""
    trainer = cfg.trainer
    extraction = ExtractionSettings(
        image_size=cfg.data.image_size,
        batch_size=trainer.extract_batch_size,
        num_workers=worker_count(cfg.data.num_workers),
        compile=str(trainer.compile).lower(),
        seed=trainer.seed,
        progress=trainer.progress_bar,
    )
    return FeatureCacheSettings(Path(cfg.paths.cache_dir) / "features", trainer.feature_cache_views, extraction)


def run_name(cfg: DictConfig, output_dir: Path) -> str:
    """`storage.run_name`, else the run dir relative to paths.output_root (or the working dir)."""
    if cfg.storage.get("run_name"):
        return str(cfg.storage.run_name)
    run = output_dir.resolve()
    for base in (Path(cfg.paths.output_root).resolve(), Path.cwd()):
        if run.is_relative_to(base) and run != base:
            return run.relative_to(base).as_posix()
    return run.name


def optional_seconds(value: Any) -> float | None:
    """A budget in seconds; null (or 0) means no limit."""
    return float(value) if value else None


def s3_settings(cfg: DictConfig, output_dir: Path) -> S3Settings:
    """The `storage` group of storage=s3 (conf/storage/s3.yaml), in bytes and seconds."""
    storage = cfg.storage
    if not storage.get("s3_uri"):
        raise DogbreedError(
            "storage=s3 needs storage.s3_uri=s3://bucket/prefix (or DOGBREED_S3_URI in the environment)"
        )
    name = run_name(cfg, output_dir)
    return S3Settings(
        dest=S3Location.parse(str(storage.s3_uri)).child(name),
        run_name=name,
        uploads=UploadSettings(
            attempts=int(storage.upload_attempts),
            backoff_s=float(storage.retry_backoff_s),
            multipart_threshold=int(storage.multipart_threshold_mb * MiB),
            multipart_chunksize=int(storage.multipart_chunk_mb * MiB),
            max_concurrency=int(storage.max_concurrency),
            budget_s=optional_seconds(storage.upload_budget_s),
        ),
        request_attempts=int(storage.request_attempts),
        connect_timeout_s=float(storage.connect_timeout_s),
        read_timeout_s=float(storage.read_timeout_s),
        upload_checkpoints=bool(storage.upload_checkpoints),
        interrupt_budget_s=optional_seconds(storage.interrupt_upload_budget_s),
    )


def tracking_settings(cfg: DictConfig, output_dir: Path) -> TrackingSettings:
    """The loggers of the `logger` group; `csv` has none (its files are always written)."""
    chosen = cfg.get("logger") or {}
    # Plain values in the group (logger.tracking_uri, logger.experiment) are settings, not loggers.
    nodes = tuple(container(node) for node in chosen.values() if isinstance(node, DictConfig) and "_target_" in node)
    return TrackingSettings(nodes, run_name(cfg, output_dir), sweep_dir())


def sweep_dir() -> Path | None:
    """The multirun directory when this job is a trial of a Hydra sweep, else None."""
    if not HydraConfig.initialized():  # a config composed by hand (tests, notebooks)
        return None
    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir).resolve() if hydra.mode == RunMode.MULTIRUN else None


def resolved_yaml(config: Mapping[str, Any]) -> str:
    """The resolved config as YAML: what a run's `config.yaml` in S3 says ran."""
    return OmegaConf.to_yaml(OmegaConf.create(dict(config)))
