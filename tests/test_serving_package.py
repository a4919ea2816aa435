"""python -m deploy package: layout, validation, image size, s3:// runs, and a self-contained code/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
import torch

from deploy.cli import main
from deploy.package import PackageError, package_run
from dogbreed.errors import WeightsError
from tests.serving_support import image_bytes, train_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    return train_run(tmp_path_factory.mktemp("serving-package") / "run", tiny_dataset)


def bare_run(run_dir: Path, destination: Path) -> Path:
    """What SageMaker training leaves: model.pth and labels.json only."""
    destination.mkdir()
    for name in ("model.pth", "labels.json"):
        shutil.copy(run_dir / name, destination / name)
    return destination


def serving_info(tarball: Path) -> dict:
    with tarfile.open(tarball) as tar:
        return json.loads(tar.extractfile("serving.json").read())


def test_package_layout_and_info(run_dir: Path, tmp_path: Path) -> None:
    tarball = package_run(str(run_dir), tmp_path / "model.tar.gz")
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"model.pth", "labels.json", "serving.json", "code/inference.py"} <= names
    assert "code/dogbreed/transforms.py" in names and "code/deploy/container/handler.py" in names
    assert not any("server" in name or "training" in name for name in names)  # container brings its own server
    info = serving_info(tarball)
    assert info["image_size"] == 32 and info["arch"] == "resnet18" and info["num_classes"] == 4
    assert info["trained_with"]["torch"] == str(torch.__version__)


def test_package_cli_prints_path_and_size(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["package", str(run_dir), "-o", str(tmp_path / "m.tar.gz")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "m.tar.gz") in out and "MB" in out


def test_sagemaker_training_output_packages_with_default_or_given_size(run_dir: Path, tmp_path: Path) -> None:
    bare = bare_run(run_dir, tmp_path / "bare")
    assert serving_info(package_run(str(bare)))["image_size"] == 224
    assert serving_info(package_run(str(bare), tmp_path / "b.tar.gz", image_size=64))["image_size"] == 64


def test_labels_from_another_run_are_refused_and_nothing_is_written(run_dir: Path, tmp_path: Path) -> None:
    bare = bare_run(run_dir, tmp_path / "bare")
    (bare / "labels.json").write_text(json.dumps({str(i): f"breed {i}" for i in range(5)}))
    with pytest.raises(WeightsError, match=r"4-class head but labels\.json names 5"):
        package_run(str(bare))
    assert not any(path.name.endswith(".tar.gz") or ".tar.gz." in path.name for path in bare.iterdir())


def test_foreign_or_missing_weights_are_clear_errors(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bare = bare_run(run_dir, tmp_path / "bare")
    torch.save({"conv.weight": torch.zeros(1)}, bare / "model.pth")
    with pytest.raises(WeightsError, match="not a supported ResNet"):
        package_run(str(bare))
    (bare / "model.pth").unlink()
    with pytest.raises(SystemExit) as stop:
        main(["package", str(bare)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "model.pth missing" in err and "Traceback" not in err
    with pytest.raises(PackageError):
        package_run(str(tmp_path / "nowhere"))


def test_s3_run_prefix(run_dir: Path, tmp_path: Path, aws: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="runs")
    for name in ("model.pth", "labels.json"):
        s3.upload_file(str(run_dir / name), "runs", f"exp/run-7/{name}")
    # A CLI run's Hydra config (no checkpoint.pt here, to keep the upload small).
    s3.put_object(Bucket="runs", Key="exp/run-7/.hydra/config.yaml", Body=b"data:\n  image_size: 48\n")
    tarball = package_run("s3://runs/exp/run-7/", tmp_path / "s3.tar.gz")
    info = serving_info(tarball)
    assert info["name"] == "run-7" and info["image_size"] == 48
    with pytest.raises(PackageError, match=r"model\.pth"):
        package_run("s3://runs/exp/empty", tmp_path / "none.tar.gz")


def test_code_dir_runs_without_the_project(run_dir: Path, tmp_path: Path) -> None:
    """The container has torch/torchvision/pillow but not dogbreed: code/ must be enough."""
    tarball = package_run(str(run_dir), tmp_path / "model.tar.gz")
    model_dir = tmp_path / "opt_ml_model"
    with tarfile.open(tarball) as tar:
        tar.extractall(model_dir, filter="data")
    (tmp_path / "dog.jpg").write_bytes(image_bytes())
    script = (
        "import sys, json; sys.path.insert(0, 'code'); import inference\n"
        "m = inference.model_fn('.')\n"
        "out = json.loads(inference.output_fn(inference.predict_fn("
        f"inference.input_fn(open({str(tmp_path / 'dog.jpg')!r}, 'rb').read(), 'image/jpeg'), m), '*/*'))\n"
        "assert all(mod.__file__.startswith(sys.path[0]) for n, mod in sys.modules.items() "
        "if n.split('.')[0] in ('dogbreed', 'deploy')), 'imported project code from outside code/'\n"
        "print(json.dumps(out['predictions']))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # -I: no PYTHONPATH, no user site, no current directory magic; -c puts '' first, so chdir matters.
    result = subprocess.run(
        [sys.executable, "-I", "-c", script.replace("'code'", repr(str(model_dir / "code")))],
        cwd=model_dir,
        env={**env, "DOGBREED_COMPILE": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    labels = set(json.loads((run_dir / "labels.json").read_text()).values())
    predictions = json.loads(result.stdout.strip().splitlines()[-1])
    assert predictions and {item["breed"] for item in predictions} <= labels


def test_unreachable_s3_is_a_clear_error(tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(PackageError, match="cannot read s3://runs/x"):
        package_run("s3://runs/x", tmp_path / "m.tar.gz")
