"""The permissions boundary set up per account: the roles it bounds reach the named S3 prefixes and nothing else."""

from __future__ import annotations

import json

import boto3
import pytest

from deploy.cli import main as deploy_main
from dogbreed.aws import boundary
from dogbreed.errors import DogbreedError
from dogbreed.storage.location import S3Location
from tests.helpers.policies import allowed, findings

ARN = "arn:aws:iam::123456789012:policy/dogbreed-boundary"


def objects(bucket_key: str) -> str:
    return f"arn:aws:s3:::{bucket_key}"


def listing(policy: dict[str, object], bucket: str, prefix: str) -> bool:
    return allowed(policy, "s3:ListBucket", objects(bucket), {"s3:prefix": prefix})  # type: ignore[arg-type]


def test_a_role_under_the_set_up_boundary_reaches_its_prefixes_only() -> None:
    policy = boundary.document([S3Location("team-ml", "models"), S3Location("team-ml", "data/dogs")])
    for action in ("s3:GetObject", "s3:PutObject"):
        assert allowed(policy, action, objects("team-ml/models/dogbreed/model.tar.gz"))
        assert allowed(policy, action, objects("team-ml/data/dogs/train/x.jpg"))
        assert not allowed(policy, action, objects("team-ml/modelsX/a"))  # a sibling that shares the start
        assert not allowed(policy, action, objects("team-ml/secrets/a"))
        assert not allowed(policy, action, objects("other/models/a"))
        assert not allowed(policy, action, objects("any/dogbreed/a"))  # the shipped default is gone
    assert not allowed(policy, "s3:DeleteObject", objects("team-ml/models/a"))
    assert listing(policy, "team-ml", "models/dogbreed/")
    assert not listing(policy, "team-ml", "secrets/")
    # Everything but S3 is the shipped template's, and parliament finds nothing new in it.
    template = json.loads(boundary.TEMPLATE.read_text())
    kept = [s for s in template["Statement"] if not s["Sid"].startswith(("ProjectObjects", "ListProject"))]
    assert policy["Statement"][-len(kept) :] == kept
    assert findings(policy) == []


def test_a_whole_bucket_is_a_prefix_too() -> None:
    policy = boundary.document([S3Location("team-ml", "")])
    assert allowed(policy, "s3:PutObject", objects("team-ml/anything/at/all"))
    assert not allowed(policy, "s3:PutObject", objects("team-mlx/a"))
    assert boundary.covers(policy, "team-ml", "runs")


def test_set_up_adds_prefixes_replace_narrows_and_reruns_change_nothing(aws: str) -> None:
    iam = boto3.client("iam")
    first, second = S3Location("b", "models"), S3Location("c", "runs")
    assert boundary.ensure(iam, ARN, [first]) == "created"
    assert boundary.ensure(iam, ARN, [first]) == "unchanged"
    assert boundary.ensure(iam, ARN, [second]) == "updated"
    held = boundary.fetch(iam, ARN)
    assert held is not None and boundary.covers(held, "b", "models/x") and boundary.covers(held, "c", "runs")
    assert boundary.ensure(iam, ARN, [second], replace=True) == "updated"
    held = boundary.fetch(iam, ARN)
    assert held is not None and not boundary.covers(held, "b", "models") and boundary.covers(held, "c", "runs")
    for index in range(6):  # IAM keeps five versions: set-up makes room instead of failing
        boundary.ensure(iam, ARN, [S3Location("b", f"p{index}")])
    assert len(iam.list_policy_versions(PolicyArn=ARN)["Versions"]) == 5


def test_an_account_set_up_from_the_template_keeps_its_dogbreed_folders(aws: str) -> None:
    iam = boto3.client("iam")
    iam.create_policy(PolicyName="dogbreed-boundary", PolicyDocument=boundary.TEMPLATE.read_text())
    boundary.ensure(iam, ARN, [S3Location("b", "models")])
    held = boundary.fetch(iam, ARN)
    assert held is not None and boundary.covers(held, "any", "x/dogbreed") and boundary.covers(held, "b", "models")


def test_check_prefix_names_the_setting_and_the_set_up_command(aws: str) -> None:
    iam = boto3.client("iam")
    boundary.ensure(iam, ARN, [S3Location("b", "models")])
    boundary.check_prefix(iam, ARN, S3Location("b", "models/prod"), "deploy.s3_uri", DogbreedError)
    with pytest.raises(DogbreedError) as refused:
        boundary.check_prefix(iam, ARN, S3Location("b", "runs/"), "ami.s3_uri", DogbreedError)
    assert str(refused.value) == (
        "ami.s3_uri: s3://b/runs is outside the S3 prefixes the permissions boundary dogbreed-boundary lets the "
        "created roles use (arn:aws:s3:::b/models/*); add it once with python -m deploy setup s3://b/runs"
    )


def test_setup_command_prints_what_the_roles_may_use(aws: str, capsys: pytest.CaptureFixture[str]) -> None:
    deploy_main(["setup", "s3://b/models", "s3://b/data", "deploy.permissions_boundary=team-boundary"])
    account = boto3.client("sts").get_caller_identity()["Account"]
    assert capsys.readouterr().out.splitlines() == [
        f"created permissions boundary arn:aws:iam::{account}:policy/team-boundary: the roles dogbreed creates "
        "may use S3 objects arn:aws:s3:::b/data/*, arn:aws:s3:::b/models/* only"
    ]
    with pytest.raises(SystemExit) as stop:
        deploy_main(["setup", "b/models"])
    assert stop.value.code == 1
    assert capsys.readouterr().err.startswith("error: setup takes s3://bucket/prefix locations:")
