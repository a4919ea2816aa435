"""A local IMDSv2 (token PUT, 401 without it) that can post an EC2 spot interruption notice."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "session-token-123"


class FakeIMDS(ThreadingHTTPServer):
    """IMDSv2 as on an IMDSv2-only instance: a PUT token, and 401 for requests without it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), IMDSHandler)
        self.notice: dict[str, str] | None = None
        self.polls = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class IMDSHandler(BaseHTTPRequestHandler):
    server: FakeIMDS

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self.reply(200, TOKEN.encode())
        else:
            self.reply(400)

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self.reply(401)
        elif self.path != "/latest/meta-data/spot/instance-action":
            self.reply(404)
        else:
            self.server.polls += 1
            notice = self.server.notice
            self.reply(404) if notice is None else self.reply(200, json.dumps(notice).encode())
