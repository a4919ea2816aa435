"""The endpoint's URL fetcher against a real HTTP server on 127.0.0.1: what it fetches and what it refuses."""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import threading
import time
from collections.abc import Iterator

import pytest

from dogbreed.serving.errors import RequestError
from dogbreed.serving.fetch import FetchPolicy, check_address, fetch
from tests.helpers.images import image_bytes

IMAGE = image_bytes()
LOOPBACK = FetchPolicy(allow_loopback=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/dog.jpg":
            self.reply(200, IMAGE)
        elif self.path == "/big":
            self.reply(200, b"x" * 5000)
        elif self.path == "/slow":
            time.sleep(1.5)
            self.reply(200, IMAGE)
        elif self.path in ("/drip-headers", "/drip-body"):
            self.drip(self.path == "/drip-body")
        elif self.path.startswith("/to/"):  # /to/<url>: a redirect to <url>
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to/"))
            self.end_headers()
        else:
            self.reply(404, b"no")

    def drip(self, in_body: bool) -> None:
        """One byte every 0.1 s for 4 s: every read succeeds, the response never ends in time."""
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" if in_body else b"HTTP/1.1 200 OK\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(head)
            for _ in range(40):
                self.wfile.write(b"x")
                time.sleep(0.1)

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """A plain HTTP server on loopback serving an image, a large body, a slow reply and redirects."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_loopback_switch_on_fetches_the_image(origin: str) -> None:
    assert fetch(f"{origin}/dog.jpg", LOOPBACK) == IMAGE
    assert fetch(f"{origin}/to/{origin}/dog.jpg", LOOPBACK) == IMAGE  # a redirect to an allowed address


def test_switch_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOGBREED_FETCH_ALLOW_LOOPBACK", raising=False)
    assert FetchPolicy.from_env().allow_loopback is False
    monkeypatch.setenv("DOGBREED_FETCH_ALLOW_LOOPBACK", "1")
    assert FetchPolicy.from_env().allow_loopback is True


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/dog.jpg", "only https://"),  # plain http
        ("https://127.0.0.1:{port}/dog.jpg", "not a public address"),  # https, but loopback
        ("https://localhost:{port}/dog.jpg", "not a public address"),  # a name that resolves to loopback
        ("https://169.254.169.254/latest/meta-data/", "not a public address"),  # instance metadata
        ("https://10.0.0.7/dog.jpg", "not a public address"),
        ("file:///etc/passwd", "only https://"),
    ],
)
def test_default_policy_refuses(origin: str, path: str, fragment: str) -> None:
    port = origin.rsplit(":", 1)[1]
    url = f"{origin}{path}" if path.startswith("/") else path.format(port=port)
    with pytest.raises(RequestError, match=fragment) as caught:
        fetch(url, FetchPolicy())
    assert caught.value.status == 400


def test_redirect_to_metadata_is_refused_even_with_loopback_allowed(origin: str) -> None:
    with pytest.raises(RequestError, match=r"169\.254\.169\.254: not a public address"):
        fetch(f"{origin}/to/http://169.254.169.254/latest/meta-data/", LOOPBACK)


def test_size_cap_status_and_timeout(origin: str) -> None:
    with pytest.raises(RequestError, match="over the 1,000-byte limit") as caught:
        fetch(f"{origin}/big", FetchPolicy(max_bytes=1000, allow_loopback=True))
    assert caught.value.status == 413
    with pytest.raises(RequestError, match="HTTP 404"):
        fetch(f"{origin}/missing", LOOPBACK)
    started = time.monotonic()
    with pytest.raises(RequestError, match="timed out"):
        fetch(f"{origin}/slow", FetchPolicy(connect_timeout=0.3, allow_loopback=True))
    assert time.monotonic() - started < 1.2


@pytest.mark.parametrize(
    "address", ["192.168.1.1", "172.16.0.1", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1"]
)
def test_non_public_addresses(address: str) -> None:
    with pytest.raises(RequestError):
        check_address(ipaddress.ip_address(address), FetchPolicy())


def test_public_addresses_pass() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        check_address(ipaddress.ip_address(address), FetchPolicy())
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)


@pytest.mark.parametrize("path", ["/drip-headers", "/drip-body"])
def test_one_deadline_over_headers_and_body(origin: str, path: str) -> None:
    """A server dripping a byte per 0.1 s never trips the per-read timeout; the total deadline stops it."""
    started = time.monotonic()
    with pytest.raises(RequestError, match="took longer than 1 s") as caught:
        fetch(f"{origin}{path}", FetchPolicy(total_timeout=1.0, allow_loopback=True))
    assert caught.value.status == 400
    assert time.monotonic() - started < 1.6


def test_a_slow_name_server_is_under_the_same_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # getaddrinfo takes no timeout; a name server that never answers must not hold the request.
    def slow_lookup(*args: object, **kwargs: object) -> list:
        time.sleep(5)
        return []

    monkeypatch.setattr("socket.getaddrinfo", slow_lookup)
    started = time.monotonic()
    with pytest.raises(RequestError, match=r"resolving 'slow.example' took longer than 1 s") as caught:
        fetch("https://slow.example/dog.jpg", FetchPolicy(total_timeout=1.0))
    assert caught.value.status == 400
    assert time.monotonic() - started < 1.5


def test_deadline_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGBREED_FETCH_TIMEOUT", "1.5")
    assert FetchPolicy.from_env().total_timeout == 1.5
    monkeypatch.setenv("DOGBREED_FETCH_TIMEOUT", "99")  # never longer than the default
    assert FetchPolicy.from_env().total_timeout == 10.0
