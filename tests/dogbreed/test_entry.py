"""Every command line fails the same way: one `error:` line on stderr, exit 1 (2 for bad usage).

The CLIs run as subprocesses in an environment with no AWS credentials, config files or
instance metadata, so each failure below is the one a new user meets first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError

from dogbreed.cli import explain, reported_errors
from dogbreed.errors import DataError
from dogbreed.sagemaker.entry_point import hydra_args
from tests.helpers.config import REPO

NO_CREDENTIALS = "error: no AWS credentials: Unable to locate credentials — set AWS_PROFILE, run `aws configure`"


def scrubbed_env(region: str | None = "us-east-1", **extra: str) -> dict[str, str]:
    """os.environ without any AWS setting: no keys, profile, config files or instance metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOGBREED_DEBUG", "HYDRA_"))}
    env.update(
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO),
        **extra,
    )
    if region is not None:
        env["AWS_DEFAULT_REGION"] = region
    return env


def run(args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line the command printed on stderr, checked to be the whole of stderr."""
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_deploy_up_and_status_without_credentials(tmp_path: Path) -> None:
    env = scrubbed_env()
    up = run(["-m", "deploy", "up", "RUN", "deploy.s3_uri=s3://b/p"], env, cwd=tmp_path)
    assert up.returncode == 1
    assert error_line(up).startswith(NO_CREDENTIALS)
    status = run(["-m", "deploy", "status", "deploy.s3_uri=s3://b/p"], env, cwd=tmp_path)
    assert status.returncode == 1
    assert error_line(status).startswith(NO_CREDENTIALS)


def test_deploy_invoke_without_a_region(tmp_path: Path) -> None:
    result = run(["-m", "deploy", "invoke", "x.jpg", "--endpoint", "e"], scrubbed_env(region=None), cwd=tmp_path)
    assert result.returncode == 1
    assert error_line(result) == "error: no AWS region: set AWS_DEFAULT_REGION or region in `aws configure`"


def test_deploy_bad_usage_exits_2_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    override = run(["-m", "deploy", "status", "deploy.s3_uri=s3://b/p", "deploy.nmae=x"], scrubbed_env(), tmp_path)
    assert override.returncode == 2
    assert error_line(override).startswith("error: bad override (Could not override 'deploy.nmae'.")
    assert run(["-m", "deploy", "stauts"], scrubbed_env(), tmp_path).returncode == 2  # argparse
    for args, env in [
        (["--debug", "status"], scrubbed_env()),
        (["status", "--debug"], scrubbed_env()),
        (["status"], scrubbed_env(DOGBREED_DEBUG="1")),
    ]:
        debug = run(["-m", "deploy", *args, "deploy.s3_uri=s3://b/p"], env, tmp_path)
        assert debug.returncode == 1
        assert "Traceback" in debug.stderr and "botocore.exceptions.NoCredentialsError" in debug.stderr


def test_ami_status_without_credentials_or_region(tmp_path: Path) -> None:
    no_credentials = run(["-m", "ami", "status", "ami.name=dogbreed"], scrubbed_env(), cwd=tmp_path)
    assert no_credentials.returncode == 1
    assert error_line(no_credentials).startswith(NO_CREDENTIALS)
    no_region = run(["-m", "ami", "status"], scrubbed_env(region=None), cwd=tmp_path)
    assert no_region.returncode == 1
    expected = "error: no AWS region: set ami.region=<region>, AWS_DEFAULT_REGION or region in `aws configure`"
    assert error_line(no_region) == expected


def test_storage_push_without_credentials(tmp_path: Path) -> None:
    (tmp_path / "model.pth").write_bytes(b"weights")
    result = run(["-m", "dogbreed.storage", "push", str(tmp_path), "s3://b/p"], scrubbed_env())
    assert result.returncode == 1
    assert error_line(result).startswith(NO_CREDENTIALS)


def test_train_project_error_and_bad_override(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dogImages"
    base = [f"hydra.run.dir={tmp_path / 'run'}", "trainer.device=cpu"]
    result = run(["train.py", f"data.root={missing}", "data.download_url=", *base], scrubbed_env())
    assert result.returncode == 1
    assert error_line(result) == (
        f"error: {missing} does not exist and data.download_url is empty; set data.root=... or use data=synthetic"
    )
    # A value the code refuses (not Hydra) is a project error too: one line, no traceback.
    device = run(["train.py", "trainer.device=tpu", *base[:1]], scrubbed_env())
    assert device.returncode == 1
    assert error_line(device) == "error: trainer.device must be auto, cpu or cuda, got 'tpu'"
    # Hydra reports an override it cannot apply itself; the status says bad usage.
    assert run(["train.py", "trainer.epohcs=1", *base], scrubbed_env()).returncode == 2
    assert run(["train.py", "--cfg", "job", "data=nope"], scrubbed_env()).returncode == 2
    debug = run(["train.py", f"data.root={missing}", "data.download_url=", *base, "--debug"], scrubbed_env())
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "dogbreed.errors.DataError" in debug.stderr


def test_debug_flag_leaves_argv_before_hydra_but_a_sagemaker_debug_hyperparameter_stays() -> None:
    environ: dict[str, str] = {}
    assert hydra_args(["optim.lr=0.1", "--debug"], environ) == ["optim.lr=0.1"]
    assert environ == {"DOGBREED_DEBUG": "1", "HYDRA_FULL_ERROR": "1"}
    on_sagemaker = {"SM_MODEL_DIR": "/opt/ml/model"}
    assert hydra_args(["--debug", "fast"], on_sagemaker) == ["debug=fast"]
    assert on_sagemaker == {"SM_MODEL_DIR": "/opt/ml/model"}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ClientError({"Error": {"Code": "AccessDenied", "Message": "not\nauthorized"}}, "CreateRole"),
            "AWS refused CreateRole: AccessDenied: not authorized — check the credentials' permissions",
        ),
        (
            ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "GetCallerIdentity"),
            "AWS refused GetCallerIdentity: ExpiredToken: expired — the credentials are invalid or expired",
        ),
        (
            ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "DescribeEndpoint"),
            "AWS refused DescribeEndpoint: ThrottlingException: slow — AWS is limiting the request rate",
        ),
        (
            ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "CreateModel"),
            "AWS refused CreateModel: ValidationException: bad — fix what AWS names, then run the command again",
        ),
        (
            EndpointConnectionError(endpoint_url="https://sts.mars-1.amazonaws.com/"),
            'Could not connect to the endpoint URL: "https://sts.mars-1.amazonaws.com/" — check the network',
        ),
        (NoRegionError(), "no AWS region: set AWS_DEFAULT_REGION or region in `aws configure`"),
        (DataError("data.root is empty"), "data.root is empty"),
    ],
)
def test_each_error_gets_one_line_that_says_what_to_do(error: Exception, expected: str) -> None:
    line = explain(error)
    assert line is not None and line.startswith(expected) and "\n" not in line


def test_bugs_keep_their_traceback_and_exit_codes_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOGBREED_DEBUG", raising=False)
    assert explain(KeyError("x")) is None
    with pytest.raises(KeyError), reported_errors():
        raise KeyError("x")
    interrupted = DataError("stopped: received SIGTERM")
    interrupted.exit_code = 143  # as TrainingInterrupted carries 128 + signal
    with pytest.raises(SystemExit) as stop, reported_errors():
        raise interrupted
    assert stop.value.code == 143
    with pytest.raises(DataError), reported_errors(debug=True):
        raise DataError("shown with its traceback")
