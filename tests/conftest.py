"""Shared fixtures: the real Hydra config, shrunk for fast CPU runs, and small image folders."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from dogbreed.data.synthetic import generate
from tests.helpers.aws_gaps import Gaps, GapsServer
from tests.helpers.config import TINY_SPEC, compose_config, shrunk_overrides
from tests.helpers.imds import FakeIMDS
from tests.helpers.net import free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test that talks to the moto server `aws`, so `make test-aws` selects them all."""
    for item in items:
        if "moto_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.aws)


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


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connections are refused at once."""
    return free_port()


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


@pytest.fixture(scope="session")
def gaps_server(moto_server: str) -> Iterator[GapsServer]:
    """Service Quotas, IAM policy simulation and Lambda provisioned concurrency, which moto lacks (the rest goes on)."""
    server = GapsServer(Gaps(moto_server))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture
def gaps(aws: str, gaps_server: GapsServer) -> Gaps:
    """The quotas and simulated decisions the `aws` account has; set them to show a shortfall or a denial."""
    return gaps_server.gaps


@pytest.fixture
def aws(moto_server: str, gaps_server: GapsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points every boto3 client (and subprocess) at the moto server with dummy credentials.

    Production code needs no hooks for this: boto3 honours AWS_ENDPOINT_URL. Moto's state
    is reset afterwards so tests do not see each other's resources.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", gaps_server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", gaps_server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", gaps_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield moto_server
    # Reloading the AWS managed policies on reset takes a while on a busy machine.
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=120).close()
    gaps_server.gaps.reset()


@pytest.fixture
def imds() -> Iterator[FakeIMDS]:
    """A local IMDSv2 on a free port; set `.notice` to post a spot interruption notice."""
    server = FakeIMDS()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
