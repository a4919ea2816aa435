"""The EC2 side's config: conf/ami.yaml composed with Hydra, overrides typed `ami.key=value`."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ami.errors import AmiError
from dogbreed.aws.iam import POLICY_NAME_PATTERN
from dogbreed.cli import compose_config
from dogbreed.storage.location import S3AddressError, S3Location

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """Composes the root config with `overrides` and checks the values launch relies on."""
    cfg = compose_config("ami", overrides or [], "ami.instance_type=c6i.xlarge")
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
    if not POLICY_NAME_PATTERN.match(str(ami.permissions_boundary or "")):
        raise AmiError(
            f"ami.permissions_boundary={ami.permissions_boundary!r}: the name of the boundary policy "
            "(default dogbreed-boundary), letters, digits and +=,.@_-"
        )
    if ami.on_finish not in (None, "stop", "terminate", "none"):
        raise AmiError(f"ami.on_finish must be stop, terminate, none or null (by market), got {ami.on_finish!r}")
    idle = ami.idle_timeout_min
    if idle is not None and (not isinstance(idle, int) or isinstance(idle, bool) or idle < 1):
        raise AmiError(f"ami.idle_timeout_min must be a whole number of minutes >= 1, or null (never), got {idle!r}")
    if ami.run_name is not None and not RUN_NAME.fullmatch(str(ami.run_name)):
        raise AmiError(f"ami.run_name may hold letters, digits and -_. only (it is an S3 folder), got {ami.run_name!r}")
    check_ssh_range(ami)


def check_ssh_range(ami: Any) -> None:
    """Refuses an `ami.ssh_cidr` wider than `ami.ssh_min_prefix` (IPv6: `ssh_min_prefix_ipv6`) unless forced.

    A range that does not parse is left to the launch, which says how to write one.
    """
    for key, most in (("ssh_min_prefix", 32), ("ssh_min_prefix_ipv6", 128)):
        if not isinstance(ami[key], int) or not 0 <= ami[key] <= most:
            raise AmiError(f"ami.{key} must be a prefix length from 0 to {most}, got {ami[key]!r}")
    if ami.ssh_cidr is None or ami.allow_open_ssh:
        return
    try:
        network = ipaddress.ip_network(str(ami.ssh_cidr), strict=False)
    except ValueError:
        return
    key = "ssh_min_prefix" if network.version == 4 else "ssh_min_prefix_ipv6"
    if network.prefixlen < ami[key]:
        raise AmiError(
            f"ami.ssh_cidr={ami.ssh_cidr} admits {network.num_addresses} addresses, wider than "
            f"ami.{key}=/{ami[key]}; use your own address as a /{network.max_prefixlen}, lower ami.{key}, "
            "or add ami.allow_open_ssh=true if you really mean it"
        )


def project_location(s3_uri: str) -> S3Location:
    """`ami.s3_uri` as an address whose key has no slashes at its ends ("" for a bare bucket).

    Raises:
        AmiError: `s3_uri` is not an `s3://bucket/prefix` address (the message names the setting).
    """
    try:
        location = S3Location.parse(s3_uri)
    except S3AddressError:
        raise AmiError(f"ami.s3_uri must look like s3://bucket/prefix, got {s3_uri!r}") from None
    return S3Location(location.bucket, location.key.strip("/"))
