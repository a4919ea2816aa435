"""MkDocs hook: the generated reference pages join the site's files in `on_files` (no plugin needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("COLUMNS", "100")  # argparse wraps help to the terminal: the same width every build

from tools import docgen  # noqa: E402


def on_files(files: Files, config: Any) -> Files:
    if str(ROOT) not in sys.path:  # MkDocs restores sys.path after loading a hook; acceptance/ is not installed
        sys.path.insert(0, str(ROOT))
    pages = {
        "reference/config.md": docgen.config_reference(ROOT / "conf", ROOT / "dogbreed/sagemaker/settings.py"),
        "reference/cli.md": docgen.cli_reference(docgen.all_parsers()),
        "guides/troubleshooting.md": docgen.troubleshooting(
            docgen.error_lines(docgen.ERROR_ROOTS), docgen.error_fixes()
        ),
    }
    if not (ROOT / "docs" / "benchmarks.md").exists():  # `make bench` writes it from a full run
        pages["benchmarks.md"] = (
            "# Benchmark results\n\nNo full `make bench` is recorded in this checkout yet: run `make bench`.\n"
        )
    for uri, text in pages.items():
        files.append(File.generated(config, uri, content=text))
    return files
