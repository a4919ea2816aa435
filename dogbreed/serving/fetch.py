"""Fetching an image URL from inside the endpoint without becoming an SSRF proxy.

The endpoint runs inside a VPC next to the instance metadata service, so a URL
is only fetched when every address its host resolves to is public; the
connection then goes to the address that was checked (no second DNS lookup a
rebinding server could answer differently), redirects are followed by hand and
checked the same way, and both time and size are capped.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from dogbreed.serving.errors import RequestError

# Local testing only: lets http:// URLs on 127.0.0.0/8 and ::1 through. Never set it on an endpoint.
ALLOW_LOOPBACK_ENV = "DOGBREED_FETCH_ALLOW_LOOPBACK"
# The whole fetch's deadline in seconds (default 10, at most 10): tests and benchmarks shorten it.
TOTAL_TIMEOUT_ENV = "DOGBREED_FETCH_TIMEOUT"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch; `allow_loopback` admits http:// and loopback hosts (local tests)."""

    max_bytes: int = 6 * 1024 * 1024
    connect_timeout: float = 3.0
    total_timeout: float = 10.0
    max_redirects: int = 3
    allow_loopback: bool = False

    @classmethod
    def from_env(cls) -> FetchPolicy:
        total = cls.total_timeout
        with contextlib.suppress(ValueError):
            total = min(total, max(0.1, float(os.environ.get(TOTAL_TIMEOUT_ENV, total))))
        return cls(allow_loopback=os.environ.get(ALLOW_LOOPBACK_ENV, "") == "1", total_timeout=total)


class Deadline:
    """One wall-clock limit over connect, TLS handshake, headers and body of every hop.

    Per-operation socket timeouts cannot bound a server that sends one byte just
    before each of them expires, so a timer shuts the current socket down when the
    time is up: whatever read is blocked then returns at once.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0 or self.expired:
            self.expired = True
            raise TimeoutError(f"took longer than {self.seconds:g} s")
        return left

    def watch(self, sock: socket.socket) -> None:
        """`sock` is shut down when the deadline passes (at once if it has)."""
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                # The plain socket method on purpose: SSLSocket.shutdown also drops its TLS state,
                # which a read in progress on another thread is still using.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_address(address: IPAddress, policy: FetchPolicy) -> None:
    """Refuses every address that is not plainly public (loopback only when the policy allows)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback and policy.allow_loopback:
        return
    if (
        address.is_private
        or address.is_loopback
        or address.is_link_local  # includes 169.254.169.254, the metadata service
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    ):
        raise RequestError(400, f"refusing to fetch from {address}: not a public address")


def resolve(host: str, port: int, policy: FetchPolicy, deadline: Deadline) -> str:
    """The first address of `host`, after checking that all of them are allowed."""
    infos = _lookup_within(host, port, deadline, policy.total_timeout)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        check_address(address, policy)
    return str(addresses[0])


def _lookup_within(host: str, port: int, deadline: Deadline, total: float) -> list[tuple]:
    """`getaddrinfo` under the fetch's deadline.

    The C resolver takes no timeout (a slow name server holds it for its own retries), so the
    lookup runs on a daemon thread and the request stops waiting for it when the deadline passes.
    """
    found: list[tuple] = []
    failed: list[socket.gaierror] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except socket.gaierror as err:
            failed.append(err)

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if worker.is_alive():
        raise RequestError(400, f"resolving {host!r} took longer than {total:g} s")
    if failed:
        raise RequestError(400, f"cannot resolve host {host!r}: {failed[0].strerror}")
    return found


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an already-checked address while sending the URL's own Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float, deadline: Deadline) -> None:
        super().__init__(host, port, timeout=min(timeout, deadline.remaining()))
        self.address = address
        self.deadline = deadline
        self.idle_timeout = timeout

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), min(self.idle_timeout, self.deadline.remaining()))
        sock.settimeout(min(self.idle_timeout, self.deadline.remaining()))  # idle limit per read, within the total
        self.deadline.watch(sock)
        self.sock = sock


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """The same over TLS; the certificate is verified against the host name, not the address."""

    def __init__(self, host: str, port: int, address: str, timeout: float, deadline: Deadline) -> None:
        super().__init__(host, port, address, timeout, deadline)
        self.tls = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        sock = self.tls.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.deadline.watch(sock)  # the handshake is under the deadline too
        sock.do_handshake()
        self.sock = sock


def fetch(url: str, policy: FetchPolicy) -> bytes:
    """Downloads `url` under `policy`.

    Raises:
        RequestError: 400 for a refused or failing URL, 413 when the body is over the cap.
    """
    deadline = Deadline(policy.total_timeout)
    try:
        return _follow(url, policy, deadline)
    finally:
        deadline.cancel()


def _follow(url: str, policy: FetchPolicy, deadline: Deadline) -> bytes:
    """The redirect loop of `fetch`: each hop is checked, connected to the checked address, and timed."""
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        allowed = ("https", "http") if policy.allow_loopback else ("https",)
        if parts.scheme not in allowed or not parts.hostname:
            raise RequestError(400, f"refusing to fetch {url!r}: only https:// URLs are accepted")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = resolve(parts.hostname, port, policy, deadline)
        if parts.scheme == "http" and not ipaddress.ip_address(address).is_loopback:
            raise RequestError(400, f"refusing to fetch {url!r}: plain http is only allowed to loopback")
        connection_type = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        try:
            connection = connection_type(parts.hostname, port, address, policy.connect_timeout, deadline)
        except TimeoutError:
            raise RequestError(400, f"fetching {url!r} took longer than {policy.total_timeout:g} s") from None
        try:
            path = parts.path or "/"
            connection.request("GET", f"{path}?{parts.query}" if parts.query else path, headers={"Accept": "image/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise RequestError(400, f"fetching {url!r} failed: HTTP {response.status}")
            return read_capped(response, policy, deadline, url)
        except (OSError, http.client.HTTPException) as err:
            if deadline.expired:
                raise RequestError(400, f"fetching {url!r} took longer than {policy.total_timeout:g} s") from None
            raise RequestError(400, f"fetching {url!r} failed: {err}") from None
        finally:
            connection.close()
    raise RequestError(400, f"fetching failed: more than {policy.max_redirects} redirects")


def read_capped(response: http.client.HTTPResponse, policy: FetchPolicy, deadline: Deadline, url: str) -> bytes:
    """The body, refused as soon as it is known to be over the size cap or the time limit."""
    declared = response.getheader("Content-Length")
    if declared and declared.isascii() and declared.isdecimal() and int(declared) > policy.max_bytes:
        raise RequestError(413, f"{url!r} is {int(declared):,} bytes, over the {policy.max_bytes:,}-byte limit")
    chunks, size = [], 0
    while chunk := response.read1(64 * 1024):  # read1: whatever has arrived, not a full 64 KiB
        size += len(chunk)
        if size > policy.max_bytes:
            raise RequestError(413, f"{url!r} is over the {policy.max_bytes:,}-byte limit")
        chunks.append(chunk)
    if deadline.expired:  # the timer shut the socket: what was read is a truncated body
        raise TimeoutError
    return b"".join(chunks)
