"""User data: ami/bootstrap.sh with the launch's values written in where it says @RENDERED@."""

from __future__ import annotations

import shlex
from pathlib import Path

from ami.errors import AmiError

BOOTSTRAP = Path(__file__).with_name("bootstrap.sh")
MARKER = "# @RENDERED@ launch writes the values from conf/ami.yaml below this line.\n"
# EC2 refuses user data over 16 KiB (before base64).
MAX_BYTES = 16 * 1024


def render(values: dict[str, str]) -> str:
    """The bootstrap with each `DOGBREED_<KEY>` defaulting to `values[KEY]` (the environment still wins)."""
    script = BOOTSTRAP.read_text()
    lines = [f'[ -n "${{DOGBREED_{key}+set}}" ] || DOGBREED_{key}={shlex.quote(v)}' for key, v in values.items()]
    rendered = script.replace(MARKER, MARKER + "".join(line + "\n" for line in lines), 1)
    if len(rendered.encode()) > MAX_BYTES:
        size = len(rendered.encode())
        raise AmiError(f"user data is {size} bytes, over EC2's {MAX_BYTES}; shorten ami.train_overrides")
    return rendered


def train_args(overrides: list[str]) -> str:
    """The training overrides as one shell-quoted string, one override per word."""
    return shlex.join(overrides)
