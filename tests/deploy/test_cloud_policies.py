"""The IAM policies deploy writes and the one its user needs: exact actions and ARNs, and parliament clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from parliament import analyze_policy_string

from deploy.cloud import iam

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REPOSITORY = "arn:aws:ecr:eu-west-1:763104351884:repository/pytorch-inference"


def statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in policy["Statement"]}


def findings(policy: dict[str, Any] | str) -> list[tuple[str, Any]]:
    text = policy if isinstance(policy, str) else json.dumps(policy)
    return [(f.issue, f.detail) for f in analyze_policy_string(text).findings]


def test_lambda_policy_invokes_only_its_endpoint_and_writes_only_its_logs() -> None:
    policy = iam.lambda_policy("aws", "eu-west-1", ACCOUNT, "Dogbreed-Prod", "Dogbreed-Prod-invoke")
    by_sid = statements(policy)
    assert set(by_sid) == {"InvokeEndpoint", "OwnLogs"}
    assert by_sid["InvokeEndpoint"]["Action"] == "sagemaker:InvokeEndpoint"
    # SageMaker lower-cases names in ARNs; a mixed-case ARN would match nothing.
    assert by_sid["InvokeEndpoint"]["Resource"] == f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/dogbreed-prod"
    assert (
        by_sid["OwnLogs"]["Resource"]
        == f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/lambda/Dogbreed-Prod-invoke:*"
    )
    assert all("*" not in s["Action"] for s in policy["Statement"])
    assert findings(policy) == []


def test_execution_policy_reads_only_the_deploy_prefix_and_pulls_only_the_dlc() -> None:
    policy = iam.sagemaker_execution_policy(
        "aws", "eu-west-1", ACCOUNT, "bkt", "deploys/dogbreed", REPOSITORY, "dogbreed"
    )
    by_sid = statements(policy)
    read = by_sid["ReadModel"]
    assert (read["Action"], read["Resource"]) == ("s3:GetObject", "arn:aws:s3:::bkt/deploys/dogbreed/*")
    assert by_sid["PullImage"]["Resource"] == REPOSITORY
    assert by_sid["EcrLogin"] == {
        "Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*",
    }  # fmt: skip
    assert by_sid["OwnLogs"]["Resource"].endswith("log-group:/aws/sagemaker/Endpoints/dogbreed:*")
    assert findings(policy) == []


def test_trust_policy_names_one_service() -> None:
    (statement,) = iam.trust_policy("lambda.amazonaws.com")["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }


def test_deployer_policy_is_scoped_to_deploy_names_except_where_aws_allows_no_scope() -> None:
    text = (REPO / "deploy" / "iam" / "deployer-policy.json").read_text()
    policy = json.loads(text)
    # Application Auto Scaling targets have opaque ARNs, so its writes cannot be name-scoped.
    assert findings(text) == [
        (
            "RESOURCE_STAR",
            [
                "application-autoscaling:DeleteScalingPolicy",
                "application-autoscaling:DeregisterScalableTarget",
                "application-autoscaling:PutScalingPolicy",
                "application-autoscaling:RegisterScalableTarget",
            ],
        )
    ]
    by_sid = statements(policy)
    assert by_sid["PassDeployRolesToTheirServices"]["Condition"]["StringEquals"]["iam:PassedToService"] == [
        "sagemaker.amazonaws.com",
        "lambda.amazonaws.com",
    ]
    for sid in ("DeployRoles", "Hosting", "FrontDoor"):
        resources = by_sid[sid]["Resource"]
        assert all("dogbreed" in arn for arn in ([resources] if isinstance(resources, str) else resources))


@pytest.mark.parametrize(
    "call",
    [
        "create_model", "create_endpoint_config", "create_endpoint", "update_endpoint", "delete_endpoint",
        "register_scalable_target", "put_scaling_policy", "create_function", "put_provisioned_concurrency_config",
        "create_function_url_config", "put_role_policy", "pass_role",
    ],
)  # fmt: skip
def test_deployer_policy_allows_every_call_deploy_makes(call: str) -> None:
    policy = json.loads((REPO / "deploy" / "iam" / "deployer-policy.json").read_text())
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    service = {
        "create_model": "sagemaker", "create_endpoint_config": "sagemaker", "create_endpoint": "sagemaker",
        "update_endpoint": "sagemaker", "delete_endpoint": "sagemaker", "register_scalable_target":
        "application-autoscaling", "put_scaling_policy": "application-autoscaling", "create_function": "lambda",
        "put_provisioned_concurrency_config": "lambda", "create_function_url_config": "lambda",
        "put_role_policy": "iam", "pass_role": "iam",
    }[call]  # fmt: skip
    assert f"{service}:{''.join(part.title() for part in call.split('_'))}" in actions
