"""Experiment tracking (`logger=` config group): the run's metrics and artifacts sent to TensorBoard or MLflow.

`base.Tracking` is what the epoch loop calls; `board` and `mlflow_run` are the loggers it holds.
The run's own files (metrics.csv, metrics.json, plots) are written whatever loggers are on.
"""
