"""conf/ami.yaml composes with the documented keys; run requests and the code archive carry the safety settings."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ami.config import load_config
from ami.instances import run_request
from ami.launcher import INSTANCE_SOURCES
from dogbreed.aws.code_bundle import PROJECT, build_archive
from dogbreed.errors import DogbreedError

DOCUMENTED_KEYS = {
    "name",
    "instance_type",
    "ami_ssm_parameter",
    "ssh_cidr",
    "key_name",
    "s3_uri",
    "volume_gb",
    "spot",
    "nodes",
    "train_overrides",
    "on_finish",
    "idle_timeout_min",
    "run_name",
}


def test_the_documented_keys_exist_and_overrides_apply() -> None:
    cfg = load_config(["ami.instance_type=g4dn.xlarge", "ami.spot=true", "ami.s3_uri=s3://b/p"])
    assert set(cfg.ami) >= DOCUMENTED_KEYS
    assert (cfg.ami.instance_type, cfg.ami.spot, cfg.ami.s3_uri) == ("g4dn.xlarge", True, "s3://b/p")
    assert cfg.ami.ami_ssm_parameter.startswith("/aws/service/deeplearning/ami/x86_64/")
    assert cfg.ami.ami_ssm_parameter.endswith("/latest/ami-id")
    assert cfg.ami.ssh_cidr is None and cfg.ami.allow_open_ssh is False
    # documented defaults: on_finish by market, an idle box stops after an hour, the run named at launch
    assert (cfg.ami.on_finish, cfg.ami.idle_timeout_min, cfg.ami.run_name) == (None, 60, None)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ami.bogus=1", "bad override"),
        ("ami.nodes=two", "ami.nodes"),
        ("ami.volume_gb=4", "ami.volume_gb"),
        ("ami.name=my_project!", "ami.name"),
        ("ami.train_overrides=trainer.epochs", "list of quoted overrides"),
        ("ami.ssh_cidr=0.0.0.0/1", "wider than ami.ssh_min_prefix=/24"),
        ("ami.ssh_cidr=10.0.0.0/8", "ami.allow_open_ssh=true"),
        ("ami.ssh_cidr=203.0.113.0/23", "ami.ssh_min_prefix"),
        ("ami.ssh_cidr=2001:db8::/32", "wider than ami.ssh_min_prefix_ipv6=/64"),
        ("ami.ssh_min_prefix=33", "ami.ssh_min_prefix must be a prefix length from 0 to 32"),
        ("ami.permissions_boundary=a/b", "ami.permissions_boundary"),
        ("ami.on_finish=halt", "ami.on_finish must be stop, terminate, none"),
        ("ami.idle_timeout_min=0", "ami.idle_timeout_min"),
        ("ami.run_name=a/b", "ami.run_name"),
    ],
)
def test_bad_overrides_are_refused_before_any_aws_call(override: str, message: str) -> None:
    with pytest.raises(DogbreedError, match=message):
        load_config([override])


@pytest.mark.parametrize(
    "override",
    [
        ["ami.ssh_cidr=203.0.113.0/24"],
        ["ami.ssh_cidr=203.0.113.7/32"],
        ["ami.ssh_cidr=2001:db8::/64"],
        ["ami.ssh_cidr=10.0.0.0/8", "ami.ssh_min_prefix=8"],
        ["ami.ssh_cidr=0.0.0.0/1", "ami.allow_open_ssh=true"],
    ],
)
def test_narrow_enough_or_forced_ssh_ranges_are_accepted(override: list[str]) -> None:
    load_config(override)


def request(**changes: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "name": "dogbreed",
        "image_id": "ami-123",
        "root_device": "/dev/sda1",
        "instance_type": "c6i.xlarge",
        "key_name": "dogbreed-key",
        "group_id": "sg-1",
        "profile_arn": "arn:aws:iam::123456789012:instance-profile/dogbreed",
        "user_data": "#!/bin/bash\n",
        "volume_gb": 100,
        "spot": False,
        "spot_max_price": None,
        "shutdown_behavior": "stop",
        "run_name": "dogbreed-20261202-030000",
    }
    return run_request(**{**settings, **changes})


def test_on_demand_request_is_locked_down() -> None:
    sent = request()
    assert sent["MetadataOptions"]["HttpTokens"] == "required"
    (mapping,) = sent["BlockDeviceMappings"]
    assert mapping == {
        "DeviceName": "/dev/sda1",
        "Ebs": {"VolumeSize": 100, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True},
    }
    assert {spec["ResourceType"] for spec in sent["TagSpecifications"]} == {"instance", "volume"}
    assert "InstanceMarketOptions" not in sent
    assert sent["InstanceInitiatedShutdownBehavior"] == "stop"


def test_spot_comes_from_a_persistent_request_that_stops_on_interruption_and_caps_the_price() -> None:
    sent = request(spot=True, spot_max_price=0.08)
    assert sent["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop", "MaxPrice": "0.0800"},
    }
    # the request carries the project tags, so down finds and cancels it
    (tagged,) = [spec for spec in sent["TagSpecifications"] if spec["ResourceType"] == "spot-instances-request"]
    assert {"Key": "dogbreed:name", "Value": "dogbreed"} in tagged["Tags"]
    # the bootstrap reads its request id from the instance's tags
    assert sent["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    assert "MaxPrice" not in request(spot=True)["InstanceMarketOptions"]["SpotOptions"]


def test_code_archive_is_reproducible_and_holds_only_the_training_project() -> None:
    first = build_archive(PROJECT, INSTANCE_SOURCES)
    assert build_archive(PROJECT, INSTANCE_SOURCES) == first  # same sources, same bytes, same hash in the S3 key
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert {"pyproject.toml", "train.py", "conf/train.yaml", "dogbreed/train/run.py"} <= set(names)
    # train.py composes from all of conf/: every group and the help template travel with it.
    root = Path(__file__).resolve().parents[2]
    assert {p.relative_to(root).as_posix() for p in (root / "conf").rglob("*.yaml")} <= set(names)
    assert not [n for n in names if n.startswith(("ami/", "tests/", "deploy/")) or "__pycache__" in n]


def test_code_archive_outside_a_checkout_says_so(tmp_path: Path) -> None:
    with pytest.raises(DogbreedError, match="checkout"):
        build_archive(tmp_path, INSTANCE_SOURCES)
