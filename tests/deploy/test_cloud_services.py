"""Service wrappers on their own: verified uploads, AWS refusals turned into messages, waits, reproducible zips."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deploy.cloud import artifacts, hosting, lambda_, policies
from deploy.cloud.errors import DeployError
from deploy.cloud.orchestrator import content_version
from dogbreed.aws import iam
from dogbreed.storage.location import S3Location
from dogbreed.storage.transfer import UploadSettings, head_or_none

REGION = "us-east-1"
# Two tries without waiting: the retry bound, not the backoff, is under test.
FAST_RETRIES = UploadSettings(attempts=2, backoff_s=0)


def client(service: str) -> tuple[object, Stubber]:
    made = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(made)
    stubber.activate()
    return made, stubber


def test_model_upload_is_checked_by_s3_and_a_second_upload_keeps_the_object(aws: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="artifacts")
    path = tmp_path / "model.tar.gz"
    path.write_bytes(first := os.urandom(3000))
    location = S3Location("artifacts", "m/v1/model.tar.gz")

    digest, uploaded = artifacts.upload_model(s3, path, location)

    assert uploaded and digest == hashlib.sha256(first).hexdigest()
    head = s3.head_object(Bucket="artifacts", Key="m/v1/model.tar.gz", ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == digest  # S3 checked the whole file's SHA-256
    assert s3.get_object(Bucket="artifacts", Key="m/v1/model.tar.gz")["Body"].read() == first
    # A repackage (same model, new timestamps) maps to the same key: the object there is kept.
    path.write_bytes(os.urandom(3000))
    assert artifacts.upload_model(s3, path, location) == (digest, False)
    assert s3.get_object(Bucket="artifacts", Key="m/v1/model.tar.gz")["Body"].read() == first
    assert head_or_none(s3, S3Location("artifacts", "m/v2/model.tar.gz")) is None


def test_upload_to_a_missing_bucket_says_where_it_failed(aws: str, tmp_path: Path) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"x")
    with pytest.raises(DeployError, match=r"s3://no-such-bucket/k failed"):
        artifacts.upload_model(boto3.client("s3"), path, S3Location("no-such-bucket", "k"), FAST_RETRIES)


def test_upload_that_reads_back_different_is_retried_then_removed(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"weights")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    other = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    read_back = s3.head_object

    def damaged(**kwargs: object) -> dict:
        head = read_back(**kwargs)
        head["ChecksumSHA256"] = other  # S3 reports bytes that are not the file
        return head

    monkeypatch.setattr(s3, "head_object", damaged)
    puts: list[str] = []
    s3.meta.events.register("before-call.s3.PutObject", lambda **_: puts.append("put"))

    with pytest.raises(DeployError, match="upload removed"):
        artifacts.upload_model(s3, path, S3Location("models", "k"), FAST_RETRIES)

    assert len(puts) == FAST_RETRIES.attempts  # retried, within the bound
    assert "Contents" not in s3.list_objects_v2(Bucket="models")  # nothing under the content-addressed key


def test_reserved_concurrency_above_the_account_pool_names_the_setting() -> None:
    lam, stubber = client("lambda")
    stubber.add_response("get_function_concurrency", {}, {"FunctionName": "dogbreed-invoke"})
    message = (
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
        "below its minimum value of [100]."
    )
    stubber.add_client_error("put_function_concurrency", "InvalidParameterValueException", message, 400)
    with pytest.raises(DeployError, match=r"minimum value of \[100\]\. Lower deploy\.lambda\.reserved_concurrency"):
        lambda_.ensure_reserved_concurrency(lam, "dogbreed-invoke", 5)


def test_refused_provisioned_concurrency_names_the_setting() -> None:
    lam, stubber = client("lambda")
    stubber.add_client_error(
        "get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException", http_status_code=404
    )
    stubber.add_client_error(
        "put_provisioned_concurrency_config",
        "InvalidParameterValueException",
        "ProvisionedConcurrentExecutions exceeds the reserved concurrency of the function",
        400,
    )
    with pytest.raises(DeployError, match=r"deploy\.lambda\.provisioned_concurrency \(0 skips it\)"):
        lambda_.ensure_provisioned_concurrency(lam, "dogbreed-invoke", 3)


def test_failed_endpoint_reports_its_reason_and_log_group() -> None:
    sm, stubber = client("sagemaker")
    stubber.add_response("describe_endpoint", endpoint("Creating"), {"EndpointName": "dogbreed"})
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    failed = {**endpoint("Failed"), "FailureReason": reason}
    stubber.add_response("describe_endpoint", failed, {"EndpointName": "dogbreed"})
    with pytest.raises(DeployError) as caught:
        hosting.wait_in_service(sm, "dogbreed", timeout_s=60, poll_s=0)
    assert "did not pass the ping health check" in str(caught.value)
    assert "/aws/sagemaker/Endpoints/dogbreed" in str(caught.value)


def test_slow_endpoint_times_out_naming_the_setting() -> None:
    sm, stubber = client("sagemaker")
    stubber.add_response("describe_endpoint", endpoint("Creating"), {"EndpointName": "dogbreed"})
    with pytest.raises(DeployError, match=r"still Creating .*deploy\.wait\.timeout_s"):
        hosting.wait_in_service(sm, "dogbreed", timeout_s=0, poll_s=0)


def endpoint(status: str) -> dict[str, object]:
    return {
        "EndpointName": "dogbreed",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dogbreed",
        "EndpointConfigName": "dogbreed-abc",
        "EndpointStatus": status,
        "CreationTime": "2026-11-24T00:00:00Z",
        "LastModifiedTime": "2026-11-24T00:00:00Z",
    }


def test_role_propagation_is_retried_and_other_errors_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iam, "PROPAGATION_DELAY_S", 0)
    not_ready = ClientError(
        {
            "Error": {
                "Code": "InvalidParameterValueException",
                "Message": "The role defined for the function cannot be assumed by Lambda.",
            }
        },
        "CreateFunction",
    )
    calls = []

    def create() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise not_ready
        return "created"

    assert iam.retry_while_role_propagates(create, lambda_._role_not_ready) == "created"
    assert len(calls) == 3
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CreateFunction")
    with pytest.raises(ClientError, match="AccessDenied"):
        iam.retry_while_role_propagates(lambda: (_ for _ in ()).throw(denied), lambda_._role_not_ready)


def test_handler_zip_is_reproducible_and_leaves_bytecode_out(tmp_path: Path) -> None:
    folder = tmp_path / "handler"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return event\n")
    (folder / "__pycache__" / "lambda_function.cpython-312.pyc").write_bytes(b"\0")
    first = lambda_.zip_folder(folder)
    os.utime(folder / "lambda_function.py", (1, 1))  # a fresh checkout has other mtimes
    assert lambda_.zip_folder(folder) == first
    assert zipfile.ZipFile(io.BytesIO(first)).namelist() == ["lambda_function.py"]
    assert lambda_.code_sha256(first) == base64.b64encode(hashlib.sha256(first).digest()).decode()


def test_handler_folder_without_handler_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"lambda_function\.py not found; set deploy\.lambda\.source_dir"):
        lambda_.zip_folder(tmp_path)


def test_model_version_ignores_timestamps_and_follows_content(tmp_path: Path) -> None:
    def pack(name: str, weights: bytes, mtime: float) -> Path:
        out = tmp_path / name
        with tarfile.open(out, "w:gz") as tar:
            for member, data in (("model.pth", weights), ("labels.json", b"{}")):
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(data), mtime
                tar.addfile(info, io.BytesIO(data))
        return out

    a, b = pack("a.tar.gz", b"w1", 1000), pack("b.tar.gz", b"w1", 2000)
    assert a.read_bytes() != b.read_bytes()
    assert content_version(a) == content_version(b)
    assert content_version(pack("c.tar.gz", b"w2", 1000)) != content_version(a)


def test_failed_endpoint_is_recreated_not_updated() -> None:
    sm, stubber = client("sagemaker")
    name = {"EndpointName": "dogbreed"}
    stubber.add_response("describe_endpoint", {**endpoint("Failed"), "FailureReason": "bad image"}, name)
    stubber.add_response("delete_endpoint", {}, name)
    stubber.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint 'dogbreed'.", 400)
    stubber.add_response("create_endpoint", {"EndpointArn": endpoint("Creating")["EndpointArn"]}, {
        "EndpointName": "dogbreed", "EndpointConfigName": "dogbreed-new"})  # fmt: skip
    assert hosting.deploy_endpoint(sm, "dogbreed", "dogbreed-new", retain=False) == "recreated"
    stubber.assert_no_pending_responses()


def test_interrupted_deploy_is_waited_for_not_redone() -> None:
    sm, stubber = client("sagemaker")
    stubber.add_response("describe_endpoint", endpoint("Creating"), {"EndpointName": "dogbreed"})
    assert hosting.deploy_endpoint(sm, "dogbreed", "dogbreed-abc", retain=False) == "settling"


SETTINGS = {"Timeout": 30, "MemorySize": 256, "Environment": {"Variables": {"ENDPOINT_NAME": "dogbreed"}}}


def deployed_function(tmp_path: Path) -> tuple[Any, str, Path, dict[str, Any]]:
    """dogbreed-invoke created from a one-line handler in tmp_path/handler, with its role and settings."""
    lam, iam_client = boto3.client("lambda"), boto3.client("iam")
    policy = policies.lambda_policy("aws", "us-east-1", "123456789012", "dogbreed", "dogbreed-invoke")
    boundary = "arn:aws:iam::123456789012:policy/dogbreed-boundary"
    spec = iam.RoleSpec("dogbreed-lambda", "lambda.amazonaws.com", {"dogbreed-lambda": policy}, "test", boundary, "")
    role, _ = iam.ensure_role(iam_client, spec, DeployError)
    folder = tmp_path / "handler"
    folder.mkdir()
    (folder / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    lambda_.ensure_function(lam, "dogbreed-invoke", role, lambda_.zip_folder(folder), SETTINGS)
    return lam, role, folder, SETTINGS


def test_live_alias_catches_up_after_an_interrupted_publish(aws: str, tmp_path: Path) -> None:
    lam, role, folder, settings = deployed_function(tmp_path)
    assert lambda_.ensure_alias(lam, "dogbreed-invoke")
    assert not lambda_.ensure_alias(lam, "dogbreed-invoke")

    # A previous `up` changed the settings, then stopped before publishing.
    longer = {**settings, "Timeout": 60}
    assert lambda_.ensure_function(lam, "dogbreed-invoke", role, lambda_.zip_folder(folder), longer)
    assert lambda_.ensure_alias(lam, "dogbreed-invoke")
    live = lam.get_alias(FunctionName="dogbreed-invoke", Name="live")["FunctionVersion"]
    assert live == "2"
    assert lam.get_function_configuration(FunctionName="dogbreed-invoke", Qualifier=live)["Timeout"] == 60


def test_new_handler_code_replaces_the_function_instead_of_updating_it(aws: str, tmp_path: Path) -> None:
    # The deployer policy has no lambda:UpdateFunctionCode (new code under an existing role escalates).
    lam, role, folder, settings = deployed_function(tmp_path)
    lambda_.ensure_alias(lam, "dogbreed-invoke")
    calls: list[str] = []
    lam.meta.events.register("before-call.lambda.*", lambda model, **_: calls.append(model.name))

    (folder / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return 2\n")
    zip_bytes = lambda_.zip_folder(folder)
    assert lambda_.ensure_function(lam, "dogbreed-invoke", role, zip_bytes, settings)
    assert "UpdateFunctionCode" not in calls and calls.count("DeleteFunction") == 1
    assert lam.get_function(FunctionName="dogbreed-invoke")["Configuration"]["CodeSha256"] == lambda_.code_sha256(
        zip_bytes
    )
    assert lambda_.ensure_alias(lam, "dogbreed-invoke")  # the new function gets its `live` alias again
    assert not lambda_.ensure_function(lam, "dogbreed-invoke", role, zip_bytes, settings)
