"""The documentation site: it builds strict and offline, its references follow the code, its snippets run."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.config import REPO
from tools import docgen

MKDOCS = Path(sys.executable).with_name("mkdocs")
FENCE = re.compile(r"^```(?:bash|sh) \{ test=\"run\" \}\n(?P<body>.*?)^```", re.M | re.S)


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [str(MKDOCS), "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strict_with_generated_references(tmp_path: Path) -> None:
    result = build(REPO / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    config = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "deploy.serverless.max_concurrency" in config and "hydra.launcher.preflight" in config
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "python -m deploy setup" in cli and "--skip-preflight" in cli
    troubleshooting = (tmp_path / "site" / "guides" / "troubleshooting" / "index.html").read_text()
    assert "set ami.s3_uri=s3://bucket/prefix: the instance gets its code and data there" in troubleshooting
    assert "no AWS region: set ami.region=&lt;region&gt;" in troubleshooting  # shown, not taken for a tag
    assert not re.search(r"fonts\.googleapis|unpkg\.com/mermaid", (tmp_path / "site" / "index.html").read_text())


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    page = docs / "guides" / "deploy.md"
    page.write_text(page.read_text() + "\nSee [the old page](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    text = (REPO / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    config.write_text(text.replace("- tools/mkdocs_hook.py", f"- {REPO / 'tools' / 'mkdocs_hook.py'}"))
    result = build(config, tmp_path / "site")
    assert result.returncode == 1
    assert "contains a link 'no-such-page.md', but the target" in result.stderr


def test_a_removed_key_leaves_the_config_reference_and_a_comment_becomes_its_meaning() -> None:
    yaml = "deploy:\n  # Instances at most.\n  max_capacity: 3\n  # Gone soon.\n  old_key: 1\n"
    assert list(docgen.yaml_keys(yaml)) == [
        ("deploy.max_capacity", "3", "Instances at most."),
        ("deploy.old_key", "1", "Gone soon."),
    ]
    assert [key for key, _, _ in docgen.yaml_keys(yaml.replace("  # Gone soon.\n  old_key: 1\n", ""))] == [
        "deploy.max_capacity"
    ]


def test_every_error_line_has_what_to_do_and_no_fix_is_left_for_a_message_that_is_gone() -> None:
    rows = docgen.error_lines(docgen.ERROR_ROOTS)
    fixes = docgen.error_fixes()
    without = [row.message for row in rows if not docgen.fix_of(row.message, fixes)]
    assert not without, f"add what to do to the message, or to tools/error_fixes.yaml: {without}"
    stale = set(fixes) - {row.message for row in rows}
    assert not stale, f"tools/error_fixes.yaml has fixes for messages no code raises: {stale}"
    assert len({row.module for row in rows}) > 40 and any(row.status == 413 for row in rows)


def test_the_troubleshooting_page_follows_the_raise_statements(tmp_path: Path) -> None:
    package = tmp_path / "tool"
    package.mkdir()
    (package / "errors.py").write_text(
        "from dogbreed.errors import DogbreedError\n"
        "class ToolError(DogbreedError):\n    pass\n"
        "def check(key, region):\n"
        "    if key:\n        raise ToolError(f'tool.key={key}: 1 to 8')\n"
        "    raise ToolError(f'no bucket in {region}; create it with tool init')\n"
        "def bug():\n    raise ValueError('an invariant, not a message')\n"
    )
    rows = docgen.error_lines([REPO / "dogbreed", package])  # the project's base class, and a tool's own
    messages = {row.message for row in rows}
    assert "no bucket in …; create it with tool init" in messages and "tool.key=…: 1 to 8" in messages
    assert "an invariant, not a message" not in messages
    assert docgen.fix_of("no bucket in …; create it with tool init", {}) == "create it with tool init"
    assert docgen.fix_of("tool.key=…: 1 to 8", {}) is None  # not a known config root: it needs a written fix
    assert docgen.fix_of("deploy.x=…: 1 to 8", {}) == "change `deploy.x`: 1 to 8"
    page = docgen.troubleshooting(rows, {"tool.key=…: 1 to 8": "set tool.key between 1 and 8"})
    assert "| tool.key=…: 1 to 8 | set tool.key between 1 and 8 |" in page


def test_a_renamed_option_changes_the_cli_reference() -> None:
    def parser(option: str) -> argparse.ArgumentParser:
        root = argparse.ArgumentParser(prog="python -m tool")
        sub = root.add_subparsers().add_parser("up", prog="python -m tool up")
        sub.add_argument(option, help="what it does")
        return root

    before, after = docgen.cli_reference({"t": parser("--old")}), docgen.cli_reference({"t": parser("--new")})
    assert "--old" in before and "--old" not in after and "--new" in after
    assert "## `python -m tool`" in after and "### `python -m tool up`" in after


def snippets() -> list[tuple[str, str]]:
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{path.relative_to(REPO)}:{line}", match["body"]))
    return found


def run_snippet(body: str) -> subprocess.CompletedProcess[str]:
    """A snippet as a reader pastes it into a shell in the checkout, the project's venv first on PATH."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(("where", "body"), snippets(), ids=[where for where, _ in snippets()])
def test_each_marked_snippet_runs(where: str, body: str) -> None:
    result = run_snippet(body)
    assert result.returncode == 0, f"{where}: {result.stderr[-2000:]}"


def test_the_guides_mark_their_offline_commands_runnable() -> None:
    pages = {where.split(":")[0] for where, _ in snippets()}
    assert {"docs/guides/first-run.md", "docs/guides/train.md", "docs/guides/serving.md", "docs/guides/ec2.md"} <= pages


@pytest.mark.parametrize(
    ("documented", "changed"),
    [("python -m deploy policy", "python -m deploy polcy"), ("ami.region=", "ami.regoin=")],
    ids=["a subcommand that does not exist", "a key that does not exist"],
)
def test_a_snippet_whose_command_no_longer_exists_fails(documented: str, changed: str) -> None:
    body = next(body for where, body in snippets() if where.startswith("docs/guides/first-run.md"))
    assert documented in body
    assert run_snippet(body.replace(documented, changed)).returncode != 0
