"""An extracted model.tar.gz served the way the SageMaker Ray Serve container serves it, without docker.

What the container does (aws/deep-learning-containers, scripts/docker/ray/sagemaker_entrypoint.sh and
sagemaker_serve.py, release v1.4): put /opt/ml/model and /opt/ml/model/code on PYTHONPATH, `ray start
--head --include-dashboard=False --num-gpus=N`, `serve start --http-host=0.0.0.0 --http-port=8000`,
`serve run /opt/ml/model/config.yaml`, wait for `/-/healthz`, then run its adapter on port 8080:
`POST /invocations` goes to `POST /` of Ray Serve with the body, Content-Type and Accept (both
defaulting to application/json) and the X-Amzn-SageMaker-* headers, and comes back with Ray's status,
body, Content-Type and X-Amzn-SageMaker-* headers (504 on a time-out, 503 when Ray is unreachable);
`GET /ping` is 200 when Ray's `/-/healthz` answers 200 within 5 s, else 503.

Here the same steps run with the real `ray[serve]` at the container's Ray version, on loopback ports,
and `Adapter` is that proxy written again from the behaviour above (the container's own file is not
copied into this project).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.helpers.net import free_port

# By module, not by console script: sagemaker-pytorch-inference also installs a `serve` script, and
# whichever package pip installs last owns .venv/bin/serve.
RAY = (sys.executable, "-m", "ray.scripts.scripts")
SERVE = (sys.executable, "-m", "ray.serve.scripts")
FORWARDED_PREFIX = "x-amzn-sagemaker-"
PING_TIMEOUT_S = 5.0
BACKEND_TIMEOUT_S = 300.0


class Adapter(ThreadingHTTPServer):
    """The container's port-8080 proxy in front of Ray Serve."""

    daemon_threads = True

    def __init__(self, port: int, backend: str) -> None:
        self.backend = backend
        super().__init__(("127.0.0.1", port), AdapterHandler)


class AdapterHandler(BaseHTTPRequestHandler):
    server: Adapter

    def log_message(self, format: str, *args: Any) -> None:  # the test's output stays readable
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/ping":
            self.reply(404, b"", {})
            return
        try:
            with urllib.request.urlopen(f"{self.server.backend}/-/healthz", timeout=PING_TIMEOUT_S) as response:
                status = 200 if response.status == 200 else 503
        except (urllib.error.URLError, OSError):
            status = 503
        self.reply(status, b"", {})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/invocations":
            self.reply(404, b"", {})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name: value for name, value in self.headers.items() if name.lower().startswith(FORWARDED_PREFIX)}
        accept = self.headers.get("Accept", "application/json")
        headers |= {"Content-Type": self.headers.get("Content-Type", "application/json"), "Accept": accept}
        request = urllib.request.Request(f"{self.server.backend}/", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=BACKEND_TIMEOUT_S) as response:
                status, answer, answer_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            status, answer, answer_headers = err.code, err.read(), err.headers
        except TimeoutError:
            self.reply(504, b'{"error": "Request timeout"}', {"Content-Type": "application/json"})
            return
        except (urllib.error.URLError, OSError):
            self.reply(503, b'{"error": "Service unavailable"}', {"Content-Type": "application/json"})
            return
        passed = {name: value for name, value in answer_headers.items() if name.lower().startswith(FORWARDED_PREFIX)}
        self.reply(status, answer, {**passed, "Content-Type": answer_headers.get("Content-Type", accept)})


class RayServeContainer:
    """Ray, Serve, `serve run config.yaml` and the adapter, as the container's entrypoint starts them."""

    def __init__(self, model_dir: Path, env: dict[str, str]) -> None:
        self.model_dir = model_dir
        # Ray's socket paths must stay short: a temp dir of its own under /tmp.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.ray_port, self.serve_port, self.adapter_port = free_port(), free_port(), free_port()
        self.env = {
            **env,
            "PYTHONPATH": f"{model_dir}:{model_dir / 'code'}",
            "RAY_ADDRESS": f"127.0.0.1:{self.ray_port}",
            "RAY_USAGE_STATS_ENABLED": "0",
            "DOGBREED_MODEL_DIR": str(model_dir),  # the container's /opt/ml/model
        }
        self.serve_run: subprocess.Popen[bytes] | None = None
        self.adapter: Adapter | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter_port}"

    def run(self, *command: str, timeout: float = 120) -> None:
        result = subprocess.run(
            command, env=self.env, cwd=self.temp_dir, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def start(self, ready_timeout_s: float = 240) -> RayServeContainer:
        # The entrypoint's steps, in its order.
        self.run(*RAY, "start", "--head", f"--port={self.ray_port}", "--include-dashboard=False",
                 "--num-gpus=0", f"--temp-dir={self.temp_dir}", "--disable-usage-stats")  # fmt: skip
        self.run(*SERVE, "start", "--http-host=127.0.0.1", f"--http-port={self.serve_port}")
        log = (self.temp_dir / "serve-run.log").open("wb")
        self.serve_run = subprocess.Popen(
            [*SERVE, "run", str(self.model_dir / "config.yaml")],
            env=self.env, cwd=self.temp_dir, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.adapter = Adapter(self.adapter_port, f"http://127.0.0.1:{self.serve_port}")
        threading.Thread(target=self.adapter.serve_forever, daemon=True).start()
        self.wait_until_answering(ready_timeout_s)
        return self

    def wait_until_answering(self, timeout_s: float) -> None:
        """Until /ping is 200 and a first request is answered (Ray's health check passes before the model loads)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.serve_run is not None and self.serve_run.poll() is not None:
                raise RuntimeError(f"serve run exited:\n{self.serve_log()[-3000:]}")
            status, _ = self.post(b"", "image/jpeg", timeout=timeout_s) if self.ping() == 200 else (0, b"")
            if status == 400:  # the app's own refusal of an empty body: the replica is up
                return
            time.sleep(1)
        raise RuntimeError(f"the app did not answer within {timeout_s} s:\n{self.serve_log()[-3000:]}")

    def ping(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    def post(
        self, body: bytes, content_type: str, accept: str = "application/json", timeout: float = 120
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type, "Accept": accept}
        request = urllib.request.Request(f"{self.url}/invocations", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def post_json(self, body: bytes, content_type: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        status, answer = self.post(body, content_type, **kwargs)
        return status, json.loads(answer)

    def serve_log(self) -> str:
        path = self.temp_dir / "serve-run.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def replica_log(self) -> str:
        """Every replica's log (`ray.serve` lines, the app's own among them)."""
        logs = sorted((self.temp_dir / "session_latest" / "logs" / "serve").glob("replica_*.log"))
        return "".join(path.read_text(errors="replace") for path in logs)

    def stop(self) -> None:
        if self.adapter is not None:
            self.adapter.shutdown()
            self.adapter.server_close()
        if self.serve_run is not None:
            self.serve_run.terminate()
            try:
                self.serve_run.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.serve_run.kill()
        # `ray stop` ends every Ray process of this user: only one such container runs at a time.
        subprocess.run([*RAY, "stop", "--force"], env=self.env, capture_output=True, timeout=120)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment with `changes` (None removes a variable)."""
    env: dict[str, str | None] = {**os.environ, **changes}
    return {key: value for key, value in env.items() if value is not None}
