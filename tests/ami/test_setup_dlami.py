"""`make setup-dlami` on a machine that has PyTorch already: the project joins that environment, torch stays.

The stand-in DLAMI environment is a fresh venv whose site-packages see this project's torch and
torchvision (and the rest) through a .pth file, as /opt/pytorch holds the image's own builds: pip must
find them installed and pinned, install only the project, and leave no second torch in the venv.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.helpers.config import REPO, shrunk_overrides


@pytest.fixture
def image_env(tmp_path: Path) -> Path:
    """`<tmp>/opt/pytorch`: a venv with pip whose imports include this interpreter's site-packages."""
    root = tmp_path / "opt" / "pytorch"
    venv.create(root, with_pip=True)
    own = next((root / "lib").glob("python3*/site-packages"))
    (own / "image-pytorch.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def test_the_project_installs_beside_the_images_torch_and_trains(image_env: Path, tiny_dataset: Path) -> None:
    python = image_env / "bin" / "python"
    # This build machine's pip caps torch by a constraints file of its own (/etc/xdg/pip), which a
    # DLAMI does not have and which refuses the image's local version tag (+cu130): not here either.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    done = subprocess.run(
        ["make", "--no-print-directory", "setup-dlami", f"ENV_PYTHON={python}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"keeping torch=={version('torch')} torchvision=={version('torchvision')} from {python}" in done.stdout
    own = next((image_env / "lib").glob("python3*/site-packages"))
    assert not (own / "torch").exists() and not (own / "torchvision").exists()  # nothing reinstalled
    assert list(own.glob("__editable__*dogbreed*")) or list(own.glob("dogbreed*.dist-info"))

    run = image_env.parent.parent / "run"
    trained = subprocess.run(
        [str(python), "train.py", *shrunk_overrides(run, tiny_dataset), "debug=fast"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (run / "model.pth").is_file()
    assert sys.executable != str(python)
