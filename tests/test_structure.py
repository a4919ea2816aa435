"""The layout rules a contributor relies on: short functions, a short training entry, layers that hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dogbreed", "deploy", "ami", "acceptance")
MAX_FUNCTION_LINES = 80
MAX_TRAINING_LINES = 300


def long_functions(root: Path, limit: int) -> list[str]:
    """`path:line name (N lines)` for every function or method longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_a_screen(package: str) -> None:
    assert long_functions(REPO / package, MAX_FUNCTION_LINES) == []


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def too_long():\n{body}\n")
    (tmp_path / "short.py").write_text("def short():\n    return 1\n")
    found = long_functions(tmp_path, MAX_FUNCTION_LINES)
    assert len(found) == 1
    assert "too_long (81 lines)" in found[0]


def test_training_entry_stays_short() -> None:
    lines = (REPO / "dogbreed" / "train" / "run.py").read_text().count("\n")
    assert lines <= MAX_TRAINING_LINES


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Runs import-linter with the project's contracts on the packages in `tree`."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    # PYTHONPATH puts `tree` ahead of the editable install, so the copy is what gets checked.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "HOME": str(tree)}
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def copy_project(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_import_contracts_hold(tmp_path: Path) -> None:
    result = lint_imports(copy_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("dogbreed/train/reports.py", "import deploy", "never the reverse"),
        ("deploy/invoke.py", "import ami", "never the reverse"),
        ("dogbreed/storage/location.py", "import dogbreed.storage.run_uploads", "No import cycles"),
        ("dogbreed/serving/handler.py", "import dogbreed.train.run", "imports nothing else of dogbreed"),
        ("dogbreed/storage/transfer.py", "import dogbreed.train.checkpoint", "dogbreed's packages in layers"),
        ("dogbreed/data/scan.py", "import dogbreed.storage.location", "dogbreed.data imports no S3"),
        ("dogbreed/data/download.py", "import boto3", "dogbreed.data imports no S3"),
        ("dogbreed/train/run.py", "import dogbreed.aws.iam", "Training reaches AWS only through"),
        ("dogbreed/tracking/base.py", "import dogbreed.sagemaker.jobs", "Training reaches AWS only through"),
        ("dogbreed/aws/iam.py", "import torch", "The AWS side loads no torch"),
        ("dogbreed/sagemaker/jobs.py", "import dogbreed.files", "The AWS side loads no torch"),
        ("dogbreed/serving/fetch.py", "import boto3", "only torch, torchvision and PIL"),
        ("deploy/lambda_function/lambda_function.py", "import dogbreed", "ships alone"),
    ],
)
def test_a_wrong_import_fails_lint(tmp_path: Path, module: str, line: str, broken: str) -> None:
    tree = copy_project(tmp_path)
    target = tree / module
    target.write_text(target.read_text() + f"\n{line}  # a layering mistake\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert broken in result.stdout.split("Broken contracts")[-1]


# Directly under dogbreed/: the package face and the cross-cutting modules every package uses
# (how commands fail, atomic writes, the base errors, the malloc re-exec), plus the jobs
# command's old path, kept for one release.
TOP_LEVEL_MODULES = {"__init__", "cli", "files", "errors", "allocator", "sagemaker_jobs"}


def test_dogbreed_holds_packages_by_concern_and_a_handful_of_cross_cutting_modules() -> None:
    modules = {path.stem for path in (REPO / "dogbreed").glob("*.py")}
    assert modules == TOP_LEVEL_MODULES
    packages = {path.parent.name for path in (REPO / "dogbreed").glob("*/__init__.py")}
    assert packages == {"aws", "data", "sagemaker", "serving", "storage", "tracking", "train"}


def one_letter_apart(first: str, second: str) -> bool:
    """Whether one edit (a letter changed, added or removed) turns `first` into `second`."""
    if first == second or abs(len(first) - len(second)) > 1:
        return False
    if len(first) == len(second):
        return sum(a != b for a, b in zip(first, second, strict=True)) == 1
    shorter, longer = sorted((first, second), key=len)
    return any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))


def test_no_two_modules_have_names_one_letter_apart() -> None:
    names = sorted({path.stem for package in PACKAGES for path in (REPO / package).rglob("*.py")} - {"__init__"})
    close = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if one_letter_apart(a, b)]
    assert close == []
    assert one_letter_apart("sagemaker_job", "sagemaker_jobs") and not one_letter_apart("iam", "ami")


def test_only_the_settings_builders_and_entry_points_see_the_hydra_config() -> None:
    # train.run and everything below it take RunSettings; the CLIs' config loader and the sweep
    # callback (which Hydra calls) are the rest.
    allowed = {"dogbreed/train/settings.py", "dogbreed/cli.py", "dogbreed/train/sweep.py"}
    seen = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "dogbreed").rglob("*.py")
        if "DictConfig" in path.read_text()
    }
    assert seen <= allowed
