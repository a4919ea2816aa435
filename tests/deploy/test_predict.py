"""python -m deploy predict: a dogImages-shaped folder, a list file and an s3:// prefix -> CSV rows."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import boto3
import pytest

from deploy.cli import main
from deploy.server import prepare_model_dir
from dogbreed.serving import handler
from tests.helpers.images import image_bytes, jpeg_bytes
from tests.helpers.runs import train_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    return train_run(tmp_path_factory.mktemp("predict") / "run", tiny_dataset)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as rows:
        return list(csv.DictReader(rows))


def test_dogimages_folder_gives_a_row_per_image_lists_broken_files_and_scores(
    run_dir: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    photos = tmp_path / "test"
    shutil.copytree(tiny_dataset / "test", photos)
    good = sorted(photos.rglob("*.jpg"))
    (photos / "001.Ellipse_0deg" / "empty.jpg").write_bytes(b"")
    (photos / "002.Rectangle_0deg" / "text.jpg").write_text("not a photo")
    (photos / "003.Triangle_0deg" / "notes.txt").write_text("hello")
    output = tmp_path / "out" / "predictions.csv"

    code = main(
        ["predict", str(photos), "--model", str(run_dir), "-o", str(output), "--topk", "3", "--batch-size", "5"]
    )

    assert code == 0
    rows = read_rows(output)
    assert sorted(row["path"] for row in rows) == sorted(str(path) for path in good)
    assert list(rows[0]) == ["path", "breed", "breed_1", "probability_1", "breed_2", "probability_2", "breed_3",
                             "probability_3"]  # fmt: skip
    assert all(
        float(row["probability_1"]) >= float(row["probability_2"]) >= float(row["probability_3"]) for row in rows
    )
    errors = {Path(row["path"]).name: row["reason"] for row in read_rows(output.with_name("predictions_errors.csv"))}
    assert errors == {
        "empty.jpg": "empty file",
        "text.jpg": "the body is not an image in a format the endpoint reads (JPEG, PNG, ...)",
        "notes.txt": "not an image file (suffix '.txt')",
    }
    printed = capsys.readouterr().out
    top1 = sum(row["breed"] == row["breed_1"] for row in rows) / len(rows)
    assert f"{len(good)} images -> {output}" in printed
    assert "3 unreadable files" in printed
    assert f"dogImages layout, {len(good)} images of the model's breeds: top-1 {top1:.3f}, top-5 1.000" in printed

    # The endpoint's answer for the same photo (predict_fn, one at a time) is what the batch wrote.
    predictor = handler.load_predictor(prepare_model_dir(str(run_dir), tmp_path / "model"), compile_model=False)
    answer = handler.predict_fn(handler.Request(good[0].read_bytes(), topk=3), predictor)
    [row] = [row for row in rows if row["path"] == str(good[0])]
    assert [p["breed"] for p in answer["predictions"]] == [row["breed_1"], row["breed_2"], row["breed_3"]]
    assert answer["predictions"][0]["probability"] == pytest.approx(float(row["probability_1"]), abs=1e-3)


def test_list_file_and_missing_paths(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(image_bytes())
    listing = tmp_path / "photos.txt"
    listing.write_text(f"# my photos\n{photo}\n{tmp_path / 'gone.jpg'}\n")

    assert main(["predict", str(listing), "--model", str(run_dir), "-o", str(tmp_path / "p.csv")]) == 0

    [row] = read_rows(tmp_path / "p.csv")
    assert row["path"] == str(photo) and "breed" not in row and "breed_4" in row  # 4 classes: top-5 is 4
    [error] = read_rows(tmp_path / "p_errors.csv")
    assert error["path"].endswith("gone.jpg") and error["reason"].startswith("cannot read")
    assert "top-1" not in capsys.readouterr().out  # no breed folders, no score


def test_s3_prefix_input(run_dir: Path, tmp_path: Path, aws: str, capsys: pytest.CaptureFixture) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="batch/001.Ellipse_0deg/a.jpg", Body=jpeg_bytes(seed=1))
    s3.put_object(Bucket="photos", Key="batch/b.jpg", Body=jpeg_bytes(seed=2))

    output = tmp_path / "p.csv"
    assert main(["predict", "s3://photos/batch/", "--model", str(run_dir), "-o", str(output)]) == 0

    paths = sorted(row["path"] for row in read_rows(output))
    assert paths == ["s3://photos/batch/001.Ellipse_0deg/a.jpg", "s3://photos/batch/b.jpg"]


def test_missing_input_is_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(tmp_path / "nowhere"), "--model", str(run_dir)])
    assert stop.value.code == 1
    assert "neither a folder, a file listing images, nor an s3:// prefix" in capsys.readouterr().err


def test_sagemaker_submits_a_batch_transform_job_over_the_s3_prefix(aws: str, capsys: pytest.CaptureFixture) -> None:
    sm = boto3.client("sagemaker")
    sm.create_model(
        ModelName="dogbreed-1a2b3c4d",
        PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312",
                          "ModelDataUrl": "s3://models/dogbreed/model.tar.gz"},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/dogbreed-sagemaker",
    )  # fmt: skip
    command = ["predict", "s3://photos/batch/", "--model", "dogbreed-1a2b3c4d", "--sagemaker"]

    assert main([*command, "-o", "s3://photos/predictions/", "--instance-count", "2"]) == 0

    name = capsys.readouterr().out.split("started batch transform job ")[1].split()[0]
    assert name.startswith("dogbreed-1a2b3c4d-")
    job = sm.describe_transform_job(TransformJobName=name)
    assert job["ModelName"] == "dogbreed-1a2b3c4d"
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://photos/batch/"
    assert job["TransformInput"]["ContentType"] == "application/x-image"
    assert job["TransformOutput"]["S3OutputPath"] == "s3://photos/predictions/"
    assert job["TransformResources"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}

    with pytest.raises(SystemExit) as stop:
        main(command)  # the default --output is a local CSV
    assert stop.value.code == 1
    assert "s3:// --output prefix" in capsys.readouterr().err
