"""What a Python file imports from outside the standard library, for checks against an image's package list."""

from __future__ import annotations

import ast
import re
from pathlib import Path

OPTIONAL_ERRORS = {"ImportError", "ModuleNotFoundError"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(listing: Path) -> set[str]:
    """The distributions of a dated `name==version` list (tests/data/*-packages.txt), normalized."""
    lines = listing.read_text().splitlines()
    return {normalized(re.split(r"[=<> ]", line)[0]) for line in lines if line.strip() and not line.startswith("#")}


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
