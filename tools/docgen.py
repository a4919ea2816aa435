"""The docs' generated pages, made from the code at build time: config keys, CLIs, troubleshooting.

Pure functions returning Markdown; `tools/mkdocs_hook.py` adds their pages to the site, so a key
removed from a YAML file or an option renamed in a parser changes the reference in the same build.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

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


def prose_cell(text: str) -> str:
    """A cell of running text: `<region>` shown as written, not taken for an HTML tag (code spans kept)."""
    parts = text.split("`")
    parts[::2] = [part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for part in parts[::2]]
    return cell("`".join(parts))


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


@dataclass(frozen=True)
class ErrorLine:
    """One message a `raise` in the code can produce; `…` stands for a value filled in at run time."""

    module: str
    message: str
    status: int | None  # the HTTP status of an endpoint answer (RequestError); None for an `error:` line


def error_lines(roots: list[Path]) -> list[ErrorLine]:
    """Every project error raised with a literal message: `error:` lines and the endpoint's answers.

    A class counts when it descends from DogbreedError (the CLIs print those as one line) or
    RequestError (the endpoint answers those with their status); others are bugs, not messages.
    """
    trees = {path: ast.parse(path.read_text()) for root in roots for path in sorted(root.rglob("*.py"))}
    bases = {
        node.name: [getattr(base, "id", getattr(base, "attr", "")) for base in node.bases]
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }

    def descends(name: str, root: str) -> bool:
        return name == root or any(descends(base, root) for base in bases.get(name, []))

    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            name = getattr(node.exc.func, "id", getattr(node.exc.func, "attr", ""))
            texts = [arg for arg in node.exc.args if isinstance(arg, ast.JoinedStr) or _is_str(arg)]
            if not texts or not (descends(name, "DogbreedError") or descends(name, "RequestError")):
                continue
            statuses = [arg.value for arg in node.exc.args if isinstance(arg, ast.Constant) and type(arg.value) is int]
            status = statuses[0] if descends(name, "RequestError") and statuses else None
            module = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
            found.append(ErrorLine(module.as_posix(), _message(texts[0]), status))
    return list(dict.fromkeys(found))  # one row for a message raised in two places of a module


def _message(node: ast.expr) -> str:
    """The message as a user reads it, each value filled in at run time as `…`."""
    parts = node.values if isinstance(node, ast.JoinedStr) else [node]
    text = "".join(str(part.value) if isinstance(part, ast.Constant) else "…" for part in parts)
    return " ".join(text.split())  # one line, as the CLI prints it


def _is_str(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


# The workflows, in the order a user meets them; the troubleshooting page has a section for each.
TRAINING = "Training (`python train.py`)"
S3 = "S3 (`storage=s3`, `data.root=s3://`, `python -m dogbreed.storage`)"
SAGEMAKER = "Training on SageMaker (`hydra/launcher=sagemaker`)"
AWS_CHECKS = "Permissions, quotas and images (every flow's preflight)"
SERVING = "Package, serve, invoke, predict, load test (`python -m deploy`)"
DEPLOY = "Deploy and operate (`python -m deploy up`, `register`, `rollback`)"
EC2 = "EC2 (`python -m ami`)"
ACCEPTANCE = "The acceptance run (`make integ`)"
OTHER = "Other tools"
SECTION_ORDER = [TRAINING, S3, SAGEMAKER, AWS_CHECKS, SERVING, DEPLOY, EC2, ACCEPTANCE, OTHER]
# Where a message is raised decides its section: the first prefix that matches.
SECTIONS = [
    ("acceptance/", ACCEPTANCE),
    ("ami/", EC2),
    ("deploy/cloud/", DEPLOY),
    ("deploy/", SERVING),
    ("dogbreed/serving/", SERVING),
    ("dogbreed/sagemaker/", SAGEMAKER),
    ("dogbreed/aws/", AWS_CHECKS),
    ("dogbreed/storage/", S3),
    ("dogbreed/", TRAINING),
]
SENTENCE_BREAK = re.compile(r"\.\s+(?=[A-Z])")
# A config check names the key and what it takes ("deploy.x=…: 1 to 64", "ami.nodes must be …, got …").
_KEY = r"(?P<key>(?:deploy|ami|hydra\.launcher|data|model|trainer|storage|logger|DOGBREED)[\w.…]+)"
CONFIG_RULES = [
    (re.compile(_KEY + r"=…: (?P<rule>.+)$"), "change"),  # "change `deploy.x` 1 to 64": shown after a colon
    (re.compile(_KEY + r" must be (?P<rule>.+?)(?:, got …)?$"), "set"),
]


def fix_of(message: str, fixes: dict[str, str]) -> str | None:
    """What to do about a message: written for it in `fixes`, else the fix the message carries itself."""
    if message in fixes:
        return fixes[message]
    if "; " in message:  # the project's messages read "what went wrong; what to do"
        return message.split("; ", 1)[1]
    sentences = SENTENCE_BREAK.split(message, maxsplit=1)
    if len(sentences) == 2:
        return sentences[1]
    for pattern, verb in CONFIG_RULES:
        match = pattern.match(message)
        if match:
            return f"{verb} `{match['key']}`{':' if verb == 'change' else ' to'} {match['rule']}"
    return None


ERROR_ROOTS = [REPO / "dogbreed", REPO / "deploy", REPO / "ami", REPO / "acceptance"]
FIXES = REPO / "tools" / "error_fixes.yaml"
INTRO = REPO / "tools" / "troubleshooting_intro.md"  # the page's opening and the AWS refusals, written by hand


def error_fixes(path: Path = FIXES) -> dict[str, str]:
    """The fixes written for messages that do not carry their own (tools/error_fixes.yaml)."""
    return yaml.safe_load(path.read_text())


def troubleshooting(rows: list[ErrorLine], fixes: dict[str, str]) -> str:
    """The troubleshooting page: every `error:` line and endpoint answer, by workflow, with what to do."""
    out = [INTRO.read_text()]
    by_section: dict[str, list[ErrorLine]] = {}
    for row in rows:
        if row.status is None:
            title = next((title for prefix, title in SECTIONS if row.module.startswith(prefix)), OTHER)
            by_section.setdefault(title, []).append(row)
    for title in SECTION_ORDER:
        if title in by_section:
            out += [f"## {title}", "", "| `error:` line | what to do | raised in |", "| --- | --- | --- |"]
            for row in sorted(by_section[title], key=lambda row: row.message.lower()):
                fix = prose_cell(fix_of(row.message, fixes) or "")
                out.append(f"| {prose_cell(row.message)} | {fix} | `{row.module}` |")
            out.append("")
    out += [ENDPOINT_INTRO, "| status | answer | what to do |", "| --- | --- | --- |"]
    answers = sorted({(row.status or 0, row.message) for row in rows if row.status is not None})
    out += [f"| {status} | {prose_cell(text)} | {prose_cell(fix_of(text, fixes) or '')} |" for status, text in answers]
    return "\n".join(out) + "\n"


ENDPOINT_INTRO = """## What the endpoint answers

Not `error:` lines: the endpoint (and `python -m deploy serve`) answers a request it cannot serve
with this status and `{"message": …}`; `deploy invoke` prints it after `endpoint … refused the
request:`, and the Lambda passes the status on.
"""
