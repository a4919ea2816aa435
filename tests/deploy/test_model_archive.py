"""python -m deploy package: layout, validation, image size, s3:// runs, and a self-contained code/."""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
import torch

import dogbreed
import dogbreed.serving
from deploy.cli import main
from deploy.model_archive import PackageError, package_run
from dogbreed.errors import WeightsError
from tests.helpers.images import image_bytes
from tests.helpers.runs import train_run

SERVING_DIR = Path(dogbreed.serving.__file__).parent
# What the container offers besides the standard library (sagemaker_inference: errors.py tries it).
CONTAINER_PACKAGES = {"torch", "torchvision", "PIL", "sagemaker_inference"}
# The Ray Serve app runs only in the Ray Serve image, which adds Ray and its starlette.
RAY_SERVE_PACKAGES = {"ray", "starlette"}
# Runs in the subprocess of test_shipped_code_serves_a_jpeg_with_nothing_of_the_project_importable.
SERVE_FROM_CODE_DIR = """
import importlib.util, json, sys
code, model_dir, image, site_dirs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
# -S ran no .pth file (the project's editable install is one): site-packages is only a plain directory.
sys.path[:0] = [code]
sys.path += site_dirs
import inference
from dogbreed.serving.errors import RequestError
model = inference.model_fn(model_dir)
with open(image, "rb") as file:
    request = inference.input_fn(file.read(), "image/jpeg")
answer = json.loads(inference.output_fn(inference.predict_fn(request, model), "*/*"))
refused = None
try:
    inference.input_fn(b"", "image/jpeg")
except RequestError as err:
    refused = err.status
print(json.dumps({
    "predictions": answer["predictions"],
    "refused": refused,
    "project": {name: module.__file__ for name, module in sys.modules.items()
                if name.split(".")[0] in ("inference", "dogbreed", "deploy", "ami", "benchmarks", "tests")},
    "findable": [name for name in ("deploy", "ami", "dogbreed.train", "dogbreed.storage")
                 if importlib.util.find_spec(name) is not None],
}))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    return train_run(tmp_path_factory.mktemp("serving-package") / "run", tiny_dataset)


def bare_run(run_dir: Path, destination: Path) -> Path:
    """What SageMaker training leaves: model.pth and labels.json only."""
    destination.mkdir()
    for name in ("model.pth", "labels.json"):
        shutil.copy(run_dir / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def shipped(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.tar.gz extracted as the container sees it (/opt/ml/model)."""
    root = tmp_path_factory.mktemp("shipped")
    tarball = package_run(str(run_dir), root / "model.tar.gz")
    with tarfile.open(tarball) as tar:
        tar.extractall(root / "opt_ml_model", filter="data")
    return root / "opt_ml_model"


def serving_info(tarball: Path) -> dict:
    with tarfile.open(tarball) as tar:
        return json.loads(tar.extractfile("serving.json").read())


def test_package_layout_and_info(run_dir: Path, tmp_path: Path) -> None:
    tarball = package_run(str(run_dir), tmp_path / "model.tar.gz")
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        shipped = {member.name: tar.extractfile(member).read() for member in members if member.isfile()}
    names = [member.name for member in members]
    serving_modules = sorted(path.relative_to(SERVING_DIR).as_posix() for path in SERVING_DIR.rglob("*.py"))
    # The serving package whole and nothing else, in a fixed order: no list of modules to keep in step.
    code = ["code/inference.py", "code/dogbreed/__init__.py", *(f"code/dogbreed/serving/{m}" for m in serving_modules)]
    assert names == ["model.pth", "labels.json", "serving.json", "config.yaml", *code]
    essential = (
        "__init__",
        "architecture",
        "errors",
        "fetch",
        "handler",
        "hardware",
        "inference",
        "preprocess",
        "ray_app",
    )
    assert {f"code/dogbreed/serving/{module}.py" for module in essential} <= set(names)
    assert shipped["code/inference.py"] == (SERVING_DIR / "inference.py").read_bytes()
    assert shipped["code/dogbreed/__init__.py"] == Path(dogbreed.__file__).read_bytes()
    assert all(shipped[f"code/dogbreed/serving/{m}"] == (SERVING_DIR / m).read_bytes() for m in serving_modules)
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


def weights_with(state: dict, change: str) -> dict:
    """The run's state_dict spoiled the way real runs spoil it."""
    if change == "ddp":
        return {f"module.{key}": value for key, value in state.items()}
    if change == "newer dtype":  # float8_e8m0fnu came after torch 2.6, the inference image's torch
        return {**state, "fc.bias": state["fc.bias"].to(torch.float8_e8m0fnu)}
    return {key: value for key, value in state.items() if key != "bn1.running_mean"}  # a missing buffer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("ddp", r"every key starts with 'module\.'"),
        ("newer dtype", r"fc\.bias is float8_e8m0fnu; the inference containers \(torch 2\.6 and 2\.10\)"),
        ("missing buffer", r"does not fit a resnet18.*bn1\.running_mean"),
    ],
)
def test_weights_the_container_cannot_load_fail_at_package_not_at_endpoint_start(
    run_dir: Path, tmp_path: Path, change: str, message: str
) -> None:
    bare = bare_run(run_dir, tmp_path / "bare")
    state = torch.load(bare / "model.pth", weights_only=True)
    torch.save(weights_with(state, change), bare / "model.pth")
    with pytest.raises(WeightsError, match=message):
        package_run(str(bare), tmp_path / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists()


def test_sagemaker_model_dir_info_gives_size_and_versions(run_dir: Path, tmp_path: Path) -> None:
    bare = bare_run(run_dir, tmp_path / "bare")
    info = {"image_size": 96, "arch": "resnet18", "head": "linear", "versions": {"torch": "2.14.1"}}
    (bare / "model_info.json").write_text(json.dumps(info))
    served = serving_info(package_run(str(bare), tmp_path / "model.tar.gz"))
    assert served["image_size"] == 96 and served["trained_with"] == {"torch": "2.14.1"}


def test_s3_run_prefix(run_dir: Path, tmp_path: Path, aws: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="runs")
    # One PUT each with a SHA-256 checksum: S3's whole-object checksum is what the verified download checks.
    for name in ("model.pth", "labels.json"):
        body = (run_dir / name).read_bytes()
        s3.put_object(Bucket="runs", Key=f"exp/run-7/{name}", Body=body, ChecksumAlgorithm="SHA256")
    # A CLI run's Hydra config (no checkpoint.pt here, to keep the upload small).
    config = b"data:\n  image_size: 48\n"
    s3.put_object(Bucket="runs", Key="exp/run-7/.hydra/config.yaml", Body=config, ChecksumAlgorithm="SHA256")
    tarball = package_run("s3://runs/exp/run-7/", tmp_path / "s3.tar.gz")
    info = serving_info(tarball)
    assert info["name"] == "run-7" and info["image_size"] == 48
    with pytest.raises(PackageError, match=r"model\.pth"):
        package_run("s3://runs/exp/empty", tmp_path / "none.tar.gz")


def test_shipped_dogbreed_init_imports_nothing(shipped: Path) -> None:
    """code/dogbreed/__init__.py comes along as the package root: it must pull in nothing of the project."""
    tree = ast.parse((shipped / "code" / "dogbreed" / "__init__.py").read_text())
    assert not any(isinstance(node, ast.Import | ast.ImportFrom) for node in ast.walk(tree))
    assert [type(node) for node in tree.body] == [ast.Expr, ast.Assign]  # docstring, __version__
    assert [target.id for target in tree.body[1].targets] == ["__version__"]


def test_shipped_code_imports_only_itself_and_what_the_container_has(shipped: Path) -> None:
    """Every import statement, run or not (compile and URL paths too), stays inside code/ or the container."""
    outside = []
    for path in sorted((shipped / "code").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                inside = module in ("dogbreed", "dogbreed.serving") or module.startswith("dogbreed.serving.")
                image = CONTAINER_PACKAGES | (RAY_SERVE_PACKAGES if path.name == "ray_app.py" else set())
                if not (inside or top in image or top in sys.stdlib_module_names):
                    outside.append(f"{path.relative_to(shipped)}: {module}")
    assert outside == []


def test_shipped_code_serves_a_jpeg_with_nothing_of_the_project_importable(
    shipped: Path, run_dir: Path, tmp_path: Path
) -> None:
    """The container has torch/torchvision/pillow but not this project: code/ alone must answer requests.

    -I -S: no PYTHONPATH, no current directory, no user site and no site-packages .pth
    files, so the project's editable install is not on the path; the child adds
    site-packages back as a plain directory for torch, torchvision and PIL.
    """
    image = tmp_path / "dog.jpg"
    image.write_bytes(image_bytes())
    code = shipped / "code"
    site_dirs = json.dumps(site.getsitepackages())
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", SERVE_FROM_CODE_DIR, str(code), str(shipped), str(image), site_dirs],
        cwd=tmp_path,
        env={**os.environ, "DOGBREED_COMPILE": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    labels = set(json.loads((run_dir / "labels.json").read_text()).values())
    assert report["predictions"] and {item["breed"] for item in report["predictions"]} <= labels
    assert report["refused"] == 400  # the request errors are the shipped ones
    assert {"inference", "dogbreed", "dogbreed.serving.handler"} <= report["project"].keys()
    assert all(Path(file).is_relative_to(code) for file in report["project"].values()), report["project"]
    assert report["findable"] == []  # neither deploy nor the rest of dogbreed: only code/ was there


def test_unreachable_s3_is_a_clear_error(tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(PackageError, match="cannot read s3://runs/x"):
        package_run("s3://runs/x", tmp_path / "m.tar.gz")


def test_a_training_jobs_model_packages_by_its_name_or_its_s3_uri(run_dir: Path, tmp_path: Path, aws: str) -> None:
    """What `hydra/launcher=sagemaker` leaves: SM_MODEL_DIR tarred by SageMaker, without a SHA-256."""
    s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket="bkt")
    sagemaker.create_training_job(
        TrainingJobName="dogbreed-20261202-101500-0",
        AlgorithmSpecification={"TrainingImage": "image", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/dogbreed-sagemaker-training",
        OutputDataConfig={"S3OutputPath": "s3://bkt/dogbreed/jobs"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("model.pth", "labels.json", "metrics.json"):
            tar.add(run_dir / name, arcname=name)
        config = b"data:\n  image_size: 48\n"  # the run's .hydra/config.yaml (train_run has none)
        info = tarfile.TarInfo(".hydra/config.yaml")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
    key = "dogbreed/jobs/dogbreed-20261202-101500-0/output/model.tar.gz"
    s3.put_object(Bucket="bkt", Key=key, Body=buffer.getvalue())
    by_name = serving_info(package_run("dogbreed-20261202-101500-0", tmp_path / "a.tar.gz"))
    by_uri = serving_info(package_run(f"s3://bkt/{key}", tmp_path / "b.tar.gz"))
    assert by_name["name"] == by_uri["name"] == "dogbreed-20261202-101500-0"
    assert by_name["image_size"] == by_uri["image_size"] == 48  # from the run's config, not 224
    with pytest.raises(PackageError, match="dogbreed-unknown"):
        package_run("dogbreed-unknown", tmp_path / "c.tar.gz")
