"""The packaged model served by the real Ray Serve, as the SageMaker Ray Serve container serves it.

`tests.helpers.rayserve` runs the container's steps on an extracted model.tar.gz: PYTHONPATH, `ray start`,
`serve start`, `serve run config.yaml` and the port-8080 adapter. The environment is what `deploy up`
gives a real-time model (compile wanted, 6 MB cap) in a container without a C++ compiler on PATH, so the
compile falls back to eager as it must in an image without one.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deploy.model_archive import package_run
from dogbreed.aws import support
from dogbreed.serving import handler
from tests.helpers.images import jpeg_bytes
from tests.helpers.imports import image_packages, normalized, required_imports
from tests.helpers.rayserve import RayServeContainer, environment
from tests.helpers.runs import train_run

SEVEN_MB = 7 * 1024 * 1024
IMAGE_PACKAGES = Path(__file__).parents[1] / "data" / "ray-serve-sagemaker-v1.4-packages.txt"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """A tiny run's model.tar.gz, extracted as SageMaker extracts it to /opt/ml/model."""
    root = tmp_path_factory.mktemp("rayserve")
    tarball = package_run(str(train_run(root / "run", tiny_dataset)), root / "model.tar.gz")
    with tarfile.open(tarball) as tar:
        tar.extractall(root / "opt_ml_model", filter="data")
    return root / "opt_ml_model"


@pytest.fixture(scope="module")
def container(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServeContainer]:
    no_compiler = tmp_path_factory.mktemp("bin")  # PATH without g++: the compile must fall back to eager
    env = environment(
        PATH=str(no_compiler), CXX=None, DOGBREED_COMPILE=None, DOGBREED_MAX_BODY_BYTES=None,
        DOGBREED_REPLICAS="1", DOGBREED_THREADS="2", DOGBREED_MAX_BATCH="8", DOGBREED_BATCH_WAIT_MS="20",
    )  # fmt: skip
    running = RayServeContainer(model_dir, env)
    try:
        yield running.start()
    finally:
        running.stop()


def batch1_answer(model_dir: Path, body: bytes) -> dict[str, Any]:
    """What the handler answers for `body` alone, in this process: the contract the endpoint must keep."""
    predictor = handler.load_predictor(model_dir, compile_model=False)
    return handler.predict_fn(handler.input_fn(body, "image/jpeg"), predictor)


def test_config_names_the_app_at_route_slash(model_dir: Path) -> None:
    config = (model_dir / "config.yaml").read_text()
    assert "route_prefix: /" in config and "import_path: dogbreed.serving.ray_app:app" in config


def test_every_import_of_the_serving_code_is_in_the_ray_serve_image() -> None:
    lines, packages = IMAGE_PACKAGES.read_text().splitlines(), image_packages(IMAGE_PACKAGES)
    assert (
        f"ray=={support.image('rayserve')['ray']}" in lines and f"torch=={support.image('rayserve')['torch']}" in lines
    )
    serving = Path(handler.__file__).parent
    imports = set().union(*(required_imports(ast.parse(path.read_text())) for path in serving.glob("*.py")))
    imports -= {*sys.stdlib_module_names, "dogbreed"}
    distributions = packages_distributions()
    missing = [name for name in imports if not {normalized(d) for d in distributions.get(name, [name])} & packages]
    assert {"ray", "torch", "PIL", "starlette"} <= imports and missing == []


def test_ping_and_a_jpeg_answer_as_the_handler_does(container: RayServeContainer, model_dir: Path) -> None:
    assert container.ping() == 200
    body = jpeg_bytes()
    status, answer = container.post_json(body, "image/jpeg")
    assert status == 200, answer
    expected = batch1_answer(model_dir, body)
    assert [p["index"] for p in answer["predictions"]] == [p["index"] for p in expected["predictions"]]
    assert [p["probability"] for p in answer["predictions"]] == pytest.approx(
        [p["probability"] for p in expected["predictions"]], abs=1e-4
    )
    assert answer["model"]["serving"]["compiled"] is False  # no compiler on PATH: eager, and it says so
    # Replicas' own log lines reach `serve run`'s output, which is the container's log (CloudWatch).
    assert "serving the model eager: no C++ compiler" in container.serve_log()
    # The replica imported the serving code of the tarball, not this checkout's.
    assert re.search(rf"serving code from {re.escape(str(model_dir / 'code'))}", container.replica_log())


def test_json_requests_take_base64_and_topk(container: RayServeContainer) -> None:
    payload = json.dumps({"image_b64": base64.b64encode(jpeg_bytes()).decode(), "topk": 2}).encode()
    status, answer = container.post_json(payload, "application/json")
    assert status == 200 and len(answer["predictions"]) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status", "message"),
    [
        (b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg", "application/json", 400, "image"),
        (b"", "image/jpeg", "application/json", 400, "empty"),
        (b"text", "text/plain", "application/json", 415, "unsupported content type"),
        (b'{"topk": 3}', "application/json", "application/json", 400, "needs"),
        (None, "image/jpeg", "image/png", 406, "application/json only"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_one_line_message(
    container: RayServeContainer, body: bytes | None, content_type: str, accept: str, status: int, message: str
) -> None:
    answered, answer = container.post_json(jpeg_bytes() if body is None else body, content_type, accept=accept)
    assert answered == status and message in answer["message"] and "\n" not in answer["message"]


def test_a_body_over_6_mb_gets_413_and_one_under_it_is_answered(container: RayServeContainer) -> None:
    status, answer = container.post_json(b"\xff" * SEVEN_MB, "image/jpeg")
    assert status == 413 and "7,340,032 bytes or more, over the 6,291,456-byte limit" in answer["message"]
    pixels = np.random.default_rng(0).integers(0, 255, (1320, 1320, 3), dtype=np.uint8)  # noise: ~5.2 MB as PNG
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=0)
    status, answer = container.post_json(buffer.getvalue(), "image/png")
    assert status == 200 and answer["predictions"]


def test_8_concurrent_clients_share_forwards_and_get_the_batch_1_answers(
    container: RayServeContainer, model_dir: Path
) -> None:
    body = jpeg_bytes()
    expected = batch1_answer(model_dir, body)["predictions"]

    def post(_: int) -> list[dict[str, Any]]:
        status, answer = container.post_json(body, "image/jpeg")
        assert status == 200, answer
        return answer["predictions"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(64)))
    for answer in answers:  # a batch of 8 rounds the last digits its own way: same breeds, same odds
        assert [p["index"] for p in answer] == [p["index"] for p in expected]
        assert [p["probability"] for p in answer] == pytest.approx([p["probability"] for p in expected], abs=1e-4)
    sizes = [int(size) for size in re.findall(r"dogbreed forward of (\d+) image", container.replica_log())]
    assert max(sizes) > 1 and max(sizes) <= 8, sizes
