"""The `logger=` group: TensorBoard event files, MLflow runs (sweeps as parent and children), a dead server."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from dogbreed.train.run import train
from dogbreed.train.settings import run_settings
from tests.helpers.config import REPO, shrunk_overrides


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite tracking store for the module: creating its tables takes seconds, so it is done once."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def mlflow_runs(tracking_uri: str, experiment: str) -> list:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_tensorboard_records_each_epoch_while_a_dead_tracking_server_only_warns(
    make_cfg, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """logger=many: csv files, TensorBoard, and MLflow pointed at a port where nothing listens."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dead = f"http://127.0.0.1:{closed_port}"
    overrides = ["logger=many", f"logger.tracking_uri={dead}", "trainer.epochs=2"]
    cfg = make_cfg([*overrides, "trainer.early_stopping_patience=null"])
    with caplog.at_level(logging.WARNING):
        top1 = train(run_settings(cfg))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warnings = [message for message in warnings if "logger mlflow" in message]
    assert len(warnings) == 1 and "training goes on without it" in warnings[0], warnings
    run = Path(cfg.paths.output_dir)
    assert (run / "model.pth").is_file() and (run / "metrics.json").is_file()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    with (run / "metrics.csv").open() as rows:
        history = [float(row["valid_top1"]) for row in csv.DictReader(rows)]
    valid_top1 = events.Scalars("valid/top1")
    assert [event.step for event in valid_top1] == [1, 2]
    assert [event.value for event in valid_top1] == pytest.approx(history)
    for tag in ("train/loss", "valid/loss", "valid/top5", "lr", "train/images_per_s"):
        assert len(events.Scalars(tag)) == 2, tag
    assert {"curves", "confusion"} <= set(events.Tags()["images"])
    assert "_hparams_/session_start_info" in events.summary_metadata
    assert events.Scalars("final/valid_top1")[-1].value == pytest.approx(top1)


def test_mlflow_run_has_params_metrics_and_artifacts(make_cfg, mlflow_db: str) -> None:
    uri = mlflow_db
    cfg = make_cfg(["logger=mlflow", f"logger.tracking_uri={uri}", "logger.experiment=single"])
    top1 = train(run_settings(cfg))

    [run] = mlflow_runs(uri, "single")
    assert run.info.status == "FINISHED" and run.info.run_name == Path(cfg.paths.output_dir).name
    assert run.data.params["optim.lr"] == str(cfg.optim.lr) and run.data.params["model.arch"] == "resnet18"
    assert run.data.metrics["final/valid_top1"] == pytest.approx(top1)
    assert 0.0 <= run.data.metrics["final/test_top1"] <= run.data.metrics["final/test_top5"] <= 1.0
    from mlflow import MlflowClient

    history = MlflowClient(uri).get_metric_history(run.info.run_id, "valid/top1")
    assert [metric.step for metric in history] == [1]
    artifacts = {item.path for item in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert {"model.pth", "labels.json", "metrics.json", "metrics.csv", "curves.png", "confusion.png"} <= artifacts
    stored = Path(run.info.artifact_uri.removeprefix("file://"))  # beside the database, not in the working dir
    assert stored.is_relative_to(Path(uri.removeprefix("sqlite:///")).parent) and (stored / "model.pth").is_file()


def test_mlflow_sweep_is_a_parent_run_with_one_child_per_trial(
    tiny_dataset: Path, tmp_path: Path, mlflow_db: str
) -> None:
    sweep = tmp_path / "sweep"
    fixed = [o for o in shrunk_overrides(tmp_path / "unused", tiny_dataset) if not o.startswith("paths.output_dir")]
    result = subprocess.run(
        [sys.executable, "train.py", "-m", "logger=mlflow", f"logger.tracking_uri={mlflow_db}",
         "logger.experiment=sweep", "optim.lr=0.001,0.01", f"hydra.sweep.dir={sweep}", *fixed],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    runs = mlflow_runs(mlflow_db, "sweep")
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
    assert sorted(run.data.params["optim.lr"] for run in children) == ["0.001", "0.01"]
    assert all("final/valid_top1" in run.data.metrics for run in children)


@pytest.mark.parametrize(
    ("logger", "message"),
    [
        (["logger.tracking_uri=file:///tmp/mlruns"], "logger.tracking_uri=file:///tmp/mlruns: MLflow 3 keeps runs"),
        (["logger.tracking_uri=mlruns"], "logger.tracking_uri=mlruns: MLflow 3 keeps runs"),
        (["logger.tracking_uri=http://127.0.0.1:{port}", "logger.required=true", "logger.mlflow.request_attempts=1"],
         "logger mlflow failed"),
    ],
)  # fmt: skip
def test_a_tracking_setting_the_backend_refuses_stops_the_run_before_any_data_is_read(
    tiny_dataset: Path, tmp_path: Path, closed_port: int, logger: list[str], message: str
) -> None:
    run = tmp_path / "outputs" / "refused"
    overrides = [*shrunk_overrides(run, tiny_dataset), "logger=mlflow", *(o.format(port=closed_port) for o in logger)]
    failed = subprocess.run(
        [sys.executable, "train.py", *overrides], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 1, failed.stderr[-2000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in failed.stderr
    # The data was never scanned (skipped_files.txt) nor the classes written (labels.json).
    assert not (run / "skipped_files.txt").exists() and not (run / "labels.json").exists()
