"""The EC2 side's config: conf/ami.yaml composed with Hydra, overrides typed `ami.key=value`."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ami.errors import AmiError, AmiOverrideError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """Composes the root config with `overrides` and checks the values launch relies on."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="ami", overrides=overrides or [])
    except (HydraException, OmegaConfBaseException) as err:
        problem = " ".join(str(err).split())  # Hydra's message spans lines; the CLI prints one
        raise AmiOverrideError(f"bad override ({problem}); overrides look like ami.instance_type=c6i.xlarge") from err
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    """Refuses values that would fail half-way through a launch, before anything is created."""
    ami = cfg.ami
    if not isinstance(ami.nodes, int) or ami.nodes < 1:
        raise AmiError(f"ami.nodes must be a whole number >= 1, got {ami.nodes!r}")
    if not isinstance(ami.volume_gb, int) or ami.volume_gb < 8:
        raise AmiError(f"ami.volume_gb must be a whole number of GiB >= 8, got {ami.volume_gb!r}")
    if not str(ami.name).replace("-", "").isalnum():
        raise AmiError(f"ami.name may hold letters, digits and '-' only (it prefixes resource names), got {ami.name!r}")
    if not OmegaConf.is_list(ami.train_overrides):
        example = "\"ami.train_overrides=['trainer.epochs=5','optim.lr=3e-4']\""
        raise AmiError(f"ami.train_overrides is a list of quoted overrides, e.g. {example}")
