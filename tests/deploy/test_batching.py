"""The local server's micro-batcher: concurrent requests run as one batch, with the answers of single calls."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from deploy.batching import BatchedPredict, MicroBatcher
from deploy.cli import main
from deploy.server import BackgroundServer, create_app, prepare_model_dir
from dogbreed.serving import handler
from tests.helpers.images import image_bytes
from tests.helpers.net import free_port
from tests.helpers.runs import train_run

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (90, 90, 90), (250, 250, 250)]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> handler.Predictor:
    root = tmp_path_factory.mktemp("batching")
    model_dir = prepare_model_dir(str(train_run(root / "run", tiny_dataset)), root / "work")
    return handler.load_predictor(model_dir, compile_model=False, max_batch=8)


def requests() -> list[handler.Request]:
    return [handler.Request(image_bytes(size=(500, 375), color=colour), logits=True) for colour in COLOURS]


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_requests_waiting_together_run_as_one_batch_with_single_call_answers(predictor: handler.Predictor) -> None:
    singles = [handler.predict_fn(request, predictor) for request in requests()]
    gate = threading.Event()

    def forward(images: list[torch.Tensor]) -> torch.Tensor:
        gate.wait()  # the first batch holds the model until the others are all waiting
        return handler.forward_batch(images, predictor)

    batcher = MicroBatcher(forward, max_batch=8)
    predict = BatchedPredict(handler, batcher)
    first, *rest = requests()
    with ThreadPoolExecutor(len(COLOURS)) as pool:
        answers = [pool.submit(predict, first, predictor)]
        wait_until(lambda: list(batcher.batch_sizes) == [1])
        answers += [pool.submit(predict, request, predictor) for request in rest]
        wait_until(lambda: len(batcher._waiting) == len(rest))
        gate.set()
        batched = [answer.result(timeout=30) for answer in answers]
    assert list(batcher.batch_sizes) == [1, len(rest)]
    for single, together in zip(singles, batched, strict=True):
        assert [p["index"] for p in together["predictions"]] == [p["index"] for p in single["predictions"]]
        assert torch.allclose(torch.tensor(together["logits"]), torch.tensor(single["logits"]), atol=1e-4)


def test_padding_a_batch_to_a_warmed_size_leaves_the_answers_alone(predictor: handler.Predictor) -> None:
    images = [handler.prepare(request, predictor) for request in requests()[:3]]
    exact = handler.forward_batch(images, predictor)
    batch = handler.to_batch(images, predictor.device, size=4)
    with torch.inference_mode():
        padded = predictor.model(batch).float()
    assert predictor.batch_sizes == (1, 2, 4, 8) and (padded[3] != 0).any()  # the zero row is a real row
    assert torch.allclose(padded[:3], exact, atol=1e-4)


def test_a_failed_batch_fails_its_requests_and_the_batcher_goes_on() -> None:
    calls = []

    def bad_image() -> int:
        raise ValueError("bad image")

    def forward(images: list[int]) -> list[int]:
        calls.append(images)
        if len(calls) == 1:
            raise RuntimeError("model broke")
        return [image * 10 for image in images]

    batcher = MicroBatcher(forward, max_batch=4)
    with pytest.raises(RuntimeError, match="model broke"):
        batcher(lambda: 1)
    with pytest.raises(ValueError, match="bad image"):
        batcher(bad_image)
    assert batcher(lambda: 2) == 20 and batcher._preparing == 0


def test_a_lone_request_on_an_idle_model_runs_on_its_own_thread() -> None:
    threads = []

    def forward(images: list[int]) -> list[int]:
        threads.append(threading.get_ident())
        return [image * 10 for image in images]

    batcher = MicroBatcher(forward, max_batch=8)
    assert batcher(lambda: 3) == 30 and batcher(lambda: 4) == 40
    assert threads == [threading.get_ident()] * 2 and list(batcher.batch_sizes) == [1, 1]


def test_an_interrupted_forward_leaves_the_model_free_for_the_next_request() -> None:
    calls = []

    def forward(images: list[int]) -> list[int]:
        calls.append(images)
        if len(calls) == 1:
            raise KeyboardInterrupt  # not an Exception: it reaches the request, but must not wedge the batcher
        return images

    batcher = MicroBatcher(forward, max_batch=4)
    with pytest.raises(KeyboardInterrupt):
        batcher(lambda: 1)
    answered: list[int] = []
    next_request = threading.Thread(target=lambda: answered.append(batcher(lambda: 2)), daemon=True)
    next_request.start()
    next_request.join(timeout=10)
    assert answered == [2]


def gated_batcher(max_delay_s: float, max_wait_s: float) -> tuple[MicroBatcher, threading.Event]:
    """A batcher whose model (it echoes its images) runs only while the returned gate is set."""
    gate = threading.Event()

    def forward(images: list[int]) -> list[int]:
        gate.wait()
        return images

    return MicroBatcher(forward, max_batch=8, max_delay_s=max_delay_s, max_wait_s=max_wait_s), gate


def queued_behind_a_lone_request(batcher: MicroBatcher, gate: threading.Event, count: int) -> list[int]:
    """A lone request holds the model (gate closed) while `count` more queue; then the gate opens."""
    gate.clear()
    batches_before = len(batcher.batch_sizes)
    with ThreadPoolExecutor(count + 1) as pool:
        held = pool.submit(batcher, lambda: -1)
        wait_until(lambda: len(batcher.batch_sizes) == batches_before + 1)
        queued = [pool.submit(batcher, lambda index=index: index) for index in range(count)]
        wait_until(lambda: len(batcher._waiting) == count)
        gate.set()
        assert held.result(timeout=30) == -1
        return [answer.result(timeout=30) for answer in queued]


def test_under_load_the_clients_of_the_last_batch_are_waited_for_not_run_one_by_one() -> None:
    batcher, gate = gated_batcher(max_delay_s=0.5, max_wait_s=5.0)

    def staggered(count: int, gap_s: float) -> list[int]:
        """`count` clients whose requests arrive `gap_s` apart, as answers reach them one by one."""
        with ThreadPoolExecutor(count) as pool:
            answers = []
            for index in range(count):
                answers.append(pool.submit(batcher, lambda index=index: index))
                time.sleep(gap_s)
            return [answer.result(timeout=30) for answer in answers]

    assert queued_behind_a_lone_request(batcher, gate, 4) == [0, 1, 2, 3]
    assert list(batcher.batch_sizes) == [1, 4]
    # The 4 clients come back 20 ms apart: under the 0.5 s quiet limit, so one batch, not 4 of one.
    assert staggered(4, 0.02) == [0, 1, 2, 3]
    assert list(batcher.batch_sizes) == [1, 4, 4]


def test_a_batch_waits_no_longer_than_the_quiet_limit_when_fewer_clients_come_back() -> None:
    batcher, gate = gated_batcher(max_delay_s=0.05, max_wait_s=30.0)
    assert queued_behind_a_lone_request(batcher, gate, 3) == [0, 1, 2]
    started = time.monotonic()
    assert batcher(lambda: 7) == 7  # expected 3 back; none came
    assert 0.05 <= time.monotonic() - started < 5.0 and list(batcher.batch_sizes) == [1, 3, 1]


def test_8_concurrent_clients_on_the_server_share_batches(predictor: handler.Predictor) -> None:
    app = create_app(handler, predictor)
    server = BackgroundServer(app, free_port()).start()
    body = image_bytes()

    def post(_: int) -> list[dict[str, Any]]:
        request = urllib.request.Request(server.url + "/invocations", body, {"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["predictions"]

    try:
        expected = post(0)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(64)))
    finally:
        server.stop()
    for answer in answers:  # a batch of 8 rounds the last digits its own way: same breeds, same odds
        assert [p["index"] for p in answer] == [p["index"] for p in expected]
        assert [p["probability"] for p in answer] == pytest.approx([p["probability"] for p in expected], abs=1e-4)
    assert sum(app.state.batcher.batch_sizes) == 65 and max(app.state.batcher.batch_sizes) > 1


@pytest.mark.parametrize("value", ["0", "65", "eight"])
def test_serve_refuses_a_max_batch_out_of_range_before_loading(value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "no-such-run", "--max-batch", value])
    assert exit_info.value.code == 2 and "batch size from 1 to 64" in capsys.readouterr().err


def test_the_container_warms_batch_1_only_unless_told() -> None:
    assert handler.batch_limit(None) == 1 and handler.warm_sizes(1) == (1,)
    assert handler.warm_sizes(8) == (1, 2, 4, 8) and handler.warm_sizes(6) == (1, 2, 4, 6)
    with pytest.raises(ValueError, match="DOGBREED_MAX_BATCH"):
        handler.batch_limit("0")
