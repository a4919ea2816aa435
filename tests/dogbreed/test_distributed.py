"""torchrun data-parallel training and the SageMaker entry point, on CPU with gloo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from dogbreed.data.dataset import ImageFolderDataset
from dogbreed.data.folders import class_folders
from dogbreed.data.scan import scan_split
from dogbreed.errors import DogbreedError
from dogbreed.sagemaker.entry_point import cluster_environment, hydra_argv
from dogbreed.serving.architecture import ModelSpec, build_model
from dogbreed.serving.preprocess import EvalPreset
from dogbreed.train.engine import evaluate
from dogbreed.train.run import build_optimizer
from dogbreed.train.runtime import Runtime
from dogbreed.train.settings import optimizer_settings
from tests.helpers.config import REPO, compose_config

TINY = ["model.arch=resnet18", "model.pretrained=false", "data.image_size=32", "data.num_workers=0",
        "data.scan_workers=0", "data.batch_size=8", "trainer.device=cpu", "trainer.precision=fp32",
        "trainer.progress_bar=false"]  # fmt: skip


def torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args]
    env = {**os.environ, "DOGBREED_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_two_processes_train_one_model_and_write_one_run(tiny_dataset: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    result = torchrun(
        [*TINY, f"data.root={tiny_dataset}", "model.freeze=none", "trainer.epochs=2",
         f"paths.output_root={outputs}", f"hydra.run.dir={outputs / 'run'}"],
        tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "weights identical on all 2 ranks" in output
    assert [p.name for p in outputs.iterdir()] == ["run"]  # rank 1 wrote no run directory here

    run = outputs / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    model = build_model(ModelSpec("resnet18", 4))
    model.load_state_dict(torch.load(run / "model.pth", weights_only=True))
    folders = class_folders(tiny_dataset / "valid")
    loader = DataLoader(ImageFolderDataset(scan_split(tiny_dataset, "valid", folders).samples, EvalPreset(32), 37),
                        batch_size=5)  # fmt: skip
    single = evaluate(model, loader, nn.CrossEntropyLoss(), Runtime.from_names("cpu", "fp32"), 4, "valid")
    assert metrics["valid"]["images"] == single.images == 16  # every image exactly once, no padding
    assert metrics["valid"]["top1"] == pytest.approx(single.top1)
    assert metrics["valid"]["loss"] == pytest.approx(single.loss, rel=1e-4)


def test_two_process_feature_cache_extracts_each_image_once(tiny_dataset: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    result = torchrun(
        [*TINY, f"data.root={tiny_dataset}", "model.freeze=backbone", "trainer.epochs=1",
         f"paths.output_root={outputs}", f"hydra.run.dir={outputs / 'run'}"],
        tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    extracted = dict(re.findall(r"extracted (\w+) features: .*images per rank ([\d+]+)\)", output))
    assert extracted == {"train": "24+24", "valid": "8+8", "test": "8+8"}
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 3  # written once, by rank 0


def test_sagemaker_job_writes_a_deployable_model_dir(tiny_dataset: Path, tmp_path: Path) -> None:
    model_dir, output_dir = tmp_path / "model", tmp_path / "output"
    env = {
        **os.environ,
        "SM_CHANNEL_TRAINING": str(tiny_dataset),
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output_dir),
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": "2",
        "DOGBREED_CACHE_DIR": str(tmp_path / "cache"),
    }
    args = ["--learning_rate", "0.001", "--batch_size", "8", "--epochs", "1", "--model.arch", "resnet18",
            "--model.pretrained", "false", "--data.image_size=32", "--trainer.device", "cpu",
            "--data.num_workers", "0"]  # fmt: skip
    result = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert sorted(p.name for p in model_dir.iterdir()) == [
        ".hydra", "labels.json", "metrics.json", "model.pth", "model_info.json",
    ]  # fmt: skip
    assert any(output_dir.rglob("metrics.json"))  # the run itself went to SM_OUTPUT_DATA_DIR

    from deploy.model_archive import package_run

    tarball = package_run(str(model_dir), tmp_path / "model.tar.gz")
    with tarfile.open(tarball) as tar:
        info = json.loads(tar.extractfile("serving.json").read())
    # Served at the size it was trained at, not the 224 a bare model.pth would be guessed at.
    assert (info["image_size"], info["arch"]) == (32, "resnet18")
    assert info["trained_with"]["torch"] == str(torch.__version__)


def test_unknown_sagemaker_hyperparameter_lists_the_valid_ones(tmp_path: Path) -> None:
    env = {**os.environ, "SM_MODEL_DIR": str(tmp_path / "model")}
    result = subprocess.run([sys.executable, "train.py", "--learning-rate", "0.1"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2  # bad usage, like an argparse error
    assert "unknown hyperparameter --learning-rate" in result.stderr and "--learning_rate" in result.stderr
    assert "Traceback" not in result.stderr


def test_sagemaker_arguments_become_hydra_overrides() -> None:
    args = [
        "--learning_rate",
        "0.001",
        "--batch_size=32",
        "--epochs",
        "3",
        "--model.arch",
        "resnet18",
        "trainer.seed=1",
    ]
    expected = ["optim.lr=0.001", "data.batch_size=32", "trainer.epochs=3", "model.arch=resnet18", "trainer.seed=1"]
    assert hydra_argv(args) == expected
    with pytest.raises(DogbreedError, match="has no value"):
        hydra_argv(["--epochs"])


def test_several_sagemaker_hosts_form_one_process_group() -> None:
    hosts = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2"}
    assert cluster_environment(hosts) == {
        "MASTER_ADDR": "algo-1", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"}  # fmt: skip
    assert cluster_environment({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}) == {}
    assert cluster_environment({**hosts, "WORLD_SIZE": "4"}) == {}  # torchrun already set it up


def test_lr_scales_with_the_global_batch_only_when_asked() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    plain = optimizer_settings(compose_config(["optim.lr=0.01"]).optim)
    scaled = optimizer_settings(compose_config(["optim.lr=0.01", "optim.scale_lr_with_batch=true"]).optim)
    assert build_optimizer(plain, params, world_size=2).param_groups[0]["lr"] == 0.01
    assert build_optimizer(scaled, params, world_size=2).param_groups[0]["lr"] == pytest.approx(0.02)
    assert build_optimizer(scaled, params, world_size=1).param_groups[0]["lr"] == 0.01
