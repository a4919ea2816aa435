"""The Hydra config is a user-facing contract: it composes, instantiates, and the CLI behaves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from dogbreed.train.run import build_optimizer
from dogbreed.train.settings import optimizer_settings
from tests.helpers.config import CONF_DIR, REPO, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
CONTRACT_KEYS = [
    "data.root",
    "data.batch_size",
    "data.num_workers",
    "data.image_size",
    "model.arch",
    "model.pretrained",
    "model.head",
    "model.freeze",
    "optim.lr",
    "optim.weight_decay",
    "trainer.epochs",
    "trainer.device",
    "trainer.precision",
    "trainer.seed",
    "trainer.resume",
    "trainer.early_stopping_patience",
]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SM_CHANNEL_TRAINING", raising=False)
    cfg = compose_config()
    assert cfg.data.root == "data/dogImages"
    assert (cfg.model.arch, cfg.model.pretrained, cfg.model.freeze) == ("resnet50", True, "backbone")
    assert cfg.data.download_url.endswith("/dog-project/dogImages.zip")
    for key in CONTRACT_KEYS:
        section, name = key.split(".")
        assert name in cfg[section], key


def test_data_root_follows_the_sagemaker_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_CHANNEL_TRAINING", "/opt/ml/input/data/training")
    assert compose_config().data.root == "/opt/ml/input/data/training"
    monkeypatch.delenv("SM_CHANNEL_TRAINING")
    assert compose_config().data.root == "data/dogImages"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds_its_optimizer(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}", "debug=fast"])
    optimizer = build_optimizer(optimizer_settings(cfg.optim), [torch.nn.Parameter(torch.zeros(2))], world_size=1)
    scheduler = instantiate(cfg.sched)(optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr)
    assert scheduler.optimizer is optimizer
    assert cfg.trainer.epochs == 1  # debug=fast wins over the experiment


def test_udacity_baseline_is_the_course_recipe() -> None:
    cfg = compose_config(["experiment=udacity_baseline"])
    assert (cfg.model.head, cfg.model.freeze, cfg.model.pretrained) == ("mlp", "backbone", True)
    assert cfg.optim._target_ == "torch.optim.Adam" and cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.data.batch_size == 32


@pytest.mark.parametrize("optim", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("sched", ["cosine", "step", "none"])
def test_optimizers_and_schedules_combine(optim: str, sched: str) -> None:
    cfg = compose_config([f"optim={optim}", f"sched={sched}", "optim.lr=0.5"])
    optimizer = build_optimizer(optimizer_settings(cfg.optim), [torch.nn.Parameter(torch.zeros(2))], world_size=1)
    scheduler = instantiate(cfg.sched)(optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.5
    optimizer.step()
    scheduler.step()
    if sched == "none":
        assert optimizer.param_groups[0]["lr"] == 0.5


def test_help_lists_groups_and_examples() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in ("experiment: demo, finetune, udacity_baseline", "optim: adam, adamw, sgd", "python train.py -m"):
        assert text in result.stdout


def test_help_lists_only_training_groups() -> None:
    """conf/ami.yaml and conf/deploy.yaml are root configs of other CLIs, not training groups."""
    result = run_cli("--help")
    assert result.returncode == 0
    groups = result.stdout.split("== Config groups (choose with group=option) ==")[1].split("== Config")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if line.strip()}
    training = {
        "data", "debug", "experiment", "hparams_search", "logger", "model", "optim", "sched", "storage", "trainer",
    }  # fmt: skip
    assert listed == training
    assert not re.search(r"\b(ami|deploy)\b", result.stdout, re.IGNORECASE)


def test_cfg_job_prints_the_composed_config_with_overrides() -> None:
    result = run_cli("--cfg", "job", "optim=sgd", "optim.lr=0.003", "model.head=mlp")
    assert result.returncode == 0
    printed = yaml.safe_load(result.stdout)
    assert printed["optim"]["_target_"] == "torch.optim.SGD"
    assert printed["optim"]["lr"] == 0.003 and printed["model"]["head"] == "mlp"


def test_multirun_makes_one_complete_run_per_value(tiny_dataset: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "optim.lr=1e-3,1e-4",
        "debug=fast",
        f"data.root={tiny_dataset}",
        "model.arch=resnet18",
        "model.pretrained=false",
        "data.image_size=32",
        "trainer.device=cpu",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in runs] == ["0", "1"]
    for run, lr in zip(runs, (1e-3, 1e-4), strict=True):
        for name in ("model.pth", "labels.json", "checkpoint.pt", "metrics.json", "curves.png", "confusion.png"):
            assert (run / name).is_file(), f"{run.name}/{name}"
        assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["optim"]["lr"] == lr
