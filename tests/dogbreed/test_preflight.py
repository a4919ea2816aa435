"""The shared preflight: quotas read as AWS serves them (applied, else default), and simulated permissions."""

from __future__ import annotations

import json
import logging

import boto3
import pytest

from dogbreed.aws import quotas, simulation
from dogbreed.aws.quotas import Need, QuotaError
from dogbreed.aws.simulation import Call, DeniedError
from tests.helpers.aws_gaps import Gaps

SKIP = "rerun with --skip-preflight"
G5_ENDPOINT = "ml.g5.xlarge for endpoint usage"


def client() -> object:
    return boto3.client("service-quotas")


def test_an_applied_value_wins_over_the_default_and_a_shortfall_names_quota_values_and_command(gaps: Gaps) -> None:
    need = Need("sagemaker", G5_ENDPOINT, 2, "deploy.instance_type=ml.g5.xlarge")
    quotas.check(client(), [need], SKIP)  # nothing applied: AWS's default (here 100) holds
    gaps.applied[("sagemaker", "L-1928E07B")] = 1
    with pytest.raises(QuotaError) as refused:
        quotas.check(client(), [need], SKIP)
    assert str(refused.value) == (
        "quota L-1928E07B 'ml.g5.xlarge for endpoint usage' is 1 in us-east-1, deploy.instance_type=ml.g5.xlarge "
        "needs 2; ask for more: aws service-quotas request-service-quota-increase --service-code sagemaker "
        "--quota-code L-1928E07B --desired-value 2 --region us-east-1"
    )


def test_every_shortfall_is_its_own_line(gaps: Gaps) -> None:
    gaps.applied[("sagemaker", "L-1928E07B")] = 0
    gaps.applied[("sagemaker", "L-ED8DEE9B")] = 1
    per_endpoint = Need("sagemaker", "Maximum number of instances per endpoint", 3, "b")
    needs = [Need("sagemaker", G5_ENDPOINT, 3, "a"), per_endpoint]
    with pytest.raises(QuotaError) as refused:
        quotas.check(client(), needs, SKIP)
    assert [line.split(" ")[1] for line in str(refused.value).splitlines()] == ["L-1928E07B", "L-ED8DEE9B"]


def test_a_type_missing_from_the_table_is_found_by_its_exact_name_not_a_suffix(gaps: Gaps) -> None:
    # The spot quota's name ends with the on-demand one's: only equality may match.
    gaps.defaults[("sagemaker", "L-SPOT0001")] = ("ml.trn1.2xlarge for spot training job usage", 8.0)
    gaps.defaults[("sagemaker", "L-TRAIN001")] = ("ml.trn1.2xlarge for training job usage", 0.0)
    with pytest.raises(QuotaError, match=r"^quota L-TRAIN001 'ml.trn1.2xlarge for training job usage' is 0"):
        quotas.check(client(), [Need("sagemaker", "ml.trn1.2xlarge for training job usage", 1, "x")], SKIP)


def test_a_table_code_whose_name_aws_gives_differently_is_looked_up_by_name(gaps: Gaps) -> None:
    gaps.defaults[("sagemaker", "L-1928E07B")] = ("something else", 100.0)
    gaps.defaults[("sagemaker", "L-NEWG5001")] = (G5_ENDPOINT, 0.0)
    with pytest.raises(QuotaError, match=r"^quota L-NEWG5001 "):
        quotas.check(client(), [Need("sagemaker", G5_ENDPOINT, 1, "x")], SKIP)


def test_a_type_the_region_has_no_quota_for_is_refused_as_not_offered(gaps: Gaps) -> None:
    del gaps.defaults[("sagemaker", "L-1928E07B")]
    with pytest.raises(QuotaError) as refused:
        quotas.check(client(), [Need("sagemaker", G5_ENDPOINT, 1, "deploy.instance_type=ml.g5.xlarge")], SKIP)
    assert str(refused.value) == (
        "deploy.instance_type=ml.g5.xlarge: Service Quotas in us-east-1 has no quota 'ml.g5.xlarge for endpoint "
        "usage': the type is not offered there; choose another type or region"
    )


def test_a_caller_that_may_not_read_quotas_is_told_how_to_skip(gaps: Gaps) -> None:
    gaps.refused.add("GetServiceQuota")
    with pytest.raises(QuotaError) as refused:
        quotas.check(client(), [Need("sagemaker", G5_ENDPOINT, 1, "x")], SKIP)
    assert str(refused.value).endswith("allow them or rerun with --skip-preflight")


@pytest.mark.parametrize(
    ("instance_type", "spot", "name"),
    [
        ("m5.xlarge", False, "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
        ("g5.xlarge", False, "Running On-Demand G and VT instances"),
        ("g5.xlarge", True, "All G and VT Spot Instance Requests"),
        ("p4d.24xlarge", False, "Running On-Demand P instances"),
        ("inf2.xlarge", True, "All Inf Spot Instance Requests"),  # not Standard by its "i"
        ("t3.large", True, "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
    ],
)
def test_ec2_types_count_against_their_familys_vcpu_quota(instance_type: str, spot: bool, name: str) -> None:
    assert quotas.ec2_vcpu_quota(instance_type, spot) == name
    assert name in quotas.TABLE["codes"]["ec2"]


def test_a_denied_call_names_action_resource_and_why(gaps: Gaps) -> None:
    caller = boto3.client("sts").get_caller_identity()["Arn"]
    calls = [Call("sagemaker:CreateEndpoint", "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dogbreed")]
    simulation.check(boto3.client("iam"), caller, calls, SKIP)
    assert gaps.simulated[-1]["source"] == "arn:aws:iam::123456789012:user/moto"
    gaps.denied["sagemaker:CreateEndpoint"] = "explicitDeny"
    with pytest.raises(DeniedError) as refused:
        simulation.check(boto3.client("iam"), caller, calls, SKIP)
    assert str(refused.value) == (
        "AWS would refuse sagemaker:CreateEndpoint on arn:aws:sagemaker:us-east-1:123456789012:endpoint/dogbreed "
        "for arn:aws:iam::123456789012:user/moto (an explicit Deny); grant it or rerun with --skip-preflight"
    )


def test_an_assumed_role_is_simulated_as_its_role_with_its_path(gaps: Gaps) -> None:
    iam = boto3.client("iam")
    anyone = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    trust = {"Version": "2012-10-17", "Statement": [anyone]}
    role = iam.create_role(RoleName="ops", Path="/team/", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    assumed = "arn:aws:sts::123456789012:assumed-role/ops/alice"
    assert simulation.principal(iam, assumed) == role["Arn"] == "arn:aws:iam::123456789012:role/team/ops"
    assert simulation.principal(iam, "arn:aws:sts::123456789012:assumed-role/gone/alice") is None
    assert simulation.principal(iam, "arn:aws:iam::123456789012:root") is None


def test_a_caller_that_may_not_simulate_goes_on_with_one_log_line(gaps: Gaps, caplog: pytest.LogCaptureFixture) -> None:
    caller = "arn:aws:iam::123456789012:root"
    with caplog.at_level(logging.INFO, logger="dogbreed.aws.simulation"):
        simulation.check(boto3.client("iam"), caller, [Call("s3:PutObject", "arn:aws:s3:::b/k")], SKIP)
    assert gaps.simulated == [] and "cannot be simulated" in caplog.text
