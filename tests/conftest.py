"""Shared fixtures: the real Hydra config, shrunk for fast CPU runs, and small image folders."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from dogbreed.synthetic import SyntheticSpec, generate

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

TINY_SPEC = SyntheticSpec(classes=4, train_per_class=12, valid_per_class=4, test_per_class=4, width=64, height=48)


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


def shrunk_overrides(output_dir: Path, data_root: Path) -> list[str]:
    """CPU, no workers, tiny images and model: a run takes seconds. Later overrides win."""
    return [
        f"paths.output_dir={output_dir}",
        f"paths.output_root={output_dir.parent}",
        f"paths.cache_dir={output_dir.parent.parent / 'cache'}",
        f"data.root={data_root}",
        "data.synthetic=null",
        "data.num_workers=0",
        "data.scan_workers=0",
        "data.image_size=32",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "model.arch=resnet18",
        "model.pretrained=false",
        "trainer.device=cpu",
        "trainer.epochs=1",
        "trainer.progress_bar=false",
    ]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 generated classes, 12/4/4 images per class; shared, so tests must not modify it."""
    return generate(tmp_path_factory.mktemp("data") / "tiny", TINY_SPEC)


@pytest.fixture
def make_cfg(tmp_path: Path, tiny_dataset: Path) -> Callable[..., DictConfig]:
    def make(overrides: list[str] | None = None, data_root: Path | None = None, run: str = "run") -> DictConfig:
        base = shrunk_overrides(tmp_path / "outputs" / run, data_root or tiny_dataset)
        return compose_config([*base, *(overrides or [])])

    return make


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (200, 30, 30), "L": 128, "CMYK": (0, 200, 200, 0), "RGBA": (0, 0, 255, 128), "P": 3}[mode]
    Image.new(mode, size, color).save(path, format=fmt)
    return path


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connections are refused at once."""
    return free_port()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real moto server on loopback for the whole session (../shared/AWS_LOCAL.md)."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # No docker here: Lambda invocations echo or return queued replies instead of running code.
    request = urllib.request.Request(
        f"{url}/moto-api/config", data=json.dumps({"lambda": {"use_docker": False}}).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    yield url
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points every boto3 client (and subprocess) at the moto server with dummy credentials.

    Production code needs no hooks for this: boto3 honours AWS_ENDPOINT_URL. Moto's state
    is reset afterwards so tests do not see each other's resources.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield moto_server
    # Reloading the AWS managed policies on reset takes a while on a busy machine.
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=120).close()
