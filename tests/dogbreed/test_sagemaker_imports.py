"""Every third-party import of the code a SageMaker training job runs is in the image or in requirements.txt."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

from dogbreed.sagemaker.launch import BUNDLE_SOURCES, TRACKER_REQUIREMENTS, requirements_txt
from tests.helpers.config import REPO

IMAGE_PACKAGES = REPO / "tests" / "data" / "pytorch-training-2.6-packages.txt"
OPTIONAL_ERRORS = {"ImportError", "ModuleNotFoundError"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    lines = IMAGE_PACKAGES.read_text().splitlines()
    return {normalized(line.split()[0]) for line in lines if line.strip() and not line.startswith("#")}


def required_imports(tree: ast.AST) -> set[str]:
    """Top-level modules imported outside `try: ... except ImportError` (those are optional)."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name) and handler.type.id in OPTIONAL_ERRORS for handler in node.handlers
        ):
            optional |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def shipped_imports() -> set[str]:
    files = [path for name in BUNDLE_SOURCES for path in ([REPO / name] if name.endswith(".py") else [])]
    files += [path for name in BUNDLE_SOURCES for path in (REPO / name).rglob("*.py")]
    modules = set().union(*(required_imports(ast.parse(path.read_text())) for path in files))
    return {module for module in modules if module not in sys.stdlib_module_names and module != "dogbreed"}


def test_every_third_party_import_of_the_bundle_is_in_the_image_or_the_requirements() -> None:
    imports = shipped_imports()
    assert {"torch", "hydra", "PIL", "boto3"} <= imports  # the scan sees the training code
    distributions = packages_distributions()
    # With every tracker in use: logger=mlflow puts mlflow-skinny into the requirements, and so on.
    requirements = requirements_txt(TRACKER_REQUIREMENTS).decode().split()
    available = image_packages() | {normalized(re.split(r"[<>=!~ ]", line)[0]) for line in requirements}
    missing = {module: distributions.get(module, [module]) for module in imports}
    missing = {module: dists for module, dists in missing.items() if not {normalized(d) for d in dists} & available}
    assert missing == {}, f"imported by the bundle but neither in the image nor in requirements.txt: {missing}"


def test_trackers_are_installed_only_for_the_jobs_that_use_them() -> None:
    assert "mlflow" not in requirements_txt().decode() and "tensorboard" not in requirements_txt(["csv"]).decode()
    assert requirements_txt(["csv", "mlflow"]).decode().splitlines()[-1] == TRACKER_REQUIREMENTS["mlflow"]


def test_the_image_list_is_dated_and_names_its_source() -> None:
    header = IMAGE_PACKAGES.read_text()
    assert "Read on 20" in header and "github.com/aws/deep-learning-containers" in header
    assert "hydra-core" not in image_packages()  # why requirements.txt exists
