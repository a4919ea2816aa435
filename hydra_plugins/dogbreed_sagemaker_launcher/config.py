"""The launcher's keys, `hydra.launcher.*` (docs/DESIGN.md §13). Defaults match `LaunchSettings`."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class SageMakerLauncherConf:
    _target_: str = "hydra_plugins.dogbreed_sagemaker_launcher.sagemaker_launcher.SageMakerLauncher"
    s3_uri: str | None = None  # required: code bundles, job outputs and checkpoints go under it
    name: str = "dogbreed"
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_gb: int = 50
    max_runtime_s: int = 86400
    spot: bool = False
    max_wait_s: int | None = None  # spot only; null: twice max_runtime_s
    input_mode: str = "FastFile"
    role_arn: str | None = None  # null: create <name>-sagemaker-training
    image_uri: str | None = None  # null: the PyTorch 2.6 training image, CPU or GPU by instance type
    permissions_boundary: str = "dogbreed-boundary"
    max_parallel: int = 4
    wait: bool = True
    poll_s: float = 30.0
    region: str | None = None


ConfigStore.instance().store(group="hydra/launcher", name="sagemaker", node=SageMakerLauncherConf, provider="dogbreed")
