"""Launch, status, ssh and teardown: composes the per-service wrappers in the order AWS needs.

Every resource is named from `ami.name` and tagged, so a second launch finds and reuses what
exists and `down` removes exactly what launch made, even when some of it is already gone.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from ami import network, userdata
from ami.config import project_location
from ami.errors import AmiError
from ami.instances import RUN_TAG, Instances, run_request, tags_for
from ami.keypair import KeyPairs
from ami.logs import TrainLogs, log_group
from ami.policies import OWN_POLICY_NAME, POLICY_NAME, own_resources_policy, s3_prefix_policy
from ami.preflight import check_account, run_checks
from ami.results import pull, run_names
from dogbreed.aws import boundary, code_bundle, iam
from dogbreed.aws.iam import boundary_arn, check_boundary
from dogbreed.storage.location import S3Location

log = logging.getLogger(__name__)

EC2 = "ec2.amazonaws.com"
# What `make setup-dlami` and `python train.py` need on the instance; ami/ and deploy/ stay home.
INSTANCE_SOURCES = ("pyproject.toml", "README.md", "Makefile", "train.py", "conf", "dogbreed")


@dataclass
class Clients:
    """The boto3 clients one command needs; built from the standard boto3 config (env, profile)."""

    ec2: Any
    iam: Any
    ssm: Any
    s3: Any
    # The account id goes into the permissions boundary's ARN.
    sts: Any
    logs: Any
    quotas: Any
    # ARNs differ outside the commercial regions (aws-cn, aws-us-gov).
    partition: str = "aws"

    @classmethod
    def create(cls, region: str | None) -> Clients:
        session = boto3.Session(region_name=region)
        names = ("ec2", "iam", "ssm", "s3", "sts", "logs", "service-quotas")
        ec2, iam, ssm, s3, sts, logs, quotas = (session.client(name) for name in names)
        partition = session.get_partition_for_region(ec2.meta.region_name)
        return cls(ec2, iam, ssm, s3, sts, logs, quotas, partition=partition)


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


@dataclass
class Plan:
    """What a launch will create, worked out and checked before anything exists."""

    values: dict[str, str]
    archive: bytes
    cidr: str
    boundary: str
    image_id: str
    account: str


@dataclass
class Made:
    """What this launch created (not reused), so a failure part-way removes exactly that."""

    key_pair: bool = False
    group: bool = False
    role: bool = False
    instance_ids: list[str] = field(default_factory=list)


def on_finish(ami: Any) -> str:
    """`ami.on_finish`, with null meaning terminate for spot and stop on-demand."""
    return str(ami.on_finish or ("terminate" if ami.spot else "stop"))


def plan(cfg: DictConfig, clients: Clients) -> Plan:
    """Checks everything that can be refused (config, address, user data, AWS preflight); creates nothing."""
    ami = cfg.ami
    try:
        s3_uri = str(ami.s3_uri).rstrip("/")
    except MissingMandatoryValue:
        raise AmiError("set ami.s3_uri=s3://bucket/prefix: the instance gets its code and data there") from None
    project = project_location(s3_uri)
    cidr = network.ssh_cidr(ami)
    archive = code_bundle.build_archive(code_bundle.PROJECT, INSTANCE_SOURCES)
    values = {
        "CODE_URI": project.child(f"code/{code_bundle.archive_name('dogbreed', archive)}").uri,
        "S3_URI": s3_uri,
        "DATA_URI": str(ami.data_uri or f"{s3_uri}/data/dogImages"),
        "TRAIN": "1" if ami.train else "0",
        "TRAIN_ARGS": userdata.train_args([str(override) for override in ami.train_overrides]),
        "NODES": str(ami.nodes),
        "RDZV_PORT": str(ami.rendezvous_port),
        "RUN_AS": ami.ssh_user,
        "RUN_NAME": str(ami.run_name or f"{ami.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"),
        "REGION": clients.ec2.meta.region_name,
        "ON_FINISH": on_finish(ami),
        "IDLE_S": str(60 * ami.idle_timeout_min if ami.idle_timeout_min else 0),
        "LOG_GROUP": log_group(ami.name),
    }
    userdata.render(values)
    account, image_id = run_checks(clients, ami, project)
    arn = boundary_arn(clients.partition, account, ami.permissions_boundary)
    check_boundary(clients.iam, arn, "ami.permissions_boundary", AmiError, project.uri.rstrip("/"))
    # The instance role reads its code and data and writes its runs under the prefix.
    boundary.check_prefix(clients.iam, arn, project, "ami.s3_uri", AmiError)
    check_account(clients, ami, account, arn)
    return Plan(values, archive, cidr, arn, image_id, account)


def launch(cfg: DictConfig, clients: Clients) -> list[dict[str, Any]]:
    """Creates or reuses everything and returns the running instances (node 0 first).

    Nothing is created before every check passed; a failure after that removes what this
    launch created (the key pair and its local file included) and re-raises.
    """
    checked = plan(cfg, clients)
    made = Made()
    try:
        return create(cfg.ami, clients, checked, made)
    except BaseException:
        undo(cfg.ami, clients, made)
        raise


def create(ami: Any, clients: Clients, checked: Plan, made: Made) -> list[dict[str, Any]]:
    """Brings key pair, group, role, log group and instances into being, noting in `made` what is new."""
    extra = {str(k): str(v) for k, v in ami.tags.items()}
    tags = tags_for(ami.name, extra)
    keys = KeyPairs(clients.ec2)
    if ami.key_name:
        keys.ensure_existing(ami.key_name)
    else:
        made.key_pair = keys.ensure_created(key_name(ami), key_file(ami), tags)
    groups = network.SecurityGroups(clients.ec2)
    made.group = groups.find(ami.name) is None
    group_id = groups.ensure(ami.name, checked.cidr, tags, between_nodes=ami.nodes > 1)
    made.role = not iam.role_exists(clients.iam, ami.name)
    profile_arn = ensure_instance_role(ami.name, clients, checked, tags)
    TrainLogs(clients.logs).ensure_group(log_group(ami.name), {tag["Key"]: tag["Value"] for tag in tags})
    # The group and policy above were brought up to date (a new address, a new prefix) even when reusing.
    instances = Instances(clients.ec2, wait_timeout_s=ami.wait_timeout_s)
    running = instances.find(ami.name)
    if running:
        log.info("%s already has %d instance(s); reusing them (ami down starts over)", ami.name, len(running))
        return running
    code_bundle.upload_once(clients.s3, S3Location.parse(checked.values["CODE_URI"]), checked.archive)
    common = {
        "image_id": checked.image_id,
        "root_device": instances.root_device(checked.image_id),
        "instance_type": ami.instance_type,
        "key_name": key_name(ami),
        "group_id": group_id,
        "profile_arn": profile_arn,
        "volume_gb": ami.volume_gb,
        "spot": ami.spot,
        "spot_max_price": ami.spot_max_price,
        "shutdown_behavior": "terminate" if checked.values["ON_FINISH"] == "terminate" else "stop",
        "run_name": checked.values["RUN_NAME"],
        "extra_tags": extra,
    }
    values = dict(checked.values)
    log.info("launching %d x %s from %s (%s)", ami.nodes, ami.instance_type, checked.image_id, ami.ami_ssm_parameter)
    started: list[dict[str, Any]] = []
    for _ in range(ami.nodes):
        instance = instances.run(run_request(name=ami.name, user_data=userdata.render(values), **common))
        made.instance_ids.append(instance["InstanceId"])
        started.append(instance)
        # The other nodes meet at node 0's private address, known only once it runs.
        values["RDZV_HOST"] = started[0].get("PrivateIpAddress", "")
    return started


def ensure_instance_role(name: str, clients: Clients, checked: Plan, tags: list[dict[str, str]]) -> str:
    """The role `name` (EC2 only, the project boundary, S3 under the prefix, own log and spot request) in
    an instance profile of the same name; returns the profile ARN. Policies are rewritten every launch:
    the prefix or the region may have changed."""
    policies = {
        POLICY_NAME: s3_prefix_policy(checked.values["S3_URI"], clients.partition),
        OWN_POLICY_NAME: own_resources_policy(clients.partition, checked.values["REGION"], checked.account, name),
    }
    remedy = "set ami.permissions_boundary to match, or choose another ami.name"
    spec = iam.RoleSpec(name, EC2, policies, "dogbreed training instance", checked.boundary, remedy, tuple(tags))
    iam.ensure_role(clients.iam, spec, AmiError)
    return iam.ensure_instance_profile(clients.iam, name, tuple(tags))


def delete_instance_role(client: Any, name: str) -> bool:
    """Removes the instance profile and role `name`; False when neither existed."""
    profile = iam.delete_instance_profile(client, name)
    role = iam.delete_role(client, name)
    return profile or role


def undo(ami: Any, clients: Clients, made: Made) -> None:
    """Removes what a failed launch created; a step that fails is logged, the others still run."""
    instances = Instances(clients.ec2, wait_timeout_s=ami.wait_timeout_s)
    steps: list[tuple[str, Callable[[], object]]] = []
    if made.instance_ids:
        steps.append(("spot requests", lambda: instances.cancel_spot_requests(ami.name)))
        steps.append(("instances", lambda: instances.terminate(made.instance_ids)))
    if made.group:
        steps.append(("security group", lambda: network.SecurityGroups(clients.ec2).delete(ami.name)))
    if made.role:
        steps.append(("role and profile", lambda: delete_instance_role(clients.iam, ami.name)))
    if made.key_pair:
        steps.append(("key pair", lambda: KeyPairs(clients.ec2).delete_if_created(key_name(ami), key_file(ami))))
    for what, step in steps:
        try:
            step()
            log.info("launch failed: removed the %s it created", what)
        except Exception as err:  # the launch's own error matters more; say what is left behind
            log.warning("launch failed and its %s could not be removed (%s); python -m ami down retries", what, err)


def status(cfg: DictConfig, clients: Clients) -> list[dict[str, Any]]:
    """The project's live instances."""
    return Instances(clients.ec2).find(cfg.ami.name)


def describe(cfg: DictConfig, instance: dict[str, Any]) -> str:
    """One line per instance: id, type, state (and why, once stopped), market, run, and how to log in."""
    market = instance.get("InstanceLifecycle", "on-demand")
    state = instance["State"]["Name"]
    line = f"{instance['InstanceId']}  {instance['InstanceType']}  {state}  {market}"
    run = next((tag["Value"] for tag in instance.get("Tags", []) if tag["Key"] == RUN_TAG), None)
    if run:
        line += f"  run {run}"
    if state == "running":
        line += "  " + shlex.join(ssh_command(cfg.ami, instance))
    elif instance.get("StateReason", {}).get("Message"):
        # Client.InstanceInitiatedShutdown: training ended or idle; Server.SpotInstanceShutdown: interrupted.
        line += f"  ({instance['StateReason']['Message']})"
    return line


def first_running(cfg: DictConfig, clients: Clients) -> dict[str, Any]:
    """Node 0, or the first instance that runs."""
    running = [i for i in status(cfg, clients) if i["State"]["Name"] == "running"]
    if not running:
        raise AmiError(f"no running instance named {cfg.ami.name}; start one with python -m ami launch")
    return running[0]


def show_logs(cfg: DictConfig, clients: Clients, follow: bool, write: Callable[[str], None]) -> bool:
    """Writes the training log from CloudWatch Logs (and keeps following); False when it holds nothing yet."""
    logs, group = TrainLogs(clients.logs), log_group(cfg.ami.name)
    events = logs.events(group)
    if not events:
        return False
    for event in events:
        write(event["message"])
    if follow:
        logs.follow(group, write)
    return True


def tail_command(cfg: DictConfig, clients: Clients, follow: bool) -> list[str]:
    """ssh to the first running instance, printing (and with `follow`, following) its train.log."""
    tail = ["tail", "-n", "200", *(["-F"] if follow else []), "dogbreed/train.log"]
    return [*ssh_command(cfg.ami, first_running(cfg, clients)), shlex.join(tail)]


def pull_run(cfg: DictConfig, clients: Clients, run: str | None, dest_root: Path) -> list[Path]:
    """Downloads run `run` (default: the run the newest instance trains) from `<s3_uri>/runs/` to `dest_root`."""
    try:
        s3_uri = str(cfg.ami.s3_uri).rstrip("/")
    except MissingMandatoryValue:
        raise AmiError("set ami.s3_uri=s3://bucket/prefix: runs are pulled from <s3_uri>/runs/") from None
    runs = project_location(s3_uri).child("runs")
    if run is None:
        tagged = [tag["Value"] for i in status(cfg, clients) for tag in i.get("Tags", []) if tag["Key"] == RUN_TAG]
        if not tagged:
            known = ", ".join(run_names(clients.s3, runs)) or "none"
            raise AmiError(
                f"no instance of {cfg.ami.name} to take the run from; name it: python -m ami pull RUN "
                f"(runs under {runs.uri}/: {known})"
            )
        run = tagged[-1]
    return pull(clients.s3, runs, run, dest_root)


def describe_spot_requests(cfg: DictConfig, clients: Clients) -> list[str]:
    """One line per spot request: its state and EC2's status, which records interruptions and restarts."""
    lines = []
    for request in Instances(clients.ec2).spot_requests(cfg.ami.name, states=None):
        progress = request.get("Status", {})
        line = f"spot request {request['SpotInstanceRequestId']}  {request.get('Type', '')}  {request['State']}"
        if progress.get("Code"):
            line += f"  {progress['Code']}: {progress.get('Message', '')}".rstrip(": ")
        if request.get("InstanceId"):
            line += f"  instance {request['InstanceId']}"
        lines.append(line)
    return lines


def down(cfg: DictConfig, clients: Clients) -> list[str]:
    """Cancels spot requests, terminates the instances, then removes group, profile, role and a created key pair.

    The requests go first: a persistent request would replace an instance terminated under it.
    """
    ami = cfg.ami
    instances = Instances(clients.ec2, wait_timeout_s=ami.wait_timeout_s)
    removed = [f"spot request {request}" for request in instances.cancel_spot_requests(ami.name)]
    ended = [instance["InstanceId"] for instance in instances.find(ami.name)]
    instances.terminate(ended)
    removed += ended
    if network.SecurityGroups(clients.ec2).delete(ami.name):
        removed.append(f"security group {ami.name}")
    if delete_instance_role(clients.iam, ami.name):
        removed.append(f"instance profile and role {ami.name}")
    if KeyPairs(clients.ec2).delete_if_created(key_name(ami), key_file(ami)):
        removed.append(f"key pair {key_name(ami)}")
    return removed
