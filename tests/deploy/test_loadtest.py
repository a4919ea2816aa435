"""`python -m deploy loadtest`: against the local endpoint with a tiny trained model, and its bounds and report."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import loadtest
from deploy.cli import main as deploy_main
from deploy.server import BackgroundServer, create_app, prepare_model_dir
from dogbreed.serving import handler
from tests.helpers.images import jpeg_bytes
from tests.helpers.net import free_port
from tests.helpers.runs import train_run


@pytest.fixture(scope="module")
def local_endpoint(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Iterator[str]:
    """What `python -m deploy serve RUN` runs, on a thread: a tiny trained run behind the local endpoint."""
    root = tmp_path_factory.mktemp("loadtest")
    model_dir = prepare_model_dir(str(train_run(root / "run", tiny_dataset)), root / "work")
    server = BackgroundServer(create_app(handler, handler.load_predictor(model_dir, compile_model=False)), free_port())
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        (folder / f"dog{seed}.jpg").write_bytes(jpeg_bytes((64, 48), seed))
    (folder / "notes.txt").write_text("not an image: skipped")
    return folder


def test_200_requests_at_8_concurrent_against_the_local_endpoint(
    local_endpoint: str, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    args = ["loadtest", str(images), "--requests", "200", "--concurrency", "8", "--endpoint-url", local_endpoint]
    assert deploy_main([*args, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "requests: 200 sent, 200 ok" in printed
    assert "errors: 0" in printed
    assert all(p in printed for p in ("p50", "p95", "p99")) and "throughput:" in printed
    with (out / "requests.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200 and {r["status"] for r in rows} == {"200"}
    assert sorted(int(r["index"]) for r in rows) == list(range(200))
    assert (out / "latency.png").stat().st_size > 0


def test_errors_are_counted_by_status_and_unanswered_requests_as_no_answer(images: Path) -> None:
    answers = iter([(200, ""), (503, "busy"), (0, "connection refused")] * 4)
    lock = threading.Lock()

    def send(body: bytes, content_type: str) -> tuple[int, str]:
        with lock:
            return next(answers)

    report = loadtest.run(send, loadtest.load_images(images), requests=12, concurrency=1, max_seconds=60)
    assert report.errors_by_status() == {0: 4, 503: 4}
    assert "errors: 4 x no answer, 4 x 503" in loadtest.summary(report)


def test_requests_not_started_within_the_time_limit_are_skipped(images: Path) -> None:
    def slow(body: bytes, content_type: str) -> tuple[int, str]:
        time.sleep(0.2)
        return 200, ""

    report = loadtest.run(slow, loadtest.load_images(images), requests=50, concurrency=2, max_seconds=0.3)
    assert 2 <= len(report.results) <= 6 and report.skipped == 50 - len(report.results)
    assert any(line.startswith(f"skipped: {report.skipped}") for line in loadtest.summary(report))


def test_the_instance_count_is_sampled_while_requests_run_and_at_the_end(images: Path) -> None:
    counts = iter([1, 2, 3, 3, 3, 3, 3, 3])

    def send(body: bytes, content_type: str) -> tuple[int, str]:
        time.sleep(0.05)
        return 200, ""

    report = loadtest.run(send, loadtest.load_images(images), 8, 1, 60, sample=lambda: next(counts), sample_every_s=0.1)
    assert [n for _, n in report.instances][:2] == [1, 2] and len(report.instances) >= 3
    assert "instances: 0s=1" in loadtest.summary(report)[-1]


def test_bad_inputs_fail_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        deploy_main(["loadtest", str(tmp_path / "empty")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "no .jpg, .jpeg or .png images" in err and "Traceback" not in err
    with pytest.raises(loadtest.LoadTestError, match="not a Lambda function URL"):
        loadtest.function_url_region("https://example.com/")
    assert loadtest.function_url_region("https://abc123.lambda-url.eu-west-1.on.aws/") == "eu-west-1"
