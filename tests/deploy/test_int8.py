"""`deploy.model.precision=int8`: quantised at package time, checked against the float model, refused when it
answers too differently, and served by the Ray Serve container (without a C++ compiler) as `deploy predict`
answers."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from deploy.cli import main
from deploy.cloud.config import load_config, load_model_settings
from deploy.model_archive import package_run, packaged_info
from deploy.precision import ModelSettings
from dogbreed.data.synthetic import SyntheticSpec, generate
from dogbreed.errors import DogbreedError
from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.config import compose_config, shrunk_overrides
from tests.helpers.rayserve import RayServeContainer, environment

# Enough validation images that an agreement of 0.99 means something, small enough to train in seconds.
SPEC = SyntheticSpec(classes=4, train_per_class=40, valid_per_class=25, test_per_class=5, width=64, height=48)


def int8_settings(**changes: object) -> ModelSettings:
    base = load_model_settings(["deploy.model.precision=int8", "deploy.model.calibration_images=64"])
    return ModelSettings(**{**base.__dict__, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("int8-data") / "data", SPEC)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A ResNet18 trained whole at 48 px on `data_root` until it tells the classes apart (int8 of a model that
    guesses flips its near-ties); its checkpoint records that data root."""
    output = tmp_path_factory.mktemp("int8-run") / "run"
    trained = ["model.freeze=none", "optim=adamw", "optim.lr=2e-3", "trainer.epochs=8", "data.image_size=48"]
    train(run_settings(compose_config([*shrunk_overrides(output, data_root), *trained])))
    return output


@pytest.fixture(scope="module")
def int8_tarball(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_run(str(run_dir), tmp_path_factory.mktemp("int8-tar") / "model.tar.gz", model=int8_settings())


def test_the_tarball_records_precision_calibration_and_the_checks(int8_tarball: Path, run_dir: Path) -> None:
    info = packaged_info(int8_tarball)
    assert info["precision"] == "int8"
    q = info["quantization"]
    assert q["calibration"]["images"] == 64 and len(q["calibration"]["sha256"]) == 64
    assert q["validation_images"] == 100 and q["top1_agreement"] >= 0.99
    assert abs(q["top1"]["float"] - q["top1"]["int8"]) <= 0.005
    assert q["spec"] == {"arch": "resnet18", "num_classes": 4, "head": "linear", "mlp_hidden": 128}
    # The same seed and images give the same digest: the calibration is reproducible.
    again = package_run(str(run_dir), int8_tarball.with_name("again.tar.gz"), model=int8_settings())
    assert packaged_info(again)["quantization"]["calibration"] == q["calibration"]


def test_the_int8_weights_load_weights_only_and_are_smaller(int8_tarball: Path, run_dir: Path, tmp_path: Path) -> None:
    with tarfile.open(int8_tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    state = torch.load(tmp_path / "model.pth", weights_only=True)  # no arbitrary code is unpickled
    assert any(value.is_quantized for value in state.values() if isinstance(value, torch.Tensor))
    assert (tmp_path / "model.pth").stat().st_size < (run_dir / "model.pth").stat().st_size / 2


def test_calibrating_on_blank_white_images_is_refused_and_nothing_is_written(
    run_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "blank"
    shutil.copytree(data_root, broken)
    for path in (broken / "train").rglob("*.jpg"):
        # Every calibration image blank white: the activation ranges come out far from the real ones.
        Image.new("RGB", (64, 48), (255, 255, 255)).save(path)
    output = tmp_path / "model.tar.gz"
    with pytest.raises(
        DogbreedError, match=r"int8 refused: top-1 agreement 0\.\d+ .* below deploy.model.min_agreement"
    ):
        package_run(str(run_dir), output, model=int8_settings(data_root=str(broken)))
    assert not output.exists() and not list(tmp_path.glob(".model.tar.gz*"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"calibration_images": 10_000}, "needs deploy.model.calibration_images=10000 training images"),
        ({"data_root": "/no/such/data"}, "data root /no/such/data is not on this machine"),
    ],
)
def test_missing_or_too_little_data_is_one_line_and_nothing_is_written(
    run_dir: Path, tmp_path: Path, changes: dict, message: str
) -> None:
    output = tmp_path / "model.tar.gz"
    with pytest.raises(DogbreedError, match=message) as refused:
        package_run(str(run_dir), output, model=int8_settings(**changes))
    assert "\n" not in str(refused.value) and not output.exists()


def test_package_prints_the_agreement_and_both_accuracies(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "cli.tar.gz"
    overrides = ["deploy.model.precision=int8", "deploy.model.calibration_images=64"]
    assert main(["package", str(run_dir), "-o", str(output), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "int8: top-1 agreement with float" in printed and "top-1 float" in printed and "int8 0." in printed


def test_int8_is_refused_for_gpu_instances_before_any_aws_call() -> None:
    s3, int8 = "deploy.s3_uri=s3://bkt/dogbreed", "deploy.model.precision=int8"
    with pytest.raises(DogbreedError, match=r"runs on CPU instances only, and ml\.g5\.xlarge is a GPU type"):
        load_config([s3, int8, "deploy.instance_type=ml.g5.xlarge"])
    assert load_config([s3, int8, "deploy.instance_type=ml.c5.xlarge"]).deploy.model.precision == "int8"
    with pytest.raises(DogbreedError, match=r"deploy\.model\.precision='int4'"):
        load_config([s3, "deploy.model.precision=int4"])


@pytest.fixture(scope="module")
def int8_container(int8_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServeContainer]:
    """The int8 tarball in the Ray Serve container's steps, with no C++ compiler on PATH."""
    model_dir = tmp_path_factory.mktemp("int8-serve") / "opt_ml_model"
    with tarfile.open(int8_tarball) as tar:
        tar.extractall(model_dir, filter="data")
    no_compiler = tmp_path_factory.mktemp("bin")
    env = environment(PATH=str(no_compiler), CXX=None, DOGBREED_COMPILE=None, DOGBREED_THREADS="2")
    container = RayServeContainer(model_dir, env)
    try:
        yield container.start()
    finally:
        container.stop()


def test_the_serving_container_answers_int8_as_deploy_predict_does(
    int8_container: RayServeContainer, int8_tarball: Path, data_root: Path, tmp_path: Path
) -> None:
    images = sorted((data_root / "test").rglob("*.jpg"))
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(data_root / "test"), "--model", str(int8_tarball), "-o", str(predictions)]) == 0
    rows = [line.split(",") for line in predictions.read_text().splitlines()]
    header = rows[0]
    by_file = {Path(row[header.index("path")]).resolve(): row[header.index("breed_1")] for row in rows[1:]}
    for path in images:
        status, answer = int8_container.post_json(path.read_bytes(), "image/jpeg")
        assert status == 200, answer
        assert answer["predictions"][0]["breed"] == by_file[path.resolve()], path
    served = answer["model"]["serving"]
    assert served["precision"] == "int8" and served["compiled"] is False and served["device"] == "cpu"
    assert answer["model"]["quantization"]["top1_agreement"] >= 0.99
