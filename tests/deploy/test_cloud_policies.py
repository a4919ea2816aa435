"""The IAM policies deploy writes and the one its user needs: exact actions and ARNs, and parliament clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from parliament import analyze_policy_string

from deploy.cloud import policies
from dogbreed.aws import iam
from dogbreed.storage.location import S3Location
from tests.helpers.policies import allowed, as_list, findings

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REPOSITORY = "arn:aws:ecr:eu-west-1:763104351884:repository/pytorch-inference"


def statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in policy["Statement"]}


def test_lambda_policy_invokes_only_its_endpoint_and_writes_only_its_logs() -> None:
    policy = policies.lambda_policy("aws", "eu-west-1", ACCOUNT, "Dogbreed-Prod", "Dogbreed-Prod-invoke")
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
    policy = policies.sagemaker_execution_policy(
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


def deployer_text() -> str:
    return (REPO / "deploy" / "iam" / "deployer-policy.json").read_text()


def deployer() -> dict[str, Any]:
    return json.loads(deployer_text())


ROLE = f"arn:aws:iam::{ACCOUNT}:role/dogbreed-x"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/dogbreed-boundary"
OTHER_BOUNDARIES = [
    f"arn:aws:iam::{ACCOUNT}:policy/AdminEverything",
    "arn:aws:iam::aws:policy/AdministratorAccess",
    f"arn:aws:iam::{ACCOUNT}:policy/dogbreed-boundary-wide",
]


def test_evaluator_reads_policies_as_iam_does() -> None:
    policy = {"Statement": [
        {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/*",
         "Condition": {"StringEquals": {"aws:PrincipalTag/team": "ml"}}},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/secret/*"},
    ]}  # fmt: skip
    team = {"aws:PrincipalTag/team": "ml"}
    assert allowed(policy, "S3:GETOBJECT", "arn:aws:s3:::b/x", team)
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::b/x")
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::b/secret/x", team)
    assert not allowed(policy, "s3:PutObject", "arn:aws:s3:::b/x", team)


@pytest.mark.parametrize("action", ["iam:CreateRole", "iam:PutRolePolicy", "iam:PutRolePermissionsBoundary"])
def test_deployer_makes_or_changes_roles_only_under_the_project_boundary(action: str) -> None:
    policy = deployer()
    # Without a boundary a deployer could make dogbreed-x with an inline *:* policy and run code as it.
    assert not allowed(policy, action, ROLE)
    assert allowed(policy, action, ROLE, {"iam:PermissionsBoundary": BOUNDARY})
    assert allowed(policy, action, f"arn:aws:iam::{ACCOUNT}:role/dogbreed", {"iam:PermissionsBoundary": BOUNDARY})
    for other in OTHER_BOUNDARIES:
        assert not allowed(policy, action, ROLE, {"iam:PermissionsBoundary": other})
    assert not allowed(policy, action, f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PermissionsBoundary": BOUNDARY})


@pytest.mark.parametrize(
    "action",
    [
        "iam:AttachRolePolicy", "iam:DeleteRolePermissionsBoundary", "iam:UpdateAssumeRolePolicy",
        "iam:CreatePolicy", "iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy",
        "iam:CreateUser", "iam:PutUserPolicy", "sts:AssumeRole",
    ],
)  # fmt: skip
def test_no_way_around_the_boundary_is_allowed(action: str) -> None:
    """Attaching managed policies, lifting the boundary, rewriting its document or assuming a role: all refused."""
    policy = deployer()
    for resource in (ROLE, BOUNDARY, f"arn:aws:iam::{ACCOUNT}:user/dogbreed-x"):
        for context in ({}, {"iam:PermissionsBoundary": BOUNDARY}):
            assert not allowed(policy, action, resource, context)


SERVICES = ["sagemaker.amazonaws.com", "lambda.amazonaws.com", "ec2.amazonaws.com", "glue.amazonaws.com",
            "cloudformation.amazonaws.com", "ecs-tasks.amazonaws.com"]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "service"),
    [
        ("dogbreed-sagemaker", "sagemaker.amazonaws.com"),
        ("dogbreed-prod-sagemaker", "sagemaker.amazonaws.com"),
        ("dogbreed-lambda", "lambda.amazonaws.com"),
        ("dogbreed", "ec2.amazonaws.com"),  # the ami instance role
        ("dogbreed-sagemaker-training", "sagemaker.amazonaws.com"),  # hydra/launcher=sagemaker's jobs
        ("dogbreed-x", None),
        ("admin", None),
    ],
)
def test_each_role_is_passed_only_to_the_service_that_runs_it(role: str, service: str | None) -> None:
    policy = deployer()
    arn = f"arn:aws:iam::{ACCOUNT}:role/{role}"
    passed = [s for s in SERVICES if allowed(policy, "iam:PassRole", arn, {"iam:PassedToService": s})]
    assert passed == ([service] if service else [])
    assert not allowed(policy, "iam:PassRole", arn)  # without the service named, nothing


@pytest.mark.parametrize("action", ["lambda:CreateFunction", "lambda:UpdateFunctionConfiguration"])
def test_functions_get_no_layers_and_no_code_updates(action: str) -> None:
    # A layer, like new code, runs under the function's role; the handler needs neither.
    policy = deployer()
    function = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:dogbreed-invoke"
    assert allowed(policy, action, function)
    layer = {"lambda:Layer": f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:mine:1"}
    assert not allowed(policy, action, function, layer)
    assert not allowed(policy, "lambda:UpdateFunctionCode", function)


def test_deployer_policy_passes_parliament_with_community_auditors() -> None:
    found = analyze_policy_string(deployer_text(), include_community_auditors=True).findings
    issues = {f.issue: f for f in found}
    # Justified findings, and only these:
    # - RESOURCE_STAR: Application Auto Scaling targets have opaque ARNs, so its writes cannot be name-scoped.
    # - PERMISSIONS_MANAGEMENT_ACTIONS: making and removing the project's roles is the job; every action
    #   that grants (CreateRole, PutRolePolicy, PutRolePermissionsBoundary) requires the project boundary.
    # No PRIVILEGE_ESCALATION of any type: roles need the boundary, PassRole names the service, and
    # there is no lambda:UpdateFunctionCode (new handler code replaces the function instead).
    assert set(issues) == {"RESOURCE_STAR", "PERMISSIONS_MANAGEMENT_ACTIONS"}
    assert issues["RESOURCE_STAR"].detail == [
        "application-autoscaling:DeleteScalingPolicy",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:RegisterScalableTarget",
    ]
    assert "iam:updateassumerolepolicy" not in issues["PERMISSIONS_MANAGEMENT_ACTIONS"].location["actions"]
    # Without the community auditors: only the justified RESOURCE_STAR.
    assert [f.issue for f in analyze_policy_string(deployer_text()).findings] == ["RESOURCE_STAR"]


def test_boundary_policy_is_clean_but_for_the_ecr_login_aws_cannot_scope() -> None:
    text = (REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text()
    assert [f.issue for f in analyze_policy_string(text).findings] == []
    # ecr:GetAuthorizationToken returns a registry token; the endpoint needs it to pull its image.
    found = analyze_policy_string(text, include_community_auditors=True).findings
    assert [(f.issue, f.location["actions"]) for f in found] == [
        ("CREDENTIALS_EXPOSURE", ["ecr:getauthorizationtoken"])
    ]
    boundary = json.loads(text)
    assert not any(a.endswith("*") for s in boundary["Statement"] for a in as_list(s["Action"]))
    assert not any(
        a.startswith(("iam:", "sts:", "lambda:")) for s in boundary["Statement"] for a in as_list(s["Action"])
    )


def test_boundary_allows_everything_the_deploy_roles_are_given() -> None:
    boundary = json.loads((REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text())
    for policy in (
        policies.lambda_policy("aws", "eu-west-1", ACCOUNT, "dogbreed", "dogbreed-invoke"),
        policies.sagemaker_execution_policy(
            "aws", "eu-west-1", ACCOUNT, "bkt", "deploys/dogbreed", REPOSITORY, "dogbreed"
        ),
    ):
        for statement in policy["Statement"]:
            for action in as_list(statement["Action"]):
                assert allowed(boundary, action, statement["Resource"]), (action, statement["Resource"])
    # and nothing beyond the project's names
    assert not allowed(boundary, "sagemaker:InvokeEndpoint", f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/other")
    assert not allowed(boundary, "s3:GetObject", "arn:aws:s3:::bkt/other/model.tar.gz")
    assert not allowed(boundary, "s3:DeleteObject", "arn:aws:s3:::bkt/deploys/dogbreed/x")


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


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("sagemaker:CreateModelPackageGroup", "model-package-group/{name}"),
        ("sagemaker:DescribeModelPackageGroup", "model-package-group/{name}"),
        ("sagemaker:CreateModelPackage", "model-package/{name}/3"),
        ("sagemaker:DescribeModelPackage", "model-package/{name}/3"),
        ("sagemaker:UpdateModelPackage", "model-package/{name}/3"),
        ("sagemaker:ListModelPackages", "model-package/{name}/3"),
        ("cloudwatch:PutMetricAlarm", "alarm:{name}-5xx"),
        ("cloudwatch:DescribeAlarms", "alarm:{name}-invoke-throttles"),
        ("cloudwatch:DeleteAlarms", "alarm:{name}-latency-p99"),
        ("sns:CreateTopic", "{name}-alarms"),
        ("sns:Subscribe", "{name}-alarms"),
        ("sns:GetTopicAttributes", "{name}-alarms"),
        ("sns:ListSubscriptionsByTopic", "{name}-alarms"),
        ("sns:DeleteTopic", "{name}-alarms"),
    ],
)
def test_deployer_runs_the_registry_alarms_and_topic_of_project_names_only(action: str, resource: str) -> None:
    """register / approve / models, the alarms `up` sets and `down` deletes, and the alarm e-mail topic."""
    policy = deployer()
    service = action.split(":")[0]
    arn = {
        "sagemaker": "arn:aws:sagemaker:eu-west-1:{account}:{resource}",
        "cloudwatch": "arn:aws:cloudwatch:eu-west-1:{account}:{resource}",
        "sns": "arn:aws:sns:eu-west-1:{account}:{resource}",
    }[service]
    for name, allowed_here in (("dogbreed", True), ("dogbreed-prod", True), ("billing", False)):
        full = arn.format(account=ACCOUNT, resource=resource.format(name=name))
        assert allowed(policy, action, full) == allowed_here, full
    # Other people's alarms (and AWS's target-tracking ones beyond this deploy's) stay out of reach.
    assert not allowed(policy, "cloudwatch:DeleteAlarms", f"arn:aws:cloudwatch:eu-west-1:{ACCOUNT}:alarm:prod-5xx")
    assert not allowed(policy, "sns:Publish", f"arn:aws:sns:eu-west-1:{ACCOUNT}:dogbreed-alarms")


def test_execution_policy_writes_capture_files_only_when_asked_and_the_boundary_allows_it() -> None:
    args = ("aws", "eu-west-1", ACCOUNT, "bkt", "deploys/dogbreed", REPOSITORY, "dogbreed")
    assert "WriteCapture" not in statements(policies.sagemaker_execution_policy(*args))
    policy = policies.sagemaker_execution_policy(*args, write_capture=True)
    write = statements(policy)["WriteCapture"]
    assert (write["Action"], write["Resource"]) == ("s3:PutObject", "arn:aws:s3:::bkt/deploys/dogbreed/capture/*")
    assert findings(policy) == []
    boundary = json.loads((REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text())
    assert allowed(boundary, "s3:PutObject", "arn:aws:s3:::bkt/deploys/dogbreed/capture/2026/12/02/x.jsonl")


def test_deployer_may_start_batch_transform_jobs_of_the_project_only() -> None:
    policy = deployer()
    job = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:transform-job/dogbreed-1a2b3c4d-20261202031500"
    assert allowed(policy, "sagemaker:CreateTransformJob", job)
    assert allowed(policy, "sagemaker:DescribeTransformJob", job)
    assert not allowed(policy, "sagemaker:CreateTransformJob", f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:transform-job/x")


TRAINING_JOB = f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:training-job/dogbreed-20261202-101500-0"


@pytest.mark.parametrize(
    "action", ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"]
)
def test_deployer_launches_and_stops_only_the_projects_training_jobs(action: str) -> None:
    policy = deployer()
    assert allowed(policy, action, TRAINING_JOB)
    assert not allowed(policy, action, f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:training-job/other-job")


def test_deployer_reads_training_logs_but_writes_none() -> None:
    policy = deployer()
    stream = f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs:log-stream:dogbreed-x/algo-1"
    assert allowed(policy, "logs:GetLogEvents", stream)
    assert not allowed(policy, "logs:GetLogEvents", f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/lambda/x:*")
    assert not allowed(policy, "logs:PutLogEvents", stream)


def test_training_role_policy_is_within_the_boundary_and_scoped_to_its_prefixes() -> None:
    from dogbreed.sagemaker.role import training_policy
    from dogbreed.storage.location import S3Location

    base, data = S3Location("bkt", "team/dogbreed"), S3Location("bkt", "shared/dogbreed/dogImages/")
    repository = "arn:aws:ecr:eu-west-1:763104351884:repository/pytorch-training"
    policy = training_policy("aws", "eu-west-1", ACCOUNT, base, [data], repository)
    boundary = json.loads((REPO / "dogbreed" / "aws" / "boundary-policy.json").read_text())
    for statement in policy["Statement"]:
        prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [None])
        namespace = statement.get("Condition", {}).get("StringEquals", {}).get("cloudwatch:namespace")
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                for prefix in prefixes:
                    context = {"s3:prefix": prefix} if prefix else {"cloudwatch:namespace": namespace or ""}
                    assert allowed(boundary, action, resource, context), (action, resource, context)
    assert allowed(policy, "s3:PutObject", "arn:aws:s3:::bkt/team/dogbreed/jobs/x/output/model.tar.gz")
    assert allowed(policy, "s3:GetObject", "arn:aws:s3:::bkt/shared/dogbreed/dogImages/train/x.jpg")
    assert not allowed(policy, "s3:PutObject", "arn:aws:s3:::bkt/shared/dogbreed/dogImages/train/x.jpg")
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::bkt/team/other/x")
    assert not allowed(policy, "s3:ListBucket", "arn:aws:s3:::bkt", {"s3:prefix": "team/other/"})
    assert findings(policy) == []


@pytest.mark.parametrize("serverless", [False, True])
def test_every_call_the_up_preflight_simulates_is_allowed_by_the_deployer_policy(serverless: bool) -> None:
    from deploy.cloud import needs
    from deploy.cloud.config import load_config

    d = load_config(["deploy.s3_uri=s3://bkt/models", f"deploy.serverless.enabled={str(serverless).lower()}"]).deploy
    where = (ACCOUNT, "aws", BOUNDARY)
    for call in needs.calls(d, where, "eu-west-1", "bkt", "models/dogbreed"):
        assert allowed(deployer(), call.action, call.resource, call.context), call


def test_every_call_the_launcher_preflight_simulates_is_allowed_by_the_deployer_policy() -> None:
    from dogbreed.sagemaker import needs
    from dogbreed.sagemaker.settings import LaunchSettings

    # The deployer policy `python -m deploy policy` prints for the layout the user set up.
    fitted = policies.deployer_policy([S3Location("bkt", "runs")])
    for call in needs.calls(LaunchSettings(s3_uri="s3://bkt/runs"), "aws", ACCOUNT, "eu-west-1"):
        assert allowed(fitted, call.action, call.resource, call.context), call
    assert not allowed(fitted, "s3:PutObject", "arn:aws:s3:::bkt/elsewhere/x")
    assert policies.deployer_policy([]) == deployer()


def test_deploy_policy_prints_the_fitted_document(capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.cli import main

    main(["policy", "s3://bkt/models", "s3://bkt/data"])
    printed = json.loads(capsys.readouterr().out)
    objects = statements(printed)["ModelArtifactsAndState"]["Resource"]
    assert objects == ["arn:aws:s3:::bkt/data/*", "arn:aws:s3:::bkt/models/*"]
