"""What a run leaves for people to read: labels, metrics files and plots."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless: EC2 boxes and CI have no display
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from dogbreed.files import atomic_write_bytes, atomic_write_text
from dogbreed.train.checkpoint import WEIGHTS_NAME, versions

if TYPE_CHECKING:  # deploy reads labels through this module; it need not load the training engine
    from dogbreed.train.checkpoint import TrainingState
    from dogbreed.train.engine import EvalResult
    from dogbreed.train.runtime import Runtime

log = logging.getLogger(__name__)

LABELS_NAME = "labels.json"
# Next to model.pth in SageMaker's model dir, which holds no checkpoint or config: what packaging
# would otherwise have to guess (the image size above all).
MODEL_INFO_NAME = "model_info.json"
# What experiment trackers receive at the end of a run (dogbreed.tracking); the checkpoint stays local.
METRICS_JSON = "metrics.json"
TRACKED_FILES = (WEIGHTS_NAME, LABELS_NAME, METRICS_JSON, "metrics.csv", "curves.png", "confusion.png")


def write_labels(class_names: list[str], path: Path) -> None:
    """labels.json maps class index (as a string key) to breed name."""
    atomic_write_text(json.dumps({str(i): name for i, name in enumerate(class_names)}, indent=2) + "\n", path)


def read_labels(path: Path) -> list[str]:
    mapping = json.loads(path.read_text())
    return [mapping[str(i)] for i in range(len(mapping))]


def write_history_csv(history: list[dict[str, Any]], path: Path) -> None:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out.getvalue(), path)


def write_json(data: dict[str, Any], path: Path) -> None:
    atomic_write_text(json.dumps(data, indent=2) + "\n", path)


def write_model_info(config: dict[str, Any], path: Path) -> None:
    """What serving needs to know about the weights besides the weights: image size, arch, head, versions."""
    model = config["model"]
    write_json(
        {
            "image_size": config["data"]["image_size"],
            "arch": model["arch"],
            "head": model["head"],
            "versions": versions(),
        },
        path,
    )


def save_figure(figure: Figure, path: Path) -> None:
    """Renders to memory, then writes atomically (a full disk leaves no torn PNG); closes the figure."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(figure)
    atomic_write_bytes(buffer.getvalue(), path)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    loss_axis.plot(epochs, [r["valid_loss"] for r in history], marker="o", label="valid")
    loss_axis.set(title="loss", xlabel="epoch")
    acc_axis.plot(epochs, [r["train_acc"] for r in history], marker="o", label="train")
    acc_axis.plot(epochs, [r["valid_top1"] for r in history], marker="o", label="valid top-1")
    acc_axis.plot(epochs, [r["valid_top5"] for r in history], marker="o", label="valid top-5")
    acc_axis.set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


def plot_confusion(counts: torch.Tensor, class_names: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix; class names on the axes when they fit."""
    rows = counts.sum(dim=1, keepdim=True).clamp(min=1)
    normalised = (counts / rows).numpy()
    size = min(4 + 0.12 * len(class_names), 20)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set(title=title, xlabel="predicted", ylabel="true")
    if len(class_names) <= 40:
        ticks = range(len(class_names))
        names = [name.replace("$", r"\$") for name in class_names]  # a `$` pair would start mathtext
        axis.set_xticks(ticks, names, rotation=90, fontsize=7)
        axis.set_yticks(ticks, names, fontsize=7)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    save_figure(figure, path)


def write_final_reports(
    output_dir: Path,
    state: TrainingState,
    final: dict[str, EvalResult],
    class_names: list[str],
    seconds: float,
    runtime: Runtime,
) -> None:
    """metrics.csv, curves.png, confusion.png and metrics.json of a finished run.

    Args:
        output_dir: The run directory.
        state: The epochs run, their history and the best epoch.
        final: Evaluations of the best weights on `valid` and `test`.
        class_names: In class-index order.
        seconds: Wall time of the whole run.
        runtime: Device and precision it ran with.
    """

    def summary(result: EvalResult) -> dict[str, Any]:
        per_class = result.confusion.per_class_accuracy()
        return {
            "loss": result.loss,
            "top1": result.top1,
            "top5": result.top5,
            "images": result.images,
            "per_class_accuracy": dict(zip(class_names, per_class, strict=True)),
        }

    write_history_csv(state.history, output_dir / "metrics.csv")
    plot_curves(state.history, output_dir / "curves.png")
    plot_confusion(
        final["test"].confusion.counts,
        class_names,
        output_dir / "confusion.png",
        f"test confusion (top-1 {final['test'].top1:.3f})",
    )
    write_json(
        {
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "valid": summary(final["valid"]),
            "test": summary(final["test"]),
            "seconds": round(seconds, 1),
            "device": str(runtime.device),
            "precision": runtime.precision,
            "versions": versions(),
        },
        output_dir / METRICS_JSON,
    )


def final_metrics(state: TrainingState, final: dict[str, EvalResult]) -> dict[str, float]:
    """The best weights' evaluation as flat metrics for experiment trackers."""
    metrics = {"final/best_epoch": float(state.best_epoch)}
    for split, result in final.items():
        metrics.update({f"final/{split}_{name}": float(getattr(result, name)) for name in ("loss", "top1", "top5")})
    return metrics


def export_for_sagemaker(output_dir: Path, model_dir: Path, config: dict[str, Any]) -> None:
    """Into SM_MODEL_DIR, which SageMaker tars into the job's model.tar.gz: what `deploy package` needs
    (weights, labels, model_info.json with the image size and versions, the config) and metrics.json,
    the launcher's objective."""
    names = [WEIGHTS_NAME, LABELS_NAME, METRICS_JSON, ".hydra/config.yaml"]
    for name in names:
        if (output_dir / name).is_file():
            (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(output_dir / name, model_dir / name)
    write_model_info(config, model_dir / MODEL_INFO_NAME)
    log.info("copied %s and wrote %s to %s", ", ".join(names), MODEL_INFO_NAME, model_dir)
