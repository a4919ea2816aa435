"""A launched job inside the training image's toolkit: the real `sagemaker-training` runs train.py.

The job is created on the moto server by the launcher, then run the way the PyTorch training
image runs it: an /opt/ml-style folder (here under tmp, through SAGEMAKER_BASE_DIR) with the
job's hyperparameters.json, channel and resource config, and the toolkit's `entry_point.run`,
which downloads the bundle from S3, pip-installs its requirements.txt and starts train.py with
the arguments and SM_* variables it builds. A spot interruption is an EC2 spot notice from a
local metadata service; the restarted job must resume from the checkpoint directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from deploy.model_archive import package_run
from dogbreed.sagemaker.launch import METRIC_DEFINITIONS
from tests.deploy.test_model_archive import serving_info
from tests.dogbreed.test_sagemaker_launch import BUCKET, jobs, launch, project  # noqa: F401 (fixture)
from tests.helpers.imds import FakeIMDS

# What the PyTorch training image's framework module (sagemaker_pytorch_container.training) does.
TOOLKIT = """
from sagemaker_training import entry_point, environment
env = environment.Environment()
entry_point.run(env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars())
"""


def opt_ml(base: Path, job: dict[str, Any], data: Path) -> None:
    """What SageMaker writes into /opt/ml before it starts the container, from the job's description."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(job["HyperParameters"]))
    channels = {
        channel["ChannelName"]: {
            "TrainingInputMode": channel["InputMode"],
            "S3DistributionType": channel["DataSource"]["S3DataSource"]["S3DataDistributionType"],
            "RecordWrapperType": "None",
        }
        for channel in job["InputDataConfig"]
    }
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    # SageMaker names hosts algo-1, algo-2, ... and the toolkit waits until they resolve; here
    # only localhost does.
    resources = {"current_host": "localhost", "hosts": ["localhost"], "current_instance_type": "ml.m5.xlarge"}
    (config / "resourceconfig.json").write_text(json.dumps(resources))
    for name in channels:
        shutil.copytree(data, base / "input" / "data" / name)


def run_toolkit(base: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_NAME": "job"}
    return subprocess.run(
        [sys.executable, "-c", TOOLKIT], cwd=base, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_toolkit_runs_a_launched_spot_job_that_resumes_and_leaves_a_deployable_model(
    project: str,  # noqa: F811
    tiny_dataset: Path,
    tmp_path: Path,
    imds: FakeIMDS,
) -> None:
    checkpoints = tmp_path / "checkpoints"  # /opt/ml/checkpoints on SageMaker (not writable here)
    launch(
        tmp_path, "hydra.launcher.wait=false", "hydra.launcher.spot=true", f"data.root=s3://{BUCKET}/dogbreed/data",
        f"paths.output_root={checkpoints}", f"paths.cache_dir={tmp_path / 'cache'}", "model.arch=resnet18",
        "model.pretrained=false", "data.image_size=32", "data.batch_size=8", "data.eval_batch_size=16",
        "data.num_workers=0", "data.scan_workers=0", "trainer.device=cpu", "trainer.epochs=1",
        "trainer.progress_bar=false", f"trainer.interrupt.imds_endpoint={imds.url}",
        "trainer.interrupt.spot_poll_s=0.05",
    )  # fmt: skip
    (job,) = jobs()
    base = tmp_path / "opt-ml"
    opt_ml(base, job, tiny_dataset)

    imds.notice = {"action": "terminate", "time": "2026-12-02T01:00:00Z"}
    interrupted = run_toolkit(base)
    output = interrupted.stdout + interrupted.stderr
    assert interrupted.returncode != 0 and "spot interruption notice" in output, output[-3000:]
    (saved,) = checkpoints.rglob("checkpoint.pt")
    assert torch.load(saved, weights_only=True)["step"] == 1  # stopped after one step, mid-epoch
    assert not (base / "model" / "model.pth").exists()

    imds.notice = None  # SageMaker restarts the job with the same hyperparameters and checkpoints
    resumed = run_toolkit(base)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "resuming at batch 2" in output
    for metric in METRIC_DEFINITIONS:  # what SageMaker will find in the job's log
        assert re.search(metric["Regex"], output), metric
    model_dir = base / "model"
    assert json.loads((model_dir / "metrics.json").read_text())["epochs_run"] == 1
    tarball = package_run(str(model_dir), tmp_path / "model.tar.gz")
    assert serving_info(tarball)["image_size"] == 32  # taken from the run, not the 224 default
