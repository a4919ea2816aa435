"""launch / status / down against a moto server: what gets created, reused and removed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.stub import Stubber

import dogbreed.storage.transfer
from ami import launcher
from ami.cli import main
from ami.config import load_config
from ami.errors import AmiError
from ami.network import detect_public_cidr
from deploy.cli import main as deploy_main
from dogbreed.aws import code_bundle, support
from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import UploadSettings, head_or_none
from tests.helpers.aws_gaps import Gaps
from tests.helpers.dlami import register_dlami

PARAMETER = "/aws/service/deeplearning/ami/x86_64/test-pytorch-ubuntu-22.04/latest/ami-id"
BUCKET = "dogbreed-test-bucket"
S3_URI = f"s3://{BUCKET}/team/dogbreed"


@pytest.fixture
def dlami(aws: str) -> str:
    """An AMI registered in moto and the DLAMI SSM public parameter pointing at it."""
    image_id = register_dlami(PARAMETER)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    create_boundary()
    return image_id


REPO = Path(__file__).resolve().parents[2]
BOUNDARY_NAME = "dogbreed-boundary"


def create_boundary(name: str = BOUNDARY_NAME) -> str:
    """The one-time set-up README asks for: the shipped boundary policy, created in the account."""
    document = (REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text()
    return boto3.client("iam").create_policy(PolicyName=name, PolicyDocument=document)["Policy"]["Arn"]


def boundary_of(role: str) -> str | None:
    return (
        boto3.client("iam").get_role(RoleName=role)["Role"].get("PermissionsBoundary", {}).get("PermissionsBoundaryArn")
    )


def overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"ami.ami_ssm_parameter={PARAMETER}",
        "ami.ssh_cidr=203.0.113.7/32",
        f"ami.s3_uri={S3_URI}",
        f"ami.key_dir={tmp_path / 'keys'}",
        "ami.volume_gb=60",
        "ami.train_overrides=['trainer.epochs=3','optim.lr=3e-4']",
        *extra,
    ]


def project_resources() -> dict[str, list[str]]:
    ec2, iam = boto3.client("ec2"), boto3.client("iam")
    live = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    groups = ec2.describe_security_groups()["SecurityGroups"]
    return {
        "instances": [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]],
        "groups": [g["GroupName"] for g in groups if g["GroupName"] != "default"],
        "roles": [r["RoleName"] for r in iam.list_roles()["Roles"] if not r["Path"].startswith("/aws-service-role/")],
        "profiles": [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]],
        "keys": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
    }


def test_launch_creates_a_locked_down_instance_reuses_it_and_down_removes_everything(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["launch", *overrides(tmp_path)]) == 0
    printed = capsys.readouterr().out
    ec2, iam = boto3.client("ec2"), boto3.client("iam")

    (reservation,) = ec2.describe_instances()["Reservations"]
    (instance,) = reservation["Instances"]
    assert instance["ImageId"] == dlami
    assert instance["InstanceType"] == "c6i.xlarge"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert {"Key": "dogbreed:name", "Value": "dogbreed"} in instance["Tags"]
    key_file = tmp_path / "keys" / "dogbreed-key.pem"
    assert f"ssh -i {key_file} ubuntu@" in printed
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    (group,) = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "dogbreed"]
    assert [group["GroupId"]] == [g["GroupId"] for g in instance["SecurityGroups"]]
    (rule,) = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == ["203.0.113.7/32"]
    assert rule.get("UserIdGroupPairs", []) == []

    (volume,) = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}])[
        "Volumes"
    ]
    assert (volume["Encrypted"], volume["VolumeType"], volume["Size"]) == (True, "gp3", 60)

    profile = iam.get_instance_profile(InstanceProfileName="dogbreed")["InstanceProfile"]
    assert instance["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["dogbreed"]
    assert iam.list_attached_role_policies(RoleName="dogbreed")["AttachedPolicies"] == []
    account = boto3.client("sts").get_caller_identity()["Account"]
    assert boundary_of("dogbreed") == f"arn:aws:iam::{account}:policy/{BOUNDARY_NAME}"
    document = iam.get_role_policy(RoleName="dogbreed", PolicyName="s3-project-prefix")["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    resources = {s["Sid"]: s["Resource"] for s in document["Statement"]}
    assert resources == {
        "ListProjectPrefix": f"arn:aws:s3:::{BUCKET}",
        "ProjectObjects": f"arn:aws:s3:::{BUCKET}/team/dogbreed/*",
    }

    user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash\n# dogbreed bootstrap")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # it parses
    assert f"DOGBREED_S3_URI={S3_URI}" in script
    assert "DOGBREED_TRAIN_ARGS='trainer.epochs=3 optim.lr=3e-4'" in script
    code_uri = next(line.split("=", 1)[1] for line in script.splitlines() if "DOGBREED_CODE_URI=s3" in line)
    code_key = code_uri.removeprefix(f"s3://{BUCKET}/")
    assert code_key.startswith("team/dogbreed/code/dogbreed-")
    assert boto3.client("s3").head_object(Bucket=BUCKET, Key=code_key)["ContentLength"] > 1000

    before = project_resources()
    assert main(["launch", *overrides(tmp_path)]) == 0
    assert project_resources() == before  # nothing new: the same instance, group, role, profile, key

    assert main(["status", *overrides(tmp_path)]) == 0
    assert instance["InstanceId"] in capsys.readouterr().out

    assert main(["down", *overrides(tmp_path)]) == 0
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}
    assert not key_file.exists()
    assert main(["down", *overrides(tmp_path)]) == 0  # already gone: nothing to do, no error
    assert "nothing left to remove" in capsys.readouterr().out


def test_relaunch_from_a_new_address_replaces_the_old_ssh_rule(dlami: str, tmp_path: Path) -> None:
    clients = launcher.Clients.create(None)
    launcher.launch(load_config(overrides(tmp_path)), clients)
    launcher.launch(load_config(overrides(tmp_path, "ami.ssh_cidr=198.51.100.9/32")), clients)
    (group,) = [g for g in clients.ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "dogbreed"]
    assert [r["CidrIp"] for rule in group["IpPermissions"] for r in rule["IpRanges"]] == ["198.51.100.9/32"]


def user_data(ec2: object, instance_id: str) -> str:
    answer = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")  # type: ignore[attr-defined]
    return base64.b64decode(answer["UserData"]["Value"]).decode()


def test_two_nodes_reach_each_other_on_any_port_and_nothing_else_gets_in(dlami: str, tmp_path: Path) -> None:
    clients = launcher.Clients.create(None)
    started = launcher.launch(load_config(overrides(tmp_path, "ami.nodes=2")), clients)
    assert len(started) == 2
    (group,) = [g for g in clients.ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "dogbreed"]
    # exactly two rules: SSH from the caller's /32, and all TCP from the group itself (gloo/NCCL ports)
    rules = sorted(
        (r["IpProtocol"], r["FromPort"], r["ToPort"], tuple(x["CidrIp"] for x in r["IpRanges"]),
         tuple(p["GroupId"] for p in r["UserIdGroupPairs"]))
        for r in group["IpPermissions"]
    )  # fmt: skip
    assert rules == [
        ("tcp", 0, 65535, (), (group["GroupId"],)),
        ("tcp", 22, 22, ("203.0.113.7/32",), ()),
    ]
    first, second = (user_data(clients.ec2, i["InstanceId"]) for i in started)
    assert f"DOGBREED_RDZV_HOST={started[0]['PrivateIpAddress']}" in second
    # every node trains the same run on the same data
    run_line = next(line for line in first.splitlines() if "DOGBREED_RUN_NAME=" in line)
    assert re.search(r"DOGBREED_RUN_NAME=dogbreed-\d{8}-\d{6}$", run_line)
    assert run_line in second.splitlines()
    data_line = next(line for line in first.splitlines() if "DOGBREED_DATA_URI=" in line)
    assert data_line in second.splitlines()


def test_on_finish_terminate_ends_the_instance_from_inside(dlami: str, tmp_path: Path) -> None:
    clients = launcher.Clients.create(None)
    (instance,) = launcher.launch(load_config(overrides(tmp_path, "ami.on_finish=terminate")), clients)
    behaviour = clients.ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
    )["InstanceInitiatedShutdownBehavior"]["Value"]
    assert behaviour == "terminate"
    script = user_data(clients.ec2, instance["InstanceId"])
    assert "DOGBREED_ON_FINISH=terminate\n" in script
    # the tmux command hands train.py's exit status to the part that powers off
    assert 'finish \\$?"' in script and "sudo shutdown -h now" in script


def test_on_demand_stops_and_spot_terminates_by_default(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = launcher.Clients.create(None)
    (on_demand,) = launcher.launch(load_config(overrides(tmp_path)), clients)
    attribute = clients.ec2.describe_instance_attribute(
        InstanceId=on_demand["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
    )
    assert attribute["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    assert "DOGBREED_ON_FINISH=stop\n" in user_data(clients.ec2, on_demand["InstanceId"])
    assert "DOGBREED_IDLE_S=3600\n" in user_data(clients.ec2, on_demand["InstanceId"])
    # once it has stopped itself, a relaunch says so instead of failing on the missing address
    clients.ec2.stop_instances(InstanceIds=[on_demand["InstanceId"]])
    capsys.readouterr()
    assert main(["launch", *overrides(tmp_path)]) == 0
    assert "dogbreed's instances are stopped; python -m ami down starts over" in capsys.readouterr().out
    assert main(["status", *overrides(tmp_path)]) == 0
    assert "stopped  on-demand  run dogbreed-" in capsys.readouterr().out
    launcher.down(load_config(overrides(tmp_path)), clients)
    (spot,) = launcher.launch(load_config(overrides(tmp_path, "ami.spot=true")), clients)
    assert spot.get("InstanceLifecycle") == "spot"
    assert "DOGBREED_ON_FINISH=terminate\n" in user_data(clients.ec2, spot["InstanceId"])


def test_down_after_a_spot_launch_leaves_no_open_spot_request(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = launcher.Clients.create(None)
    cfg = load_config(overrides(tmp_path, "ami.spot=true"))
    (instance,) = launcher.launch(cfg, clients)
    # On AWS, run_instances with a persistent spot market files a request carrying the
    # spot-instances-request tags; moto starts the instance without one, so file it as AWS would.
    request_id = clients.ec2.request_spot_instances(
        Type="persistent",
        InstanceInterruptionBehavior="stop",
        LaunchSpecification={"ImageId": dlami, "InstanceType": "c6i.xlarge"},
        TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": instance_tags()}],
    )["SpotInstanceRequests"][0]["SpotInstanceRequestId"]
    assert main(["status", *overrides(tmp_path, "ami.spot=true")]) == 0
    assert f"spot request {request_id}  persistent  active" in capsys.readouterr().out

    removed = launcher.down(cfg, clients)

    assert removed[0] == f"spot request {request_id}"  # cancelled before anything is terminated
    left = clients.ec2.describe_spot_instance_requests()["SpotInstanceRequests"]
    assert [r for r in left if r["State"] in ("open", "active", "disabled")] == []  # moto drops cancelled ones
    assert instance["InstanceId"] in removed


def instance_tags() -> list[dict[str, str]]:
    from ami.instances import tags_for

    return tags_for("dogbreed")


def test_a_prefix_the_boundary_denies_is_refused_until_set_up_adds_it(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The instance role may only reach the prefixes the account's boundary names; its first upload would fail.
    outside = [o for o in overrides(tmp_path) if not o.startswith("ami.s3_uri")] + [f"ami.s3_uri=s3://{BUCKET}/runs"]
    assert exit_status(["launch", *outside]) == 1
    err = capsys.readouterr().err
    assert f"error: ami.s3_uri: s3://{BUCKET}/runs is outside the S3 prefixes the permissions boundary" in err
    assert err.rstrip().endswith(f"add it once with python -m deploy setup s3://{BUCKET}/runs")
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}

    deploy_main(["setup", f"s3://{BUCKET}/runs"])  # the command the error names
    launcher.launch(load_config(outside), launcher.Clients.create(None))
    assert len(project_resources()["instances"]) == 1


def test_a_missing_bucket_fails_before_anything_exists_and_leaves_no_key_file(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = [o for o in overrides(tmp_path) if not o.startswith("ami.s3_uri")] + [
        "ami.s3_uri=s3://no-such-bucket/dogbreed"
    ]
    assert exit_status(["launch", *missing]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: bucket 'no-such-bucket' does not exist (NoSuchBucket); create it or fix ami.s3_uri; nothing was created"
    ]
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}
    assert not (tmp_path / "keys" / "dogbreed-key.pem").exists()
    assert boto3.client("logs").describe_log_groups()["logGroups"] == []


def test_an_instance_type_the_region_lacks_is_refused_before_anything_exists(dlami: str, tmp_path: Path) -> None:
    with pytest.raises(AmiError, match=re.escape("instance type 'c6i.huge' is not offered in us-east-1")):
        launcher.launch(load_config(overrides(tmp_path, "ami.instance_type=c6i.huge")), launcher.Clients.create(None))
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}


def test_a_failure_after_creation_removes_what_this_launch_created(
    dlami: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = launcher.Clients.create(None)

    def refused(*args: object, **kwargs: object) -> None:
        raise AmiError("cannot upload the code (refused)")

    # the first step after the key pair, group, role and log group exist
    monkeypatch.setattr(launcher.code_bundle, "upload_once", refused)
    with pytest.raises(AmiError, match="cannot upload the code"):
        launcher.launch(load_config(overrides(tmp_path)), clients)
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}
    assert not (tmp_path / "keys" / "dogbreed-key.pem").exists()
    # so the next launch is not refused over a leftover key file
    monkeypatch.undo()
    (instance,) = launcher.launch(load_config(overrides(tmp_path)), clients)
    assert instance["State"]["Name"] == "running"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ami.ssh_cidr=0.0.0.0/0", "allow_open_ssh=true"),
        ("ami.ssh_cidr=0.0.0.0/1", "ami.ssh_min_prefix=/24"),
        ("ami.permissions_boundary=nope", "create it once for your S3 prefix with python -m deploy setup s3://"),
        ("ami.ssh_cidr=not-an-address", "not an address range"),
        ("ami.train_overrides=['trainer.tag=" + "x" * 17000 + "']", "over EC2's 16384"),
    ],
)
def test_refusals_come_before_anything_is_created(dlami: str, tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(AmiError, match=message):
        launcher.launch(load_config(overrides(tmp_path, override)), launcher.Clients.create(None))
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}


def exit_status(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


def test_missing_s3_uri_and_unknown_parameter_say_what_to_set(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without_uri = [o for o in overrides(tmp_path) if not o.startswith("ami.s3_uri")]
    assert exit_status(["launch", *without_uri]) == 1
    assert "set ami.s3_uri=s3://bucket/prefix" in capsys.readouterr().err
    assert exit_status(["launch", *overrides(tmp_path, "ami.ami_ssm_parameter=/aws/service/nope/ami-id")]) == 1
    assert "ami.ami_ssm_parameter" in capsys.readouterr().err
    assert exit_status(["launch", "ami.nodes=0"]) == 1
    assert "ami.nodes" in capsys.readouterr().err
    assert exit_status(["launch", "ami.nodse=2"]) == 2  # an override Hydra cannot apply is bad usage
    assert capsys.readouterr().err.startswith("error: bad override (Could not override 'ami.nodse'.")


class _Answer(BaseHTTPRequestHandler):
    body = b"198.51.100.23\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ip_service() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_the_callers_address_becomes_a_slash_32(ip_service: str) -> None:
    assert detect_public_cidr(ip_service, timeout_s=5) == "198.51.100.23/32"


def test_an_unreachable_address_service_tells_the_user_to_pass_ssh_cidr(closed_port: int) -> None:
    with pytest.raises(AmiError, match=r"ami\.ssh_cidr="):
        detect_public_cidr(f"http://127.0.0.1:{closed_port}/", timeout_s=2)


def test_a_key_pair_the_user_brought_is_used_and_left_alone(dlami: str, tmp_path: Path) -> None:
    ec2 = boto3.client("ec2")
    ec2.create_key_pair(KeyName="alice")
    cfg = load_config(overrides(tmp_path, "ami.key_name=alice"))
    clients = launcher.Clients.create(None)
    (instance,) = launcher.launch(cfg, clients)
    assert instance["KeyName"] == "alice"
    assert launcher.ssh_command(cfg.ami, instance)[:2] == ["ssh", "ubuntu@" + instance["PublicDnsName"]]
    assert "key pair alice" not in launcher.down(cfg, clients)
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["alice"]
    with pytest.raises(AmiError, match="key pair 'bob' does not exist"):
        launcher.launch(load_config(overrides(tmp_path, "ami.key_name=bob")), clients)


def test_ssh_subcommand_execs_ssh_to_the_running_instance(dlami: str, tmp_path: Path) -> None:
    (instance,) = launcher.launch(load_config(overrides(tmp_path)), launcher.Clients.create(None))
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ssh").write_text('#!/bin/sh\necho "ssh $*"\n')
    (fake_bin / "ssh").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "ami", "ssh", *overrides(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    key = tmp_path / "keys" / "dogbreed-key.pem"
    assert result.stdout.strip() == f"ssh -i {key} ubuntu@{instance['PublicDnsName']}"


def test_the_code_archive_goes_up_verified_once_and_a_failed_upload_names_the_uri(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    archive = b"code archive " * 200
    uri = f"{S3_URI}/code/{code_bundle.archive_name('dogbreed', archive)}"
    assert uri == f"{S3_URI}/code/dogbreed-{hashlib.sha256(archive).hexdigest()[:16]}.tar.gz"

    assert code_bundle.upload_once(s3, S3Location.parse(uri), archive)

    key = uri.removeprefix(f"s3://{BUCKET}/")
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert head["Metadata"]["sha256"] == hashlib.sha256(archive).hexdigest()
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(archive).digest()).decode()
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == archive

    tries: list[object] = []

    def refused(*args: object, **kwargs: object) -> None:
        tries.append(args)
        raise S3UploadFailedError("Failed to upload: AccessDenied")

    monkeypatch.setattr(s3, "upload_file", refused)
    monkeypatch.setattr(
        dogbreed.storage.transfer, "time", SimpleNamespace(sleep=lambda seconds: None)
    )  # no backoff waits
    # the content-hashed key is already there: nothing to upload
    assert not code_bundle.upload_once(s3, S3Location.parse(uri), archive)
    assert tries == []
    other = f"{S3_URI}/code/{code_bundle.archive_name('dogbreed', b'changed code')}"
    message = f"cannot upload the code to {other}: Failed to upload: AccessDenied"
    with pytest.raises(DogbreedError, match=re.escape(message)):
        code_bundle.upload_once(s3, S3Location.parse(other), b"changed code")
    assert len(tries) == UploadSettings().attempts
    assert head_or_none(s3, S3Location.parse(other)) is None


def test_missing_boundary_policy_is_one_line_with_the_set_up_command(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    account = boto3.client("sts").get_caller_identity()["Account"]
    assert exit_status(["launch", *overrides(tmp_path, "ami.permissions_boundary=team-boundary")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: permissions boundary arn:aws:iam::{account}:policy/team-boundary does not exist "
        f"(ami.permissions_boundary); create it once for your S3 prefix with python -m deploy setup s3://{BUCKET}/team/dogbreed"
    ]
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}


def test_an_older_role_gets_the_boundary_and_one_with_another_boundary_is_refused(dlami: str, tmp_path: Path) -> None:
    iam = boto3.client("iam")
    trust = json.dumps(launcher_trust())
    iam.create_role(RoleName="dogbreed", AssumeRolePolicyDocument=trust)  # as an older launch left it
    clients = launcher.Clients.create(None)
    launcher.launch(load_config(overrides(tmp_path)), clients)
    account = boto3.client("sts").get_caller_identity()["Account"]
    assert boundary_of("dogbreed") == f"arn:aws:iam::{account}:policy/{BOUNDARY_NAME}"

    other = create_boundary("other-boundary")
    iam.put_role_permissions_boundary(RoleName="dogbreed", PermissionsBoundary=other)
    with pytest.raises(AmiError, match="role dogbreed has permissions boundary"):
        launcher.launch(load_config(overrides(tmp_path)), clients)
    assert boundary_of("dogbreed") == other


def launcher_trust() -> dict[str, object]:
    from dogbreed.aws.iam import trust_policy

    return trust_policy("ec2.amazonaws.com")


def test_logs_come_from_cloudwatch_and_pull_fetches_the_run_verified(
    dlami: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = overrides(tmp_path, "ami.run_name=exp1")
    (instance,) = launcher.launch(load_config(pinned), launcher.Clients.create(None))
    # what the instance's CloudWatch agent would write: one stream per instance id
    logs = boto3.client("logs")
    logs.create_log_stream(logGroupName="/dogbreed/ami/dogbreed", logStreamName=instance["InstanceId"])
    now_ms = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    logs.put_log_events(
        logGroupName="/dogbreed/ami/dogbreed",
        logStreamName=instance["InstanceId"],
        logEvents=[{"timestamp": now_ms, "message": "epoch 1/3"}, {"timestamp": now_ms + 1, "message": "epoch 2/3"}],
    )
    capsys.readouterr()
    assert main(["logs", *pinned]) == 0
    assert capsys.readouterr().out.splitlines() == ["epoch 1/3", "epoch 2/3"]

    # what training uploaded (the verified upload records each file's SHA-256)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.json").write_text('{"val_top1": 0.8}')
    (run_dir / "checkpoints" / "model.pth").write_bytes(b"weights" * 1000)
    uploader = dogbreed.storage.transfer.S3Uploader(boto3.client("s3"), UploadSettings())
    for path in (run_dir / "metrics.json", run_dir / "checkpoints" / "model.pth"):
        uploader.upload(path, S3Location.parse(f"{S3_URI}/runs/exp1/{path.relative_to(run_dir).as_posix()}"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["pull", *pinned]) == 0  # the run the instance trains, from its tag
    pulled = work / "outputs" / "exp1"
    assert (pulled / "metrics.json").read_text() == '{"val_top1": 0.8}'
    assert (pulled / "checkpoints" / "model.pth").read_bytes() == b"weights" * 1000
    assert exit_status(["pull", "exp2", *pinned]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: no run 'exp2' under {S3_URI}/runs/; runs there: exp1"]


def test_logs_without_cloudwatch_events_tail_the_log_over_ssh(dlami: str, tmp_path: Path) -> None:
    (instance,) = launcher.launch(load_config(overrides(tmp_path)), launcher.Clients.create(None))
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ssh").write_text('#!/bin/sh\necho "ssh $*"\n')
    (fake_bin / "ssh").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "ami", "logs", "-f", *overrides(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    key = tmp_path / "keys" / "dogbreed-key.pem"
    assert result.stdout.strip() == f"ssh -i {key} ubuntu@{instance['PublicDnsName']} tail -n 200 -F dogbreed/train.log"


def test_status_shows_a_spot_interruption_and_the_request_waiting_to_restart(tmp_path: Path) -> None:
    """moto never interrupts, so EC2's answers for an interrupted persistent request are stubbed."""
    cfg = load_config(overrides(tmp_path, "ami.spot=true"))
    stopped = {
        "InstanceId": "i-0abc",
        "InstanceType": "g4dn.xlarge",
        "State": {"Name": "stopped"},
        "InstanceLifecycle": "spot",
        "Tags": [{"Key": "dogbreed:run", "Value": "exp1"}],
        "StateReason": {"Code": "Server.SpotInstanceShutdown", "Message": "Server.SpotInstanceShutdown: interrupted"},
    }
    assert launcher.describe(cfg, stopped) == (
        "i-0abc  g4dn.xlarge  stopped  spot  run exp1  (Server.SpotInstanceShutdown: interrupted)"
    )
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    request = {
        "SpotInstanceRequestId": "sir-1",
        "Type": "persistent",
        "State": "disabled",
        "Status": {"Code": "instance-stopped-no-capacity", "Message": "waiting for capacity to restart"},
        "InstanceId": "i-0abc",
    }
    with Stubber(ec2) as stub:
        stub.add_response("describe_spot_instance_requests", {"SpotInstanceRequests": [request]})
        clients = SimpleNamespace(ec2=ec2)
        lines = launcher.describe_spot_requests(cfg, clients)  # type: ignore[arg-type]
    assert lines == [
        "spot request sir-1  persistent  disabled  instance-stopped-no-capacity: waiting for capacity to restart"
        "  instance i-0abc"
    ]


def test_a_dlami_line_past_its_end_of_patch_is_one_warning_and_the_launch_goes_on(
    dlami: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The test's SSM parameter stands in for a line whose end of patch has passed.
    lapsed = support.Support(f"the DLAMI line {PARAMETER}", dt.date(2026, 4, 23), None, "the DLAMI support policy")
    monkeypatch.setattr(support, "for_dlami", lambda parameter: lapsed if parameter == PARAMETER else None)
    with caplog.at_level("WARNING"):
        (instance,) = launcher.launch(load_config(overrides(tmp_path)), launcher.Clients.create(None))
    warnings = [r.getMessage() for r in caplog.records if "end of patch" in r.getMessage()]
    assert len(warnings) == 1 and "(2026-04-23" in warnings[0] and "ami.ami_ssm_parameter" in warnings[0]
    assert instance["ImageId"] == dlami


def test_a_vcpu_quota_below_the_type_s_vcpus_stops_launch_before_anything_exists(
    dlami: str, gaps: Gaps, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A new account's spot vCPUs for G instances: 0; g4dn.xlarge has 4.
    gaps.applied[("ec2", "L-3819A6DF")] = 0
    asked = overrides(tmp_path, "ami.instance_type=g4dn.xlarge", "ami.spot=true")
    assert exit_status(["launch", *asked]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: quota L-3819A6DF 'All G and VT Spot Instance Requests' is 0 in us-east-1, "
        "ami.instance_type=g4dn.xlarge (4 vCPUs) with ami.nodes=1 needs 4; ask for more: aws service-quotas "
        "request-service-quota-increase --service-code ec2 --quota-code L-3819A6DF --desired-value 4 --region us-east-1"
    ]
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}

    # Two on-demand c6i.xlarge nodes want 8 Standard vCPUs; --skip-preflight goes on without reading quotas.
    gaps.applied[("ec2", "L-1216C47A")] = 5
    gaps.refused.add("GetServiceQuota")
    two = overrides(tmp_path, "ami.nodes=2")
    assert exit_status(["launch", *two]) == 1
    assert "or rerun with --skip-preflight (or ami.preflight=false)" in capsys.readouterr().err
    gaps.refused.clear()
    assert exit_status(["launch", *two]) == 1
    assert (
        "is 5 in us-east-1, ami.instance_type=c6i.xlarge (4 vCPUs) with ami.nodes=2 needs 8" in capsys.readouterr().err
    )
    main(["launch", "--skip-preflight", *two])
    assert len(project_resources()["instances"]) == 2


def test_a_run_instances_the_simulator_denies_stops_launch(dlami: str, gaps: Gaps, tmp_path: Path) -> None:
    gaps.denied["ec2:RunInstances"] = "explicitDeny"
    with pytest.raises(
        DogbreedError, match=r"^AWS would refuse ec2:RunInstances on arn:aws:ec2:us-east-1:\d+:instance/\*"
    ):
        launcher.launch(load_config(overrides(tmp_path)), launcher.Clients.create(None))
    assert project_resources() == {"instances": [], "groups": [], "roles": [], "profiles": [], "keys": []}
