"""The layout rules a contributor relies on: short functions, a short training entry, layers that hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dogbreed", "deploy", "ami")
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
    lines = (REPO / "dogbreed" / "training.py").read_text().count("\n")
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
        ("dogbreed/reports.py", "import deploy", "never the reverse"),
        ("deploy/invoke.py", "import ami", "never the reverse"),
        ("dogbreed/s3.py", "import dogbreed.storage.runs", "No import cycles"),
        ("dogbreed/serving/handler.py", "import dogbreed.train.run", "imports nothing else of dogbreed"),
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
