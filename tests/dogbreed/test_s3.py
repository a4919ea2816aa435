"""dogbreed.storage.location and .transfer: addresses, not-found checks, digests, clients, transfers against moto."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError

from dogbreed.errors import DogbreedError
from dogbreed.storage.location import (
    S3AddressError,
    S3Location,
    error_code,
    is_not_found,
    make_client,
    permanent_failure,
)
from dogbreed.storage.transfer import (
    MiB,
    S3Uploader,
    UnverifiedObjectError,
    UploadSettings,
    UploadTimeout,
    delete_prefix,
    download_verified,
    file_digest,
    get_json,
    head_or_none,
    put_json,
    recorded_digests,
    recorded_sha256,
    sha256_file,
    within_budget,
)

BUCKET = "dogbreed-s3-module"
NO_WAIT = UploadSettings(attempts=2, backoff_s=0)


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "HeadObject")


@pytest.fixture
def s3(aws: str) -> object:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [("s3://b", "b", ""), ("s3://b/", "b", ""), ("s3://b/runs/x", "b", "runs/x"), ("s3://b/runs/", "b", "runs/")],
)
def test_parse_splits_bucket_and_key(uri: str, bucket: str, key: str) -> None:
    location = S3Location.parse(uri)
    assert (location.bucket, location.key) == (bucket, key)
    assert location.uri == (uri if "/" in uri[5:] else uri + "/")


@pytest.mark.parametrize("uri", ["bucket/prefix", "s3:///prefix", "s3://", "https://b.s3.amazonaws.com/x", ""])
def test_parse_refuses_what_is_not_an_s3_address(uri: str) -> None:
    with pytest.raises(S3AddressError, match=r"is not an S3 address; expected s3://bucket/prefix") as caught:
        S3Location.parse(uri)
    assert isinstance(caught.value, DogbreedError)  # the CLIs print it without a traceback
    assert repr(uri) in str(caught.value)


def test_child_and_prefix_join_with_one_slash() -> None:
    assert S3Location("b", "runs/").child("a/model.pth") == S3Location("b", "runs/a/model.pth")
    assert S3Location("b", "runs").child("model.pth") == S3Location("b", "runs/model.pth")
    assert S3Location("b", "").child("model.pth") == S3Location("b", "model.pth")
    assert S3Location("b", "runs").as_prefix() == S3Location("b", "runs/")
    assert S3Location("b", "runs/").as_prefix() == S3Location("b", "runs/")
    assert S3Location("b", "").as_prefix() == S3Location("b", "")


@pytest.mark.parametrize(
    ("code", "missing"),
    [("404", True), ("NoSuchKey", True), ("NotFound", True), ("NoSuchBucket", True), ("403", False),
     ("AccessDenied", False)],
)  # fmt: skip
def test_not_found_is_told_from_other_refusals(code: str, missing: bool) -> None:
    err = client_error(code)
    assert is_not_found(err) is missing
    assert error_code(err) == code


def test_error_code_of_a_non_s3_error_is_its_type() -> None:
    assert error_code(TimeoutError("slow")) == "TimeoutError"


def test_digests_match_hashlib_whole_and_per_part(tmp_path: Path) -> None:
    data = os.urandom(2 * MiB + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    digest = file_digest(path, MiB)
    parts = b"".join(hashlib.sha256(data[i : i + MiB]).digest() for i in range(0, len(data), MiB))
    assert (digest.size, digest.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert digest.full_b64 == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert digest.composite_b64 == base64.b64encode(hashlib.sha256(parts).digest()).decode()
    assert digest.expected_checksum(threshold=len(data) + 1) == digest.full_b64
    assert digest.expected_checksum(threshold=len(data)) == digest.composite_b64


def test_recorded_sha256_prefers_the_upload_metadata_and_skips_part_checksums() -> None:
    whole = hashlib.sha256(b"x")
    checksum = base64.b64encode(whole.digest()).decode()
    assert recorded_sha256({"Metadata": {"sha256": "ab"}, "ChecksumSHA256": checksum}) == "ab"
    assert recorded_sha256({"ChecksumSHA256": checksum}) == whole.hexdigest()
    assert recorded_sha256({"ChecksumSHA256": checksum + "-3"}) is None
    assert recorded_sha256({"ChecksumSHA256": checksum, "ChecksumType": "COMPOSITE"}) is None
    assert recorded_sha256({"Metadata": {}}) is None


def test_an_upload_needs_at_least_one_attempt() -> None:
    with pytest.raises(DogbreedError, match="at least 1 attempt"):
        UploadSettings(attempts=0)


def test_make_client_takes_plain_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = make_client(max_attempts=4, connect_timeout_s=3, read_timeout_s=7).meta.config
    # botocore's max_attempts counts retries: the first try and 4 more.
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert (config.connect_timeout, config.read_timeout) == (3.0, 7.0)
    default = make_client().meta.config
    assert default.retries == {"mode": "standard"}
    assert (default.connect_timeout, default.read_timeout) == (60, 60)  # botocore's own defaults


def test_head_or_none_and_json_objects(s3) -> None:
    location = S3Location(BUCKET, "deploys/x/state.json")
    assert head_or_none(s3, location) is None
    assert get_json(s3, location) is None
    assert get_json(s3, S3Location("no-such-bucket-here", "state.json")) is None

    put_json(s3, location, {"endpoint": "dogbreed", "n": 1})

    assert get_json(s3, location) == {"endpoint": "dogbreed", "n": 1}
    head = head_or_none(s3, location)
    assert head is not None and head["ContentType"] == "application/json"


def test_delete_prefix_removes_only_keys_under_the_folder(s3) -> None:
    for key in ("d/name/a", "d/name/v1/model.tar.gz", "d/name-dev/a", "d/other"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    assert delete_prefix(s3, S3Location(BUCKET, "d/name")) == 2
    left = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(left) == ["d/name-dev/a", "d/other"]


def test_upload_retries_a_failed_transfer_and_skips_a_finished_one(s3, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(data := os.urandom(5000))
    dest = S3Location(BUCKET, "runs/r/model.pth")
    real_upload, calls = s3.upload_file, []

    def flaky(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise S3UploadFailedError("connection reset")
        real_upload(*args, **kwargs)

    monkeypatch.setattr(s3, "upload_file", flaky)
    digest = S3Uploader(s3, NO_WAIT).upload(path, dest)

    assert len(calls) == 2 and digest.sha256 == hashlib.sha256(data).hexdigest()
    head = s3.head_object(Bucket=BUCKET, Key=dest.key, ChecksumMode="ENABLED")
    assert head["Metadata"]["sha256"] == digest.sha256 and head["ChecksumSHA256"] == digest.full_b64
    assert S3Uploader(s3, NO_WAIT).upload(path, dest) == digest
    assert len(calls) == 2, "S3 already held the file: nothing uploaded"


def test_upload_that_fails_every_try_raises_and_leaves_nothing(s3, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(b"weights")
    monkeypatch.setattr(s3, "upload_file", lambda *a, **k: (_ for _ in ()).throw(S3UploadFailedError("down")))
    with pytest.raises(S3UploadFailedError, match="down"):
        S3Uploader(s3, NO_WAIT).upload(path, S3Location(BUCKET, "runs/r/model.pth"))
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_download_verified_checks_the_recorded_sha256(s3, tmp_path: Path) -> None:
    good = tmp_path / "upload"
    good.write_bytes(b"checkpoint")
    S3Uploader(s3, NO_WAIT).upload(good, S3Location(BUCKET, "ok"))
    assert download_verified(s3, S3Location(BUCKET, "ok"), tmp_path / "d" / "ok").read_bytes() == b"checkpoint"

    s3.put_object(Bucket=BUCKET, Key="bad", Body=b"damaged", Metadata={"sha256": hashlib.sha256(b"x").hexdigest()})
    with pytest.raises(DogbreedError, match="does not match the sha256 recorded at upload"):
        download_verified(s3, S3Location(BUCKET, "bad"), tmp_path / "d" / "bad")
    assert not (tmp_path / "d" / "bad").exists()
    with pytest.raises(DogbreedError, match=r"cannot download s3://dogbreed-s3-module/none: 404"):
        download_verified(s3, S3Location(BUCKET, "none"), tmp_path / "d" / "none")


def test_download_refuses_an_object_without_a_recorded_sha256(s3, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"checkpoint")
    source = S3Location(BUCKET, "runs/r/checkpoint.pt")
    S3Uploader(s3, NO_WAIT).upload(path, source)
    s3.put_object(Bucket=BUCKET, Key=source.key, Body=b"checkpoinT")  # `aws s3 cp` over it: metadata gone

    with pytest.raises(UnverifiedObjectError) as refused:
        download_verified(s3, source, tmp_path / "d" / "checkpoint.pt")

    message = str(refused.value)
    assert "\n" not in message and source.uri in message and "has no SHA-256" in message
    assert "python -m dogbreed.storage push" in message
    assert f"python -m dogbreed.storage put <file> {source.uri}" in message
    assert not (tmp_path / "d" / "checkpoint.pt").exists(), "refused before downloading"


def test_download_checks_s3s_own_whole_object_checksum(s3, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="plain", Body=b"weights", ChecksumAlgorithm="SHA256")
    assert download_verified(s3, S3Location(BUCKET, "plain"), tmp_path / "plain").read_bytes() == b"weights"
    # Metadata left over from another upload disagrees with S3's own checksum: refused.
    stale = {"sha256": hashlib.sha256(b"older weights").hexdigest()}
    s3.put_object(Bucket=BUCKET, Key="stale", Body=b"weights", ChecksumAlgorithm="SHA256", Metadata=stale)
    with pytest.raises(DogbreedError, match="does not match the sha256 recorded at upload"):
        download_verified(s3, S3Location(BUCKET, "stale"), tmp_path / "stale")
    assert not (tmp_path / "stale").exists()


def test_a_multipart_checksum_is_not_taken_for_the_files() -> None:
    checksum = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    assert recorded_sha256({"ChecksumSHA256": checksum, "ETag": '"abc-3"'}) is None
    assert recorded_digests({"ChecksumSHA256": checksum, "ETag": '"abc"', "Metadata": {"sha256": "ab"}}) == {
        hashlib.sha256(b"x").hexdigest(),
        "ab",
    }


@pytest.mark.parametrize("code", ["AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_a_refusal_no_retry_can_change_fails_at_once(s3, tmp_path: Path, monkeypatch, code: str) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(b"weights")
    calls: list[object] = []

    def refused(*args: object, **kwargs: object) -> None:
        calls.append(args)
        try:  # as boto3 raises it: S3UploadFailedError while handling the request's ClientError
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "PutObject")
        except ClientError as err:
            raise S3UploadFailedError(f"Failed to upload: {err}")  # noqa: B904

    monkeypatch.setattr(s3, "upload_file", refused)
    with pytest.raises(S3UploadFailedError, match=code):
        S3Uploader(s3, UploadSettings(attempts=3, backoff_s=30)).upload(path, S3Location(BUCKET, "runs/r/m"))
    assert len(calls) == 1
    assert permanent_failure(S3UploadFailedError("Failed to upload: SlowDown")) is None


def test_a_missing_bucket_is_asked_once(aws: str, tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(b"weights")
    client = boto3.client("s3")
    sent: list[str] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(f"{request.method} {request.url}"))

    with pytest.raises(ClientError, match="NoSuchBucket"):
        S3Uploader(client, UploadSettings(attempts=3, backoff_s=30)).upload(path, S3Location("no-such-bucket", "m"))

    assert len(sent) == len(set(sent)) <= 2, sent  # a HEAD (404) and one listing: no request repeated


def test_within_budget_gives_up_on_time_or_when_asked() -> None:
    assert within_budget(lambda: 7, 1.0, "quick") == 7
    with pytest.raises(ValueError, match="inner"):
        within_budget(lambda: (_ for _ in ()).throw(ValueError("inner")), 1.0, "failing")
    started = time.monotonic()
    with pytest.raises(UploadTimeout, match=r"slow given up after 0\.[2-9].*over its 0.3 s budget"):
        within_budget(lambda: time.sleep(5), 0.3, "slow")
    with pytest.raises(UploadTimeout, match="a stop was requested"):
        within_budget(lambda: time.sleep(5), None, "stopped", give_up=lambda: time.monotonic() - started > 0.5)
    assert time.monotonic() - started < 2
    with pytest.raises(DogbreedError, match="budget must be above 0"):
        UploadSettings(budget_s=0)
