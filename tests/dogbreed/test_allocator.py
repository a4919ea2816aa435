"""train.py re-executes itself under tuned glibc malloc unless the user chose otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dogbreed.allocator import OPT_OUT, TUNABLES, tuned_environment
from tests.helpers.config import REPO


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tunables_are_added_to_a_plain_environment() -> None:
    assert tuned_environment({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": TUNABLES}


@pytest.mark.parametrize(
    "environ",
    [
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},  # the user's own tuning wins
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},  # another allocator is in charge
        {OPT_OUT: "0"},
    ],
)
def test_user_choices_are_left_alone(environ: dict[str, str]) -> None:
    assert tuned_environment(environ) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_train_py_runs_under_tuned_malloc_without_exports(closed_port: int, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "train.py", f"data.root={tmp_path}/none", f"hydra.run.dir={tmp_path}/run",
         f"data.download_url=http://127.0.0.1:{closed_port}/x.zip"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert "malloc tuned" in result.stdout + result.stderr
