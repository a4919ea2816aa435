"""Every third-party import of the code a SageMaker training job runs is in the image or in requirements.txt."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

from dogbreed.sagemaker.launch import BUNDLE_SOURCES, TRACKER_REQUIREMENTS, requirements_txt
from tests.helpers.config import REPO
from tests.helpers.imports import image_packages, normalized, required_imports

IMAGE_PACKAGES = REPO / "tests" / "data" / "pytorch-2.13-cpu-amzn2023-sagemaker-packages.txt"
RAY_APP = REPO / "dogbreed" / "serving" / "ray_app.py"


def shipped_imports() -> set[str]:
    files = [path for name in BUNDLE_SOURCES for path in ([REPO / name] if name.endswith(".py") else [])]
    files += [path for name in BUNDLE_SOURCES for path in (REPO / name).rglob("*.py")]
    # The Ray Serve app travels in the bundle with the rest of dogbreed/ but runs only in the Ray Serve image.
    files = [path for path in files if path != RAY_APP]
    modules = set().union(*(required_imports(ast.parse(path.read_text())) for path in files))
    return {module for module in modules if module not in sys.stdlib_module_names and module != "dogbreed"}


def test_every_third_party_import_of_the_bundle_is_in_the_image_or_the_requirements() -> None:
    imports = shipped_imports()
    assert {"torch", "hydra", "PIL", "boto3"} <= imports  # the scan sees the training code
    distributions = packages_distributions()
    # With every tracker in use: logger=mlflow puts mlflow-skinny into the requirements, and so on.
    requirements = requirements_txt(TRACKER_REQUIREMENTS).decode().split()
    available = image_packages(IMAGE_PACKAGES) | {normalized(re.split(r"[<>=!~ ]", line)[0]) for line in requirements}
    missing = {module: distributions.get(module, [module]) for module in imports}
    missing = {module: dists for module, dists in missing.items() if not {normalized(d) for d in dists} & available}
    assert missing == {}, f"imported by the bundle but neither in the image nor in requirements.txt: {missing}"


def test_trackers_are_installed_only_for_the_jobs_that_use_them() -> None:
    assert "mlflow" not in requirements_txt().decode() and "tensorboard" not in requirements_txt(["csv"]).decode()
    assert requirements_txt(["csv", "mlflow"]).decode().splitlines()[-1] == TRACKER_REQUIREMENTS["mlflow"]


def test_the_image_list_is_dated_and_names_its_source() -> None:
    header = IMAGE_PACKAGES.read_text()
    assert "Read on 20" in header and "github.com/aws/deep-learning-containers" in header
    assert "hydra-core" not in image_packages(IMAGE_PACKAGES)  # why requirements.txt exists


def test_the_dev_toolkit_is_the_one_the_image_ships() -> None:
    # tests/dogbreed/test_sagemaker_container.py runs a job through the toolkit as the image would.
    shipped = next(line for line in IMAGE_PACKAGES.read_text().splitlines() if line.startswith("sagemaker-training=="))
    assert f'"{shipped}"' in (REPO / "pyproject.toml").read_text()
