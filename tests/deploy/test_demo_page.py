"""The demo page in a real browser: served by `python -m deploy serve` and by the Lambda handler.

The browser tests need Chromium and chromedriver (`.ci/run` installs Debian's `chromium` and
`chromium-driver`); without them they skip and say how to install them.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.cli import wait_for_ping
from deploy.invoke import runtime_client
from deploy.lambda_function import demo_page
from tests.helpers.config import REPO
from tests.helpers.images import jpeg_bytes
from tests.helpers.net import free_port
from tests.helpers.runs import train_run

INSTALL = "sudo apt-get install chromium chromium-driver  (Debian/Ubuntu; CI's .ci/run does this)"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    return train_run(tmp_path_factory.mktemp("demo-page") / "run", tiny_dataset)


@pytest.fixture(scope="module")
def served(run_dir: Path) -> Iterator[str]:
    """`python -m deploy serve RUN` as a user starts it."""
    port = free_port()
    command = [sys.executable, "-m", "deploy", "serve", str(run_dir), "--port", str(port), "--no-compile"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ping(url, timeout=120)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(f"Chromium and chromedriver are not installed: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,1100"):
        options.add_argument(argument)  # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # no Selenium Manager download
    yield driver
    driver.quit()


@pytest.fixture
def labels(run_dir: Path) -> set[str]:
    return set(json.loads((run_dir / "labels.json").read_text()).values())


def upload_and_read_results(driver: Any, page_url: str, photo: Path, screenshot: Path) -> list[tuple[str, str]]:
    """Opens the page, chooses `photo` in the file input, waits for the list; (breed, probability) per row."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page_url)
    driver.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(driver, 60).until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Top "))
    rows = driver.find_elements(By.CSS_SELECTOR, "#results li")
    driver.save_screenshot(str(screenshot))
    return [
        (row.find_element(By.CLASS_NAME, "breed").text, row.find_element(By.CLASS_NAME, "probability").text)
        for row in rows
    ]


def csp_violations(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]


def test_page_is_self_contained_with_a_strict_policy(served: str) -> None:
    with urllib.request.urlopen(served + "/", timeout=10) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe" not in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "http://" not in page and "https://" not in page.replace("(https://...)", "")  # no CDN: works offline
    assert "innerHTML" not in page and " onclick=" not in page and " onload=" not in page
    assert 'data-endpoint="invocations"' in page


@pytest.mark.browser
def test_browser_uploads_a_photo_to_the_local_endpoint_and_shows_the_top_5(
    served: str, browser: Any, labels: set[str], tmp_path: Path
) -> None:
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(jpeg_bytes(size=(320, 240), seed=7))
    screenshot = tmp_path / "demo-page.png"

    rows = upload_and_read_results(browser, served + "/", photo, screenshot)

    assert len(rows) == len(labels)  # top-5 of a 4-class model: all 4
    assert {breed for breed, _ in rows} == labels
    percents = [float(probability.removesuffix(" %")) for _, probability in rows]
    assert percents == sorted(percents, reverse=True) and sum(percents) == pytest.approx(100, abs=0.5)
    from selenium.webdriver.common.by import By

    assert "resnet18" in browser.find_element(By.ID, "model").text
    assert screenshot.stat().st_size > 10_000
    assert csp_violations(browser) == []


@pytest.fixture
def function_url(served: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local stand-in for a Lambda function URL: each HTTP request becomes a function-URL event
    (payload 2.0) for `lambda_handler`, whose sagemaker-runtime client talks to the served model."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("ENDPOINT_NAME", "dogbreed")
    from deploy.lambda_function import lambda_function

    monkeypatch.setattr(lambda_function, "RUNTIME", runtime_client(served))

    class FunctionUrl(http.server.BaseHTTPRequestHandler):
        def answer(self, method: str) -> None:
            parts = urllib.parse.urlsplit(self.path)
            event: dict[str, Any] = {
                "version": "2.0",
                "rawPath": parts.path,
                "rawQueryString": parts.query,
                "headers": {key.lower(): value for key, value in self.headers.items()},
                "requestContext": {"http": {"method": method, "path": parts.path}},
                "isBase64Encoded": False,
            }
            if parts.query:
                event["queryStringParameters"] = dict(urllib.parse.parse_qsl(parts.query))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if body:  # function URLs pass text as it is and anything else base64-encoded
                text = self.headers.get("Content-Type", "").startswith(("text/", "application/json"))
                event["body"] = body.decode() if text else base64.b64encode(body).decode()
                event["isBase64Encoded"] = not text
            reply = lambda_function.lambda_handler(event, None)
            payload = reply.get("body", "")
            data = base64.b64decode(payload) if reply.get("isBase64Encoded") else payload.encode()
            self.send_response(reply["statusCode"])
            for key, value in reply.get("headers", {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.answer("GET")

        def do_POST(self) -> None:
            self.answer("POST")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FunctionUrl)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_lambda_answers_get_with_the_page_posting_back_to_itself(function_url: str) -> None:
    with urllib.request.urlopen(function_url + "/", timeout=10) as response:
        page = response.read().decode()
        assert response.headers["Content-Security-Policy"] == demo_page.security_policy(page)
    assert 'data-endpoint=""' in page
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(function_url + "/favicon.ico", timeout=10)
    assert missing.value.code == 404


@pytest.mark.browser
def test_browser_uses_the_page_through_the_lambda_handler(
    function_url: str, browser: Any, labels: set[str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "dog.jpg"
    photo.write_bytes(jpeg_bytes(size=(320, 240), seed=8))
    rows = upload_and_read_results(browser, function_url + "/", photo, tmp_path / "lambda-page.png")
    assert {breed for breed, _ in rows} == labels

    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("<img src=x onerror=alert(1)>")
    browser.find_element(By.ID, "file").send_keys(str(not_a_photo))
    WebDriverWait(browser, 60).until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Error"))
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("Error 400: ") and "not an image" in status
    assert browser.find_elements(By.CSS_SELECTOR, "#results li") == []
    assert csp_violations(browser) == []


def test_the_deployed_zip_serves_the_page_without_this_repository(tmp_path: Path) -> None:
    """In the Lambda runtime the zip's files are top-level modules and `deploy` does not exist."""
    import io
    import zipfile

    from deploy.cloud import lambda_

    folder = REPO / "deploy" / "lambda_function"
    zipfile.ZipFile(io.BytesIO(lambda_.zip_folder(folder))).extractall(tmp_path)
    script = (
        "import json, sys; sys.modules['deploy'] = None; sys.path.insert(0, sys.argv[1]);"
        "import lambda_function;"
        "event = {'rawPath': '/', 'requestContext': {'http': {'method': 'GET'}}};"
        "print(json.dumps(lambda_function.lambda_handler(event, None)))"
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["statusCode"] == 200 and "<title>Dog breed classifier</title>" in reply["body"]
    assert reply["headers"]["Content-Security-Policy"].startswith("default-src 'none'")
