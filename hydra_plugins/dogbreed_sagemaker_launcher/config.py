"""The launcher's keys, `hydra.launcher.*`: `dogbreed.sagemaker.settings.LaunchSettings` plus Hydra's `_target_`.

Made from LaunchSettings' fields, so the plugin and the library cannot disagree on a key or a default.
"""

import dataclasses
import typing

from hydra.core.config_store import ConfigStore

from dogbreed.sagemaker.settings import LaunchSettings

TARGET = "hydra_plugins.dogbreed_sagemaker_launcher.sagemaker_launcher.SageMakerLauncher"
KEY_TYPES = typing.get_type_hints(LaunchSettings)

SageMakerLauncherConf = dataclasses.make_dataclass(
    "SageMakerLauncherConf",
    [("_target_", str, dataclasses.field(default=TARGET))]
    + [
        (key.name, KEY_TYPES[key.name], dataclasses.field(default=key.default, default_factory=key.default_factory))
        for key in dataclasses.fields(LaunchSettings)
    ],
)

ConfigStore.instance().store(group="hydra/launcher", name="sagemaker", node=SageMakerLauncherConf, provider="dogbreed")
