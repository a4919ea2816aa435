"""The EC2-side policy of `python -m ami`: project-tagged resources only, one region, no escalation."""

from __future__ import annotations

import json

import pytest
from parliament import analyze_policy_string

from ami import policies
from ami.cli import main
from ami.preflight import launch_calls
from tests.helpers.config import REPO
from tests.helpers.policies import allowed

ACCOUNT, REGION = "123456789012", "eu-west-1"
EC2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
OPERATOR = policies.operator_policy("aws", REGION, ACCOUNT, "s3://team-ml/dogbreed")
DEPLOYER = json.loads((REPO / "deploy" / "iam" / "deployer-policy.json").read_text())
TAGGED = {"aws:RequestTag/project": "dogbreed"}
OURS, THEIRS = {"aws:ResourceTag/project": "dogbreed"}, {"aws:ResourceTag/project": "payments"}


def both() -> dict[str, object]:
    """What a user running `ami` holds: the deployer policy (its IAM part) and the operator policy."""
    return {"Statement": [*DEPLOYER["Statement"], *OPERATOR["Statement"]]}


def test_parliament_finds_no_escalation_and_only_the_split_run_instances_statements() -> None:
    found = analyze_policy_string(json.dumps(OPERATOR), include_community_auditors=True).findings
    assert not [f for f in found if f.issue == "PRIVILEGE_ESCALATION"]
    # RunInstances touches several resource types, each allowed under its own condition (AWS's own
    # pattern); parliament reads each statement alone and calls the others missing.
    assert {f.issue for f in found} == {"RESOURCE_MISMATCH"}
    mismatched = {d["action"] for f in found for d in f.detail}
    assert mismatched == {"ec2:RunInstances", "ec2:CreateSecurityGroup"}
    assert not any(a.startswith("iam:") for s in OPERATOR["Statement"] for a in policies_actions(s))


def policies_actions(statement: dict[str, object]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)  # type: ignore[arg-type]


def test_run_instances_only_with_the_project_tag_and_amazon_images() -> None:
    instance = f"{EC2}:instance/*"
    assert allowed(OPERATOR, "ec2:RunInstances", instance, TAGGED)
    assert not allowed(OPERATOR, "ec2:RunInstances", instance, {"aws:RequestTag/project": "other"})
    assert not allowed(OPERATOR, "ec2:RunInstances", instance)
    image = f"arn:aws:ec2:{REGION}::image/ami-1"
    assert allowed(OPERATOR, "ec2:RunInstances", image, {"ec2:Owner": "amazon"})
    assert not allowed(OPERATOR, "ec2:RunInstances", image, {"ec2:Owner": "999999999999"})
    group = f"{EC2}:security-group/sg-1"
    assert allowed(OPERATOR, "ec2:RunInstances", group, OURS)
    assert not allowed(OPERATOR, "ec2:RunInstances", group, THEIRS)
    # another region: nothing
    assert not allowed(OPERATOR, "ec2:RunInstances", f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/*", TAGGED)
    assert not allowed(OPERATOR, "ec2:DescribeInstances", "*", {"aws:RequestedRegion": "us-east-1"})
    assert allowed(OPERATOR, "ec2:DescribeInstances", "*", {"aws:RequestedRegion": REGION})


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("ec2:TerminateInstances", "instance/i-1"),
        ("ec2:DeleteSecurityGroup", "security-group/sg-1"),
        ("ec2:AuthorizeSecurityGroupIngress", "security-group/sg-1"),
        ("ec2:DeleteKeyPair", "key-pair/dogbreed-key"),
        ("ec2:CancelSpotInstanceRequests", "spot-instances-request/sir-1"),
    ],
)
def test_changes_and_ends_only_what_carries_the_project_tag(action: str, resource: str) -> None:
    assert allowed(OPERATOR, action, f"{EC2}:{resource}", OURS)
    assert not allowed(OPERATOR, action, f"{EC2}:{resource}", THEIRS)
    assert not allowed(OPERATOR, action, f"{EC2}:{resource}")


def test_tags_are_written_only_while_creating_or_as_the_spot_request_id() -> None:
    instance = f"{EC2}:instance/i-1"
    assert allowed(OPERATOR, "ec2:CreateTags", instance, {"ec2:CreateAction": "RunInstances"})
    assert not allowed(OPERATOR, "ec2:CreateTags", instance, THEIRS)  # no retagging someone's instance
    assert allowed(OPERATOR, "ec2:CreateTags", instance, {**OURS, "aws:TagKeys": "dogbreed:spot-request"})
    assert not allowed(OPERATOR, "ec2:CreateTags", instance, {**OURS, "aws:TagKeys": "project"})


def test_pass_role_only_of_the_project_instance_role_only_to_ec2() -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/dogbreed"
    assert allowed(both(), "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"})
    assert not allowed(both(), "iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"})
    assert not allowed(
        both(), "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PassedToService": "ec2.amazonaws.com"}
    )
    assert not allowed(OPERATOR, "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"})


def test_every_call_the_launch_preflight_simulates_is_allowed_by_the_shipped_policies() -> None:
    from types import SimpleNamespace

    boundary = f"arn:aws:iam::{ACCOUNT}:policy/dogbreed-boundary"
    ami = SimpleNamespace(name="dogbreed", key_name=None)
    for call in launch_calls(ami, "aws", REGION, ACCOUNT, boundary):
        assert allowed(both(), call.action, call.resource, call.context), call


def test_ami_policy_prints_the_document_for_the_configured_region(capsys: pytest.CaptureFixture[str]) -> None:
    main(["policy", "ami.region=eu-west-1", "ami.s3_uri=s3://team-ml/dogbreed"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == policies.operator_policy("aws", "eu-west-1", "*", "s3://team-ml/dogbreed")
