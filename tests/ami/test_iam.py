"""The instance role's policies: the linter finds nothing, and they grant the project prefix and nothing more."""

from __future__ import annotations

import json

import pytest
from parliament import analyze_policy_string

from ami.config import project_location
from ami.errors import AmiError
from ami.policies import own_resources_policy, s3_prefix_policy
from dogbreed.aws.iam import trust_policy


@pytest.mark.parametrize(
    "uri", ["s3://team-bucket/dogbreed/runs", "s3://team-bucket/dogbreed/runs/", "s3://team-bucket"]
)
def test_the_s3_policy_passes_the_iam_linter(uri: str) -> None:
    findings = analyze_policy_string(json.dumps(s3_prefix_policy(uri))).findings
    assert [(f.issue, f.detail) for f in findings] == []


def test_the_s3_policy_reaches_only_objects_under_the_prefix() -> None:
    statements = {s["Sid"]: s for s in s3_prefix_policy("s3://team-bucket/dogbreed/runs")["Statement"]}
    assert set(statements) == {"ListProjectPrefix", "ProjectObjects"}
    assert all(s["Effect"] == "Allow" for s in statements.values())

    listing = statements["ListProjectPrefix"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == "arn:aws:s3:::team-bucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["dogbreed/runs", "dogbreed/runs/*"]}}

    objects = statements["ProjectObjects"]
    assert objects["Resource"] == "arn:aws:s3:::team-bucket/dogbreed/runs/*"
    assert sorted(objects["Action"]) == ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    every_action = [listing["Action"], *objects["Action"]]
    assert not any("*" in action for action in every_action)
    assert not any(action.startswith(("s3:Delete", "s3:PutBucket", "iam:", "ec2:")) for action in every_action)


def test_arns_follow_the_partition() -> None:
    statements = s3_prefix_policy("s3://team-bucket/p", partition="aws-cn")["Statement"]
    assert [s["Resource"] for s in statements] == ["arn:aws-cn:s3:::team-bucket", "arn:aws-cn:s3:::team-bucket/p/*"]


def test_a_bucket_without_prefix_lists_without_a_condition() -> None:
    statements = {s["Sid"]: s for s in s3_prefix_policy("s3://team-bucket")["Statement"]}
    assert "Condition" not in statements["ListProjectPrefix"]
    assert statements["ProjectObjects"]["Resource"] == "arn:aws:s3:::team-bucket/*"


def test_only_ec2_may_assume_the_role() -> None:
    (statement,) = trust_policy("ec2.amazonaws.com")["Statement"]
    assert statement == {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}


@pytest.mark.parametrize("uri", ["team-bucket/prefix", "s3:///prefix", "https://team-bucket.s3.amazonaws.com/x"])
def test_a_malformed_s3_uri_is_refused(uri: str) -> None:
    with pytest.raises(AmiError, match=r"ami\.s3_uri must look like s3://bucket/prefix"):
        project_location(uri)
    with pytest.raises(AmiError, match="s3://bucket/prefix"):
        s3_prefix_policy(uri)


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [("s3://team-bucket", "team-bucket", ""), ("s3://team-bucket/", "team-bucket", ""), ("s3://b//p/q/", "b", "p/q")],
)
def test_the_project_prefix_has_no_slashes_at_its_ends(uri: str, bucket: str, key: str) -> None:
    location = project_location(uri)
    assert (location.bucket, location.key) == (bucket, key)


def test_the_boundary_allows_what_the_instance_role_is_given_under_a_dogbreed_folder() -> None:
    """The role carries dogbreed/aws/boundary-policy.json; an s3_uri with a dogbreed/ folder fits in it."""
    from tests.helpers.config import REPO
    from tests.helpers.policies import allowed

    boundary = json.loads((REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text())
    policy = s3_prefix_policy("s3://team-bucket/dogbreed/runs")
    for statement in policy["Statement"]:
        prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [None])
        for action in [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]:
            for prefix in prefixes:
                context = {"s3:prefix": prefix} if prefix else {}
                assert allowed(boundary, action, statement["Resource"], context), (action, prefix)
    assert not allowed(boundary, "s3:GetObject", "arn:aws:s3:::team-bucket/secrets/key")
    assert not allowed(boundary, "s3:ListBucket", "arn:aws:s3:::team-bucket", {"s3:prefix": "secrets/"})
    assert not allowed(boundary, "iam:PassRole", "arn:aws:iam::123456789012:role/admin")


def test_the_instance_writes_only_its_own_log_and_cancels_only_its_own_spot_request() -> None:
    from tests.helpers.config import REPO
    from tests.helpers.policies import allowed

    policy = own_resources_policy("aws", "eu-west-1", "123456789012", "dogbreed")
    assert [(f.issue, f.detail) for f in analyze_policy_string(json.dumps(policy)).findings] == []
    group = "arn:aws:logs:eu-west-1:123456789012:log-group:/dogbreed/ami/dogbreed"
    request = "arn:aws:ec2:eu-west-1:123456789012:spot-instances-request/sir-1"
    own, other = {"aws:ResourceTag/dogbreed:name": "dogbreed"}, {"aws:ResourceTag/dogbreed:name": "team-b"}
    assert allowed(policy, "logs:PutLogEvents", f"{group}:log-stream:i-1")
    assert not allowed(policy, "logs:PutLogEvents", "arn:aws:logs:eu-west-1:123456789012:log-group:/other:log-stream:x")
    assert allowed(policy, "ec2:CancelSpotInstanceRequests", request, own)
    assert not allowed(policy, "ec2:CancelSpotInstanceRequests", request, other)
    assert not allowed(policy, "ec2:StopInstances", "arn:aws:ec2:eu-west-1:123456789012:instance/i-1", own)
    # the boundary lets the role do it: project-tagged requests, /dogbreed/ami/ log groups
    boundary = json.loads((REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text())
    assert allowed(boundary, "logs:PutLogEvents", f"{group}:log-stream:i-1")
    assert allowed(boundary, "ec2:CancelSpotInstanceRequests", request, {"aws:ResourceTag/project": "dogbreed"})
    assert not allowed(boundary, "ec2:CancelSpotInstanceRequests", request, {"aws:ResourceTag/project": "other"})
