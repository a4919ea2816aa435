"""What the project runs on in AWS is inside AWS's patch window today: the defaults, checked against
`dogbreed/aws/support.json`, fail here the day one lapses (so CI says so), with where to look."""

from __future__ import annotations

import datetime as dt

import pytest

from ami.config import load_config as load_ami_config
from deploy.cloud.config import load_config as load_deploy_config
from dogbreed.aws import container_images, support

TODAY = dt.date.today()
WHERE = "update the pin and dogbreed/aws/support.json together (each entry names its source)"


def default_images() -> list[str]:
    """Every image URI a default config builds: the endpoint (CPU, GPU, serverless) and the training jobs."""
    image = load_deploy_config(["deploy.s3_uri=s3://b/dogbreed"]).deploy.image
    endpoint = [
        container_images.image_uri("us-east-1", image, instance_type, serverless)
        for instance_type, serverless in (("ml.m5.large", False), ("ml.g5.xlarge", False), ("ml.m5.large", True))
    ]
    training = [container_images.training_image_uri("us-east-1", kind) for kind in ("ml.m5.xlarge", "ml.g5.xlarge")]
    return endpoint + training


@pytest.mark.parametrize("uri", default_images())
def test_every_default_image_is_patched_today(uri: str) -> None:
    entry = support.for_image_uri(uri)
    assert entry is not None, f"{uri} is not in dogbreed/aws/support.json; add it with its end of patch and source"
    assert not entry.lapsed(TODAY), f"{entry.warning(TODAY, WHERE)}"


def test_the_default_dlami_line_is_patched_today() -> None:
    parameter = str(load_ami_config(["ami.s3_uri=s3://b/dogbreed"]).ami.ami_ssm_parameter)
    entry = support.for_dlami(parameter)
    assert entry is not None, f"{parameter} is not in dogbreed/aws/support.json; add it with its end of patch"
    assert not entry.lapsed(TODAY), f"{entry.warning(TODAY, WHERE)}"


def test_the_table_is_dated_and_every_entry_has_a_date_and_a_source() -> None:
    table = support.table()
    assert dt.date.fromisoformat(table["checked"]) <= TODAY
    rows = [*table["images"].values(), *table["retired_images"], *table["dlami"].values()]
    for row in rows:
        assert row["source"] and (row.get("end_of_patch") or row.get("review_by")), row


def test_a_lapsed_image_or_line_warns_in_one_line_with_its_date(caplog: pytest.LogCaptureFixture) -> None:
    torchserve = container_images.table_image_uri("eu-west-1", "torchserve", "cpu")
    line = support.warn(support.for_image_uri(torchserve), "use the other one", today=dt.date(2026, 7, 1))
    assert line is not None and "\n" not in line
    assert "past its end of patch (2026-06-30" in line and line.endswith("use the other one")
    assert caplog.records[-1].getMessage() == line
    old_line = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.7-ubuntu-22.04/latest/ami-id"
    assert "(2026-04-23" in (support.warn(support.for_dlami(old_line), "x", today=dt.date(2026, 12, 7)) or "")
    # The day of the end of patch itself is still patched.
    assert support.warn(support.for_image_uri(torchserve), "x", today=dt.date(2026, 6, 30)) is None


def test_an_image_without_a_published_end_of_patch_asks_for_a_review_once_its_date_passes() -> None:
    ray = support.for_image_uri(container_images.table_image_uri("us-east-1", "rayserve", "gpu"))
    assert ray is not None and ray.end_of_patch is None and ray.review_by is not None
    line = ray.warning(ray.review_by + dt.timedelta(days=1), "pin a newer release")
    assert line is not None and f"review date {ray.review_by} has passed" in line


def test_images_and_lines_outside_the_table_are_not_guessed_about() -> None:
    assert support.for_image_uri("111122223333.dkr.ecr.us-east-1.amazonaws.com/mine:1") is None
    assert support.for_dlami("/aws/service/deeplearning/ami/x86_64/something-else/latest/ami-id") is None
    assert support.warn(None, "x") is None
