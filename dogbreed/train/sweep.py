"""A summary of a multirun sweep, written by a Hydra callback when the sweep ends.

Works for any sweeper (basic grid or Optuna): it reads what each trial left in
its run directory (`metrics.json`, `.hydra/overrides.yaml`), so it reports what
actually happened, including trials that failed. Imports no torch: it runs in
Hydra's launcher process.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def collect_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per trial directory (numbered subdirectories), best metric first."""
    rows = []
    trial_dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    for trial_dir in sorted(trial_dirs, key=lambda p: int(p.name)):
        overrides_file = trial_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        metrics_file = trial_dir / "metrics.json"
        row: dict[str, Any] = {"trial": int(trial_dir.name), "overrides": " ".join(overrides)}
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())
            row.update(
                valid_top1=metrics["valid"]["top1"],
                test_top1=metrics["test"]["top1"],
                best_epoch=metrics["best_epoch"],
                seconds=metrics["seconds"],
            )
        else:
            row.update(valid_top1=None, test_top1=None, best_epoch=None, seconds=None)
        rows.append(row)
    return rows


def swept_parameters(rows: list[dict[str, Any]]) -> None:
    """Adds `params`: only the overrides whose value differs between trials (what the sweep chose)."""
    parsed = [dict(item.split("=", 1) for item in row["overrides"].split() if "=" in item) for row in rows]
    keys = sorted({key for overrides in parsed for key in overrides})
    varying = [key for key in keys if len({overrides.get(key) for overrides in parsed}) > 1]
    for row, overrides in zip(rows, parsed, strict=True):
        row["params"] = " ".join(f"{key}={overrides[key]}" for key in varying if key in overrides)


def write_summary(sweep_dir: Path) -> dict[str, Any] | None:
    """Writes sweep_summary.csv/.md/.png; returns the best trial's row (None if no trial finished)."""
    rows = collect_trials(sweep_dir)
    if not rows:
        return None
    swept_parameters(rows)
    with (sweep_dir / "sweep_summary.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    finished = [row for row in rows if row["valid_top1"] is not None]
    best = max(finished, key=lambda row: row["valid_top1"], default=None)

    lines = ["# Sweep summary", ""]
    if best is not None:
        lines += [
            f"Best trial: **{best['trial']}** — valid top-1 {best['valid_top1']:.4f}, "
            f"test top-1 {best['test_top1']:.4f}",
            f"Best parameters: `{best['params']}`",
            f"Its weights: `{sweep_dir / str(best['trial']) / 'model.pth'}`",
            "",
        ]
    lines += ["| trial | valid top-1 | test top-1 | best epoch | seconds | parameters |", "|---|---|---|---|---|---|"]
    for row in rows:
        if row["valid_top1"] is None:
            lines.append(f"| {row['trial']} | failed | | | | `{row['params']}` |")
        else:
            lines.append(
                f"| {row['trial']} | {row['valid_top1']:.4f} | {row['test_top1']:.4f} | {row['best_epoch']} "
                f"| {row['seconds']} | `{row['params']}` |"
            )
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    plot_objective(finished, sweep_dir / "sweep_summary.png")
    return best


def plot_objective(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [row["trial"] for row in rows]
    values = [row["valid_top1"] for row in rows]
    running_best = [max(values[: i + 1]) for i in range(len(values))]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(trials, values, "o", label="trial")
    axis.step(trials, running_best, where="post", label="best so far")
    axis.set(xlabel="trial", ylabel="validation top-1", title="sweep objective")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        best = write_summary(sweep_dir)
        if best is None:
            log.warning("no finished trials in %s", sweep_dir)
        else:
            log.info(
                "sweep summary: %s (best trial %d, valid top-1 %.4f: %s)",
                sweep_dir / "sweep_summary.md",
                best["trial"],
                best["valid_top1"],
                best["params"],
            )
