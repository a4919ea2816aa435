"""The moto fixture really isolates tests: boto3 reaches it and state does not leak."""

from __future__ import annotations

import boto3
import pytest


@pytest.mark.parametrize("attempt", [1, 2])
def test_boto3_reaches_moto_and_state_is_reset_between_tests(aws: str, attempt: int) -> None:
    s3 = boto3.client("s3")
    assert s3.list_buckets()["Buckets"] == []  # the other attempt's bucket is gone
    s3.create_bucket(Bucket="dogbreed-fixture-check")
    s3.put_object(Bucket="dogbreed-fixture-check", Key="k", Body=b"v")
    assert s3.get_object(Bucket="dogbreed-fixture-check", Key="k")["Body"].read() == b"v"
