"""Until when AWS patches what this project runs on: one dated, sourced table, `support.json`.

It holds the container images the project builds URIs for (the Ray Serve and TorchServe inference
images, the training image), the older images a user may still name, and the Deep Learning AMI lines.
`deploy up`, the SageMaker launcher and `ami launch` warn in one line when what they will use is past
its end of patch (or, where AWS publishes none, past the date this project set to check it again).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TABLE = Path(__file__).with_name("support.json")


@dataclass(frozen=True)
class Support:
    """One entry: what it is, until when it is patched, and where that is written."""

    what: str
    end_of_patch: dt.date | None
    review_by: dt.date | None  # where AWS publishes no end of patch: when to look again
    source: str

    def deadline(self) -> dt.date | None:
        return self.end_of_patch or self.review_by

    def lapsed(self, today: dt.date) -> bool:
        deadline = self.deadline()
        return deadline is not None and today > deadline

    def warning(self, today: dt.date, remedy: str) -> str | None:
        """One line when `today` is past the entry's date, else None."""
        if not self.lapsed(today):
            return None
        if self.end_of_patch is not None:
            return f"{self.what} is past its end of patch ({self.end_of_patch}, {self.source}); {remedy}"
        return (
            f"{self.what}: AWS publishes no end of patch and this project's review date {self.review_by} has "
            f"passed; check {self.source}, or {remedy}"
        )


@cache
def table() -> dict[str, Any]:
    return json.loads(TABLE.read_text())


def date_of(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def entry(row: dict[str, Any], what: str | None = None) -> Support:
    return Support(
        what=what or row["what"],
        end_of_patch=date_of(row.get("end_of_patch")),
        review_by=date_of(row.get("review_by")),
        source=row["source"],
    )


def image(name: str) -> dict[str, Any]:
    """An image the project builds URIs for: `rayserve`, `torchserve` or `training`."""
    return dict(table()["images"][name])


def for_image_uri(uri: str) -> Support | None:
    """The entry of an ECR image URI `<registry>/<repository>:<tag>`, None for an image outside the table."""
    repository, _, tag = uri.rpartition("/")[2].partition(":")
    for row in table()["images"].values():
        if row["repository"] == repository and tag in row["tags"].values():
            return entry(row, f"image {uri}")
    for row in table()["retired_images"]:
        if row["repository"] == repository and tag.startswith(row["tag_prefix"]):
            return entry(row, f"image {uri}")
    return None


def for_dlami(parameter: str) -> Support | None:
    """The entry of a Deep Learning AMI's SSM parameter, None for a line outside the table."""
    row = table()["dlami"].get(parameter)
    return entry(row, f"the DLAMI line {parameter}") if row else None


def warn(support: Support | None, remedy: str, today: dt.date | None = None) -> str | None:
    """Logs (and returns) the one-line warning of a lapsed entry; None when it is patched or unknown."""
    if support is None:
        return None
    line = support.warning(today or dt.date.today(), remedy)
    if line is not None:
        log.warning("%s", line)
    return line
