"""storage=s3 against a moto server: every artifact verified in S3, data synced from S3, resume from S3."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import boto3
import pytest

from dogbreed.errors import DogbreedError
from dogbreed.storage import mirror, run_uploads
from dogbreed.storage.__main__ import main as storage_cli
from dogbreed.storage.location import S3Location, make_client
from dogbreed.storage.transfer import (
    MiB,
    S3Uploader,
    UnverifiedObjectError,
    UploadSettings,
    VerificationError,
    file_digest,
)
from dogbreed.train import loaders, settings
from dogbreed.train.resume import resolve_resume
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.runs import ARTIFACTS

BUCKET = "dogbreed-artifacts"
# Every artifact of a local run, plus the resolved config that storage=s3 runs write.
EXPECTED = {*ARTIFACTS, "config.yaml"}
# Small parts, so the checkpoint and weights of the test model go up as multipart uploads.
MULTIPART = ["storage.multipart_threshold_mb=8", "storage.multipart_chunk_mb=5"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def s3(aws: str) -> object:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def test_s3_run_puts_every_artifact_at_its_key_with_the_local_sha256(s3, make_cfg) -> None:
    cfg = make_cfg(["storage=s3", f"storage.s3_uri=s3://{BUCKET}/runs", *MULTIPART])

    train(run_settings(cfg))

    run = Path(cfg.paths.output_dir)
    local = {path.as_posix() for path in run_uploads.run_files(run)}
    assert local >= EXPECTED
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/run/")["Contents"]
    assert {item["Key"] for item in listed} == {f"runs/run/{name}" for name in local}
    for name in local:
        body = s3.get_object(Bucket=BUCKET, Key=f"runs/run/{name}")["Body"].read()
        assert sha256(body) == sha256((run / name).read_bytes()), name
    head = s3.head_object(Bucket=BUCKET, Key="runs/run/checkpoint.pt", ChecksumMode="ENABLED")
    assert "-" in head["ETag"], "the checkpoint went up in parts"
    assert head["ChecksumSHA256"]
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET)
    assert (run / "config.yaml").read_text().count("${") == 0, "the uploaded config is resolved"


def test_verify_deletes_an_object_that_does_not_match_the_local_file(s3, tmp_path: Path) -> None:
    local = tmp_path / "model.pth"
    local.write_bytes(b"the real weights")
    s3.put_object(Bucket=BUCKET, Key="runs/x/model.pth", Body=b"something else", ChecksumAlgorithm="SHA256")
    uploader = S3Uploader(s3, UploadSettings())

    with pytest.raises(VerificationError, match="expected 16 bytes"):
        uploader.verify(S3Location(BUCKET, "runs/x/model.pth"), file_digest(local, 5 * MiB))

    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/x/")


def test_push_cli_rejects_bad_input_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        storage_cli(["push", str(tmp_path), "bucket/prefix"])
    assert stop.value.code == 1
    assert "is not an S3 address; expected s3://bucket/prefix" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        storage_cli(["push", str(tmp_path / "missing"), "s3://bucket/prefix"])
    assert stop.value.code == 1
    assert "is not a directory" in capsys.readouterr().err


def upload_tree(client: object, root: Path, prefix: str) -> int:
    files = [path for path in root.rglob("*") if path.is_file()]
    for path in files:
        client.upload_file(str(path), BUCKET, f"{prefix}{path.relative_to(root).as_posix()}")
    return len(files)


def test_training_from_s3_data_syncs_once(s3, make_cfg, tiny_dataset: Path, tmp_path: Path, caplog) -> None:
    count = upload_tree(s3, tiny_dataset, "dogImages/")
    cache = tmp_path / "cache"
    cfg = make_cfg([f"data.root=s3://{BUCKET}/dogImages/", f"data.s3_cache={cache}", "trainer.limit_batches=2"])
    caplog.set_level(logging.INFO)

    train(run_settings(cfg))

    synced = cache / BUCKET / "dogImages"
    assert f"{count} downloaded, 0 up to date" in caplog.text
    assert sorted(p.relative_to(synced) for p in synced.rglob("*.jpg")) == sorted(
        p.relative_to(tiny_dataset) for p in tiny_dataset.rglob("*.jpg")
    )
    assert (Path(cfg.paths.output_dir) / "labels.json").is_file()

    # A second run's data step: nothing to fetch.
    assert loaders.prepare_data_root(settings.data_source(cfg.data)) == synced
    assert f"0 downloaded, {count} up to date, 0 removed" in caplog.text

    changed, gone = sorted(tiny_dataset.rglob("*.jpg"))[:2]
    s3.put_object(Bucket=BUCKET, Key=f"dogImages/{changed.relative_to(tiny_dataset).as_posix()}", Body=b"new bytes")
    s3.delete_object(Bucket=BUCKET, Key=f"dogImages/{gone.relative_to(tiny_dataset).as_posix()}")
    result = mirror.sync_prefix(s3, S3Location(BUCKET, "dogImages"), synced, progress=False)
    assert (result.downloaded, result.removed) == (1, 1)
    assert (synced / changed.relative_to(tiny_dataset)).read_bytes() == b"new bytes"
    assert not (synced / gone.relative_to(tiny_dataset)).exists()


def test_sync_of_an_empty_prefix_says_what_was_expected(s3, tmp_path: Path) -> None:
    with pytest.raises(DogbreedError, match="holds no objects"):
        mirror.sync_prefix(s3, S3Location(BUCKET, "nothing/"), tmp_path, progress=False)


def put_checkpoint(client: object, key: str, data: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=key, Body=data, Metadata={"sha256": sha256(data)})


def test_resume_from_an_s3_uri_downloads_and_verifies(s3, make_cfg) -> None:
    put_checkpoint(s3, "runs/a/checkpoint.pt", b"checkpoint bytes")
    cfg = make_cfg([f"trainer.resume=s3://{BUCKET}/runs/a/checkpoint.pt"])
    output_root = Path(cfg.paths.output_root)

    path = resolve_resume(cfg.trainer.resume, output_root, None, make_client)

    assert path is not None and path.read_bytes() == b"checkpoint bytes"
    s3.put_object(Bucket=BUCKET, Key="runs/b/checkpoint.pt", Body=b"damaged", Metadata={"sha256": sha256(b"x")})
    cfg = make_cfg([f"trainer.resume=s3://{BUCKET}/runs/b/checkpoint.pt"])
    with pytest.raises(DogbreedError, match="does not match the sha256 recorded at upload"):
        resolve_resume(cfg.trainer.resume, output_root, None, make_client)
    cfg = make_cfg([f"trainer.resume=s3://{BUCKET}/runs/none/checkpoint.pt"])
    with pytest.raises(DogbreedError, match="cannot download"):
        resolve_resume(cfg.trainer.resume, output_root, None, make_client)


def test_resume_auto_with_s3_takes_the_newest_checkpoint_of_the_run(s3, make_cfg, tmp_path: Path) -> None:
    overrides = ["storage=s3", f"storage.s3_uri=s3://{BUCKET}/runs", "storage.run_name=spot-1", "trainer.resume=auto"]
    cfg = make_cfg(overrides)
    storage = run_settings(cfg).storage
    assert storage is not None
    run = storage.dest

    def resume() -> Path | None:
        return resolve_resume(cfg.trainer.resume, Path(cfg.paths.output_root), run, storage.client)

    assert resume() is None

    put_checkpoint(s3, "runs/spot-1/checkpoint.pt", b"from the lost instance")
    found = resume()
    assert found is not None and found.read_bytes() == b"from the lost instance"
    assert found.name != "checkpoint.pt", "a download must not look like a local run"

    # A local unfinished run written after the upload wins.
    local = tmp_path / "outputs" / "older-run" / "checkpoint.pt"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"newer, local")
    os.utime(local, (2e9, 2e9))
    assert resume() == local

    # A finished run in S3 is not resumed.
    os.utime(local, (1e9, 1e9))
    s3.put_object(Bucket=BUCKET, Key="runs/spot-1/metrics.json", Body=b"{}")
    assert resume() == local


def test_storage_s3_without_a_bucket_is_a_clear_error(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOGBREED_S3_URI", raising=False)
    cfg = make_cfg(["storage=s3"])
    with pytest.raises(DogbreedError, match=r"storage=s3 needs storage\.s3_uri"):
        train(run_settings(cfg))


def test_resume_refuses_a_checkpoint_overwritten_without_its_sha256(s3, make_cfg, tmp_path: Path) -> None:
    overrides = ["storage=s3", f"storage.s3_uri=s3://{BUCKET}/runs", "storage.run_name=spot-2"]
    cfg = make_cfg([*overrides, "trainer.resume=auto"])
    storage = run_settings(cfg).storage
    assert storage is not None
    run = storage.dest
    local = tmp_path / "checkpoint.pt"
    local.write_bytes(b"the checkpoint as trained")
    S3Uploader(s3, UploadSettings()).upload(local, run.child("checkpoint.pt"))
    # Overwritten by a plain PUT (`aws s3 cp`): a flipped bit, and the sha256 metadata is gone with it.
    s3.put_object(Bucket=BUCKET, Key="runs/spot-2/checkpoint.pt", Body=b"the checkpoint as trainee")
    client = storage.client

    for setting, where in [("auto", run), (f"s3://{BUCKET}/runs/spot-2/checkpoint.pt", None)]:
        with pytest.raises(UnverifiedObjectError, match=r"has no SHA-256 to check it against") as refused:
            resolve_resume(setting, Path(cfg.paths.output_root), where, client)
        assert "python -m dogbreed.storage push" in str(refused.value)
    assert not list((Path(cfg.paths.output_root) / ".s3-resume").glob("*")), "nothing unverified left to load"

    # Put back the verified way, it resumes.
    assert storage_cli(["put", str(local), f"s3://{BUCKET}/runs/spot-2/checkpoint.pt"]) == 0
    found = resolve_resume("auto", Path(cfg.paths.output_root), run, client)
    assert found is not None and found.read_bytes() == b"the checkpoint as trained"


def test_push_stops_at_a_refusal_no_retry_changes(s3, tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)
    uploader = S3Uploader(s3, UploadSettings(attempts=3, backoff_s=30))
    sent: list[str] = []
    s3.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))

    failed = run_uploads.push(uploader, tmp_path, S3Location("no-such-bucket", "runs/r"))

    assert [path.name for path in failed] == ["a.txt", "b.txt", "c.txt"]
    assert len(sent) <= 2, "one file's HEAD and listing; the other files are not tried"
