"""The Hydra config as the library's plain settings: the one module besides the entry points that reads it.

Library modules take dataclasses and plain values; each config key is read here, once,
so a renamed key has exactly one place to change.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dogbreed.data.synthetic import SyntheticSpec
from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location, make_client
from dogbreed.storage.runs import RESOLVED_CONFIG_NAME, RunUploads, preflight
from dogbreed.storage.transfer import MiB, UploadSettings
from dogbreed.tracking.base import RunInfo, Tracking
from dogbreed.train.features import ExtractionSettings
from dogbreed.train.interrupt import StopRequest
from dogbreed.train.loaders import DataSource, FeatureCacheSettings, LoaderSettings, worker_count

log = logging.getLogger(__name__)


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


def run_name(cfg: Any, output_dir: Path) -> str:
    """`storage.run_name`, else the run dir relative to paths.output_root (or the working dir)."""
    if cfg.storage.get("run_name"):
        return str(cfg.storage.run_name)
    run = output_dir.resolve()
    for base in (Path(cfg.paths.output_root).resolve(), Path.cwd()):
        if run.is_relative_to(base) and run != base:
            return run.relative_to(base).as_posix()
    return run.name


def run_location(cfg: Any, output_dir: Path) -> S3Location:
    """Where the run's artifacts go: `<storage.s3_uri>/<run name>`."""
    if not cfg.storage.get("s3_uri"):
        raise DogbreedError(
            "storage=s3 needs storage.s3_uri=s3://bucket/prefix (or DOGBREED_S3_URI in the environment)"
        )
    return S3Location.parse(str(cfg.storage.s3_uri)).child(run_name(cfg, output_dir))


def optional_seconds(value: Any) -> float | None:
    """A budget in seconds; null (or 0) means no limit."""
    return float(value) if value else None


def upload_settings(storage: Any) -> UploadSettings:
    """The upload settings of a `storage` config group (conf/storage/s3.yaml), in bytes and seconds."""
    return UploadSettings(
        attempts=int(storage.upload_attempts),
        backoff_s=float(storage.retry_backoff_s),
        multipart_threshold=int(storage.multipart_threshold_mb * MiB),
        multipart_chunksize=int(storage.multipart_chunk_mb * MiB),
        max_concurrency=int(storage.max_concurrency),
        budget_s=optional_seconds(storage.upload_budget_s),
    )


def storage_client(storage: Any) -> Any:
    """An S3 client with the per-request tries and timeouts of a `storage` config group."""
    return make_client(
        max_attempts=int(storage.request_attempts),
        connect_timeout_s=float(storage.connect_timeout_s),
        read_timeout_s=float(storage.read_timeout_s),
    )


def run_uploads(cfg: Any, run_dir: Path) -> RunUploads | None:
    """The run's uploads as the training config sets them; None unless `storage.backend` is s3.

    First checks that the bucket takes writes under the run's prefix (`storage.preflight`:
    seconds, within `storage.upload_budget_s`), so a wrong `storage.s3_uri` fails the run
    before any data is prepared. Then writes the resolved config into the run dir, so it goes
    up with the artifacts.
    """
    if cfg.storage.backend != "s3":
        return None
    dest = run_location(cfg, run_dir)
    storage = cfg.storage
    settings, client = upload_settings(storage), storage_client(storage)
    preflight(client, dest, settings.budget_s)
    # .hydra/config.yaml keeps interpolations; this copy says exactly what ran.
    (run_dir / RESOLVED_CONFIG_NAME).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return RunUploads.start(
        run_dir,
        dest,
        run_name(cfg, run_dir),
        settings,
        client,
        bool(storage.upload_checkpoints),
        optional_seconds(storage.interrupt_upload_budget_s),
    )


def stop_request(interrupt: DictConfig) -> StopRequest:
    """Signals always stop a run; `trainer.interrupt.spot_notice` adds the EC2 spot-notice poller."""
    return StopRequest(interrupt.imds_endpoint if interrupt.spot_notice else None, float(interrupt.spot_poll_s))


def sweep_dir() -> Path | None:
    """The multirun directory when this job is a trial of a Hydra sweep, else None."""
    if not HydraConfig.initialized():  # a config composed by hand (tests, notebooks)
        return None
    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir).resolve() if hydra.mode == RunMode.MULTIRUN else None


def tracking(cfg: DictConfig, output_dir: Path, params: dict[str, Any], is_main: bool) -> Tracking:
    """Rank 0's loggers from the `logger` group; `csv` has none (its files are always written)."""
    if not is_main:
        return Tracking([], None)
    chosen = cfg.get("logger") or {}
    # Plain values in the group (logger.tracking_uri, logger.experiment) are settings, not loggers.
    loggers = [instantiate(node) for node in chosen.values() if isinstance(node, DictConfig) and "_target_" in node]
    return Tracking(loggers, RunInfo(run_name(cfg, output_dir), output_dir, params, sweep_dir()))
