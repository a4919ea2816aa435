"""Optuna head sweeps: trials share one feature cache and the sweep ends with a summary."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from dogbreed.train.sweep import write_summary
from tests.helpers.config import REPO


def test_optuna_head_sweep_reuses_one_cache_and_names_the_best_trial(tiny_dataset: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable, "train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}", f"hydra.sweep.dir={sweep}",
            f"data.root={tiny_dataset}", "model.arch=resnet18", "model.pretrained=false", "data.image_size=32",
            "data.num_workers=0", "data.scan_workers=0", "trainer.device=cpu", "trainer.epochs=2",
            "trainer.progress_bar=false", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_root={tmp_path}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("extracted ") == 3  # train, valid, test: once for the whole sweep
    assert output.count("feature cache hit") == 6  # the two later trials

    trial_top1 = {
        int(d.name): json.loads((d / "metrics.json").read_text())["valid"]["top1"]
        for d in sweep.iterdir()
        if d.name.isdigit()
    }
    assert sorted(trial_top1) == [0, 1, 2]
    best_trial = max(trial_top1, key=lambda t: (trial_top1[t], -t))
    summary = (sweep / "sweep_summary.md").read_text()
    assert f"Best trial: **{best_trial}**" in summary
    assert "optim.lr=" in summary.split("Best parameters:")[1].splitlines()[0]
    assert "data.root" not in summary  # fixed overrides are not parameters
    with (sweep / "sweep_summary.csv").open() as rows:
        assert len(list(csv.DictReader(rows))) == 3
    assert (sweep / "sweep_summary.png").stat().st_size > 0


def test_summary_reports_failed_trials(tmp_path: Path) -> None:
    for trial, top1 in ((0, 0.5), (1, None), (2, 0.75)):
        hydra_dir = tmp_path / str(trial) / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "overrides.yaml").write_text(f"- optim.lr={trial}\n- data.root=/d\n")
        if top1 is not None:
            metrics = {"valid": {"top1": top1}, "test": {"top1": top1 - 0.1}, "best_epoch": 1, "seconds": 1.0}
            (tmp_path / str(trial) / "metrics.json").write_text(json.dumps(metrics))
    best = write_summary(tmp_path)
    assert best is not None and best["trial"] == 2 and best["params"] == "optim.lr=2"
    summary = (tmp_path / "sweep_summary.md").read_text()
    assert "| 1 | failed |" in summary
