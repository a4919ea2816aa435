"""The dogImages download: real HTTP against a local server serving zips the tests make."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from dogbreed.data.download import fetch_dogimages
from dogbreed.data.folders import SPLITS
from dogbreed.errors import DataError
from tests.helpers.config import REPO
from tests.helpers.images import write_image


class ShortReadHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, but `/short/NAME` promises more bytes than it sends (a dropped connection)."""

    def do_GET(self) -> None:
        if not self.path.startswith("/short/"):
            return super().do_GET()
        body = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) * 2))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True
        return None

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(ShortReadHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make_zip(path: Path, classes: int, prefix: str = "dogImages/", with_macos_junk: bool = True) -> Path:
    source = path.parent / (path.stem + "_source")
    with zipfile.ZipFile(path, "w") as zf:
        for split in SPLITS:
            for index in range(classes):
                image = write_image(source / split / f"{index:03d}.Breed_{index}" / "a.jpg")
                zf.write(image, f"{prefix}{split}/{index:03d}.Breed_{index}/a.jpg")
                if with_macos_junk:
                    zf.writestr(f"__MACOSX/{prefix}{split}/{index:03d}.Breed_{index}/._a.jpg", b"junk")
    return path


def test_download_verifies_and_extracts(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    make_zip(served / "dogImages.zip", classes=3)
    root = tmp_path / "data" / "dogImages"

    fetch_dogimages(root, f"{url}/dogImages.zip", expected_classes=3)

    for split in SPLITS:
        assert sorted(p.name for p in (root / split).iterdir()) == ["000.Breed_0", "001.Breed_1", "002.Breed_2"]
        assert (root / split / "001.Breed_1" / "a.jpg").stat().st_size > 0
    assert not (tmp_path / "data" / "__MACOSX").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dogImages", "dogImages.zip"]


def test_wrong_class_count_is_refused_before_extracting(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    make_zip(served / "dogImages.zip", classes=2)
    root = tmp_path / "dogImages"
    with pytest.raises(DataError, match="expected 133"):
        fetch_dogimages(root, f"{url}/dogImages.zip", expected_classes=133)
    assert not root.exists()


def test_corrupt_zip_is_refused(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    archive = make_zip(served / "dogImages.zip", classes=2, with_macos_junk=False)
    data = bytearray(archive.read_bytes())
    member_data = data.index(b"\xff\xd8")  # first JPEG payload, stored uncompressed
    data[member_data + 50] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match="CRC check failed"):
        fetch_dogimages(tmp_path / "dogImages", f"{url}/dogImages.zip", expected_classes=2)


def test_interrupted_download_leaves_no_file_that_looks_complete(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    make_zip(served / "dogImages.zip", classes=2)
    target = tmp_path / "dl"
    with pytest.raises(DataError, match="could not be downloaded"):
        fetch_dogimages(target / "dogImages", f"{url}/short/dogImages.zip", expected_classes=2)
    assert list(target.iterdir()) == []


def test_offline_download_says_what_to_do(closed_port: int, tmp_path: Path) -> None:
    with pytest.raises(DataError) as raised:
        fetch_dogimages(tmp_path / "dogImages", f"http://127.0.0.1:{closed_port}/dogImages.zip", 133)
    message = str(raised.value)
    assert "data.root=" in message and "data=synthetic" in message


def test_offline_cli_fails_fast_without_traceback(closed_port: int, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            f"data.root={tmp_path / 'missing' / 'dogImages'}",
            f"data.download_url=http://127.0.0.1:{closed_port}/dogImages.zip",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "could not download" in output and "data=synthetic" in output
