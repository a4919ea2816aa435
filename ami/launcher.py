"""Launch, status, ssh and teardown: composes the per-service wrappers in the order AWS needs.

Every resource is named from `ami.name` and tagged, so a second launch finds and reuses what
exists and `down` removes exactly what launch made, even when some of it is already gone.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from ami import network, userdata
from ami.code_archive import build_archive, code_uri, upload_code
from ami.errors import AmiError
from ami.iam import InstanceProfiles, project_location
from ami.instances import Instances, run_request, tags_for
from ami.keypair import KeyPairs
from ami.ssm import latest_ami_id
from dogbreed.iam import boundary_arn, check_boundary

log = logging.getLogger(__name__)


@dataclass
class Clients:
    """The boto3 clients one command needs; built from the standard boto3 config (env, profile)."""

    ec2: Any
    iam: Any
    ssm: Any
    s3: Any
    # The account id goes into the permissions boundary's ARN.
    sts: Any
    # ARNs differ outside the commercial regions (aws-cn, aws-us-gov).
    partition: str = "aws"

    @classmethod
    def create(cls, region: str | None) -> Clients:
        session = boto3.Session(region_name=region)
        ec2, iam, ssm, s3, sts = (session.client(name) for name in ("ec2", "iam", "ssm", "s3", "sts"))
        return cls(ec2, iam, ssm, s3, sts, partition=session.get_partition_for_region(ec2.meta.region_name))


def key_name(cfg: Any) -> str:
    return cfg.key_name or f"{cfg.name}-key"


def key_file(cfg: Any) -> Path:
    """Where the private key of a created key pair lives (a user-named key is the user's business)."""
    return Path(cfg.key_dir).expanduser() / f"{key_name(cfg)}.pem"


def ssh_command(cfg: Any, instance: dict[str, Any]) -> list[str]:
    """The ssh command line for `instance`."""
    address = instance.get("PublicDnsName") or instance.get("PublicIpAddress")
    if not address:
        raise AmiError(f"{instance['InstanceId']} has no public address (is it in a subnet without one?)")
    command = ["ssh"]
    if not cfg.key_name:
        command += ["-i", str(key_file(cfg))]
    return [*command, f"{cfg.ssh_user}@{address}"]


def launch(cfg: DictConfig, clients: Clients) -> list[dict[str, Any]]:
    """Creates or reuses everything and returns the running instances (node 0 first)."""
    ami = cfg.ami
    try:
        s3_uri = str(ami.s3_uri).rstrip("/")
    except MissingMandatoryValue:
        raise AmiError("set ami.s3_uri=s3://bucket/prefix: the instance gets its code and data there") from None
    project_location(s3_uri)
    # Everything that can be refused is checked before the first resource is created.
    cidr = network.ssh_cidr(ami)
    archive = build_archive()
    values = {
        "CODE_URI": code_uri(s3_uri, archive),
        "S3_URI": s3_uri,
        "DATA_URI": str(ami.data_uri or f"{s3_uri}/data/dogImages"),
        "TRAIN": "1" if ami.train else "0",
        "TRAIN_ARGS": userdata.train_args([str(override) for override in ami.train_overrides]),
        "NODES": str(ami.nodes),
        "RDZV_PORT": str(ami.rendezvous_port),
        "RUN_AS": ami.ssh_user,
    }
    userdata.render(values)
    profiles = InstanceProfiles(clients.iam, clients.partition)
    account = clients.sts.get_caller_identity()["Account"]
    boundary = boundary_arn(clients.partition, account, ami.permissions_boundary)
    check_boundary(clients.iam, boundary, "ami.permissions_boundary", AmiError)
    image_id = latest_ami_id(clients.ssm, ami.ami_ssm_parameter)
    tags = tags_for(ami.name)
    keys = KeyPairs(clients.ec2)
    if ami.key_name:
        keys.ensure_existing(ami.key_name)
    else:
        keys.ensure_created(key_name(ami), key_file(ami), tags)
    group_id = network.SecurityGroups(clients.ec2).ensure(
        ami.name, cidr, tags, ami.rendezvous_port if ami.nodes > 1 else None
    )
    profile_arn = profiles.ensure(ami.name, s3_uri, tags, boundary)
    # The group and policy above were brought up to date (a new address, a new prefix) even when reusing.
    instances = Instances(clients.ec2, wait_timeout_s=ami.wait_timeout_s)
    running = instances.find(ami.name)
    if running:
        log.info("%s already has %d instance(s); reusing them (ami down starts over)", ami.name, len(running))
        return running
    upload_code(clients.s3, values["CODE_URI"], archive)
    common = {
        "image_id": image_id,
        "root_device": instances.root_device(image_id),
        "instance_type": ami.instance_type,
        "key_name": key_name(ami),
        "group_id": group_id,
        "profile_arn": profile_arn,
        "volume_gb": ami.volume_gb,
        "spot": ami.spot,
        "spot_max_price": ami.spot_max_price,
    }
    log.info("launching %d x %s from %s (%s)", ami.nodes, ami.instance_type, image_id, ami.ami_ssm_parameter)
    first = instances.run(run_request(name=ami.name, user_data=userdata.render(values), **common))
    started = [first]
    # The other nodes meet at node 0's private address, known only once it runs.
    values["RDZV_HOST"] = first.get("PrivateIpAddress", "")
    for _ in range(1, ami.nodes):
        started.append(instances.run(run_request(name=ami.name, user_data=userdata.render(values), **common)))
    return started


def status(cfg: DictConfig, clients: Clients) -> list[dict[str, Any]]:
    """The project's live instances."""
    return Instances(clients.ec2).find(cfg.ami.name)


def describe(cfg: DictConfig, instance: dict[str, Any]) -> str:
    """One line per instance: id, type, state, market, address and how to log in."""
    market = instance.get("InstanceLifecycle", "on-demand")
    line = f"{instance['InstanceId']}  {instance['InstanceType']}  {instance['State']['Name']}  {market}"
    if instance["State"]["Name"] == "running":
        line += "  " + shlex.join(ssh_command(cfg.ami, instance))
    return line


def down(cfg: DictConfig, clients: Clients) -> list[str]:
    """Terminates the instances, then removes group, profile, role and a created key pair; says what went."""
    ami = cfg.ami
    instances = Instances(clients.ec2, wait_timeout_s=ami.wait_timeout_s)
    removed = [instance["InstanceId"] for instance in instances.find(ami.name)]
    instances.terminate(removed)
    if network.SecurityGroups(clients.ec2).delete(ami.name):
        removed.append(f"security group {ami.name}")
    if InstanceProfiles(clients.iam).delete(ami.name):
        removed.append(f"instance profile and role {ami.name}")
    if KeyPairs(clients.ec2).delete_if_created(key_name(ami), key_file(ami)):
        removed.append(f"key pair {key_name(ami)}")
    return removed
