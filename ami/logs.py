"""The training log in CloudWatch Logs: the group the instance's agent writes to, read back by `ami logs`.

Each instance writes `~/dogbreed/train.log` to the stream named after its instance id in
`/dogbreed/ami/<ami.name>`; launch creates the group with a retention, so old runs expire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

RETENTION_DAYS = 30


def log_group(name: str) -> str:
    """The group of `ami.name`; the instance role may write only here."""
    return f"/dogbreed/ami/{name}"


class TrainLogs:
    """Creates and reads the project's log group through an injected CloudWatch Logs client."""

    def __init__(self, logs: Any) -> None:
        self.logs = logs

    def ensure_group(self, group: str, tags: dict[str, str]) -> None:
        """Creates `group` with the retention, or leaves an existing one as it is."""
        try:
            self.logs.create_log_group(logGroupName=group, tags=tags)
        except ClientError as err:
            if err.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
            return
        self.logs.put_retention_policy(logGroupName=group, retentionInDays=RETENTION_DAYS)
        log.info("created log group %s (kept %d days)", group, RETENTION_DAYS)

    def events(self, group: str, start_ms: int = 0) -> list[dict[str, Any]] | None:
        """Every event from `start_ms` on, oldest first, all streams together; None when the group is missing."""
        found: list[dict[str, Any]] = []
        try:
            for page in self.logs.get_paginator("filter_log_events").paginate(logGroupName=group, startTime=start_ms):
                found += page["events"]
        except ClientError as err:
            if err.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
        return sorted(found, key=lambda event: (event["timestamp"], event["eventId"]))

    def follow(self, group: str, write: Callable[[str], None], poll_s: float = 5) -> None:
        """Writes new lines as they arrive, until Ctrl-C."""
        seen: set[str] = set()
        start_ms = 0
        try:
            while True:
                for event in self.events(group, start_ms) or []:
                    if event["eventId"] not in seen:
                        seen.add(event["eventId"])
                        write(event["message"])
                        start_ms = max(start_ms, event["timestamp"])
                time.sleep(poll_s)
        except KeyboardInterrupt:
            return
