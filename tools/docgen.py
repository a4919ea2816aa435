"""The docs' reference pages, generated from the code at build time: config keys, CLIs, error lines.

Pure functions returning Markdown; `tools/mkdocs_hook.py` adds their pages to the site, so a key
removed from a YAML file or an option renamed in a parser changes the reference in the same build.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_+][\w.-]*):(?P<value>.*)$")
# Each CLI by the module a user runs, and the function that builds (or parses with) its parser.
CLIS = {
    "python -m deploy": ("deploy.cli", "main"),
    "python -m ami": ("ami.cli", "main"),
    "python -m dogbreed.storage": ("dogbreed.storage.__main__", "main"),
    "python -m dogbreed.sagemaker.jobs": ("dogbreed.sagemaker.jobs", "main"),
    "python -m acceptance": ("acceptance.__main__", "main"),
}
ERROR_CLASSES = re.compile(r"(Error|Refused|Interrupted)$")


def yaml_keys(text: str) -> Iterator[tuple[str, str, str]]:
    """(dotted key, default, the comment lines just above it) for every leaf key of a YAML file.

    Line-based on purpose: PyYAML drops comments, and Hydra's `${...}` values stay as written.
    """
    stack: list[str] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not match or match["key"] == "defaults":
            pending = pending if stripped else []
            continue
        depth = len(match["indent"]) // 2
        stack[depth:] = [match["key"]]
        value = match["value"].split(" #")[0].strip()
        if value:
            yield ".".join(stack), value, " ".join(pending)
        pending = []


def config_reference(conf_dir: Path, launcher_source: Path) -> str:
    """Every key of every config file (and the SageMaker launcher's), its default and its comment."""
    out = ["# Configuration keys", "", "Generated from `conf/` and the launcher's settings at build time.", ""]
    for path in sorted(conf_dir.rglob("*.yaml")):
        rows = list(yaml_keys(path.read_text()))
        if rows:
            out += [f"## `conf/{path.relative_to(conf_dir).as_posix()}`", "", *table(rows), ""]
    out += ["## `hydra.launcher.*` (`hydra/launcher=sagemaker`)", "", *table(launcher_keys(launcher_source)), ""]
    return "\n".join(out)


def launcher_keys(source: Path) -> list[tuple[str, str, str]]:
    """The LaunchSettings fields: `name: type = default  # comment`, or the comment lines above."""
    rows, pending = [], []
    for line in source.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# "))
            continue
        match = re.match(r"^    (\w+): [^=]+= (.+?)(?:\s+#\s*(.*))?$", line)
        if match and not stripped.startswith(("def ", "return")):
            default = "{}" if match[2] == "field(default_factory=dict)" else match[2]
            rows.append((f"hydra.launcher.{match[1]}", default, " ".join([*pending, match[3] or ""]).strip()))
        pending = []
    return rows


def table(rows: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    return lines + [f"| `{cell(k)}` | `{cell(v)}` | {cell(c)} |" for k, v, c in rows]


def cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text.replace("|", "\\|")


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(main: Callable[[list[str]], object]) -> argparse.ArgumentParser:
    """The root parser `main` builds: caught at its first parse, before the command does anything."""
    original = argparse.ArgumentParser.parse_known_args

    def grab(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> object:
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = grab  # type: ignore[assignment,method-assign]
    try:
        main([])
    except _Captured as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    raise RuntimeError(f"{main} parsed nothing")


def cli_reference(parsers: dict[str, argparse.ArgumentParser]) -> str:
    """Each CLI's help and every subcommand's, as argparse prints them."""
    out = ["# Command lines", "", "Generated from the argparse parsers at build time.", ""]

    def walk(parser: argparse.ArgumentParser, level: int) -> None:
        out.extend([f"{'#' * level} `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""])
        for action in parser._actions:  # argparse has no public API for its subparsers
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub, min(level + 1, 6))

    for parser in parsers.values():
        walk(parser, 2)
    return "\n".join(out)


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    mains = {name: getattr(importlib.import_module(module), function) for name, (module, function) in CLIS.items()}
    return {name: parser_of(main) for name, main in mains.items()}


def error_lines(roots: list[Path]) -> list[tuple[str, str, str]]:
    """(module, error class, message as written) for every project error raised with a literal message."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                    continue
                name = getattr(node.exc.func, "id", getattr(node.exc.func, "attr", ""))
                if not ERROR_CLASSES.search(name) or not node.exc.args:
                    continue
                message = node.exc.args[0]
                if isinstance(message, ast.Constant | ast.JoinedStr):
                    text = re.sub(r"\{[^}]*\}", "…", ast.unparse(message))[1:-1].strip("'\"")
                    found.append((path.resolve().relative_to(REPO).as_posix(), name, text))
    return found


def errors_reference(rows: list[tuple[str, str, str]]) -> str:
    """The troubleshooting table: each `error:` line the CLIs print, where it comes from; `…` is a value."""
    out = [
        "# Error lines",
        "",
        "Every command fails with one line, `error: <message>`, and the message names its fix: the key",
        "to change, the command to run, or the AWS call that refused. This table is generated from the",
        "`raise` statements in the code; `…` stands for a value filled in at run time.",
        "",
        "| message | raised in |",
        "| --- | --- |",
    ]
    out += [f"| {cell(text)} | `{module}` ({cls}) |" for module, cls, text in rows]
    return "\n".join(out) + "\n"
