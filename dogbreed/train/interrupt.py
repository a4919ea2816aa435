"""A stop request raised by SIGTERM/SIGINT or an EC2 spot interruption notice.

The training loop polls `StopRequest.requested` between steps, so the step in flight
finishes and a checkpoint is written before the process leaves. A second signal exits
at once with the default disposition; checkpoints are written atomically, so the last
complete one survives that. On EC2 a background thread polls instance metadata (IMDSv2)
for the spot notice, which comes two minutes before the instance is taken away.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
TOKEN_TTL_S = 21600
# The metadata service answers within milliseconds on EC2; elsewhere nothing listens.
IMDS_TIMEOUT_S = 2.0


class StopRequest:
    """A flag set once by the first signal or spot notice; reusable as a context manager."""

    def __init__(self, spot_endpoint: str | None = None, spot_poll_s: float = 5.0) -> None:
        """Args:
        spot_endpoint: IMDS base URL (e.g. http://169.254.169.254) to poll for spot notices; None disables.
        spot_poll_s: seconds between spot polls.
        """
        self.reason = ""
        self.exit_code = 0
        self._event = threading.Event()
        self._signals = 0
        self._previous: dict[int, Any] = {}
        self._poller = SpotNoticePoller(spot_endpoint, spot_poll_s, self) if spot_endpoint else None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str, exit_code: int) -> None:
        """Asks the loop to stop; only the first request counts."""
        if self._event.is_set():
            return
        self.reason, self.exit_code = reason, exit_code
        self._event.set()
        log.warning("%s: finishing the current step, then writing a checkpoint", reason)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            log.error("second %s: exiting now; the last complete checkpoint is kept", name)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.request(f"received {name} (send it again to exit at once)", 128 + signum)

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be set from the main thread; elsewhere the caller owns signals.
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        if self._poller is not None:
            self._poller.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._poller is not None:
            self._poller.stop()


class SpotNoticePoller(threading.Thread):
    """Polls `/latest/meta-data/spot/instance-action` with an IMDSv2 session token.

    Gives up quietly when no metadata service answers (not on EC2); the action appears
    (HTTP 200 instead of 404) once AWS has scheduled the interruption.
    """

    def __init__(self, endpoint: str, interval_s: float, stop: StopRequest) -> None:
        super().__init__(name="spot-notice", daemon=True)
        self.endpoint = endpoint.rstrip("/")
        self.interval_s = interval_s
        self.stop_request = stop
        self._done = threading.Event()
        self._token = ""
        self._token_time = 0.0

    def stop(self) -> None:
        self._done.set()

    def run(self) -> None:
        try:
            self._refresh_token()
        except OSError as err:
            log.debug("no instance metadata at %s (%s): not watching for spot notices", self.endpoint, err)
            return
        log.info("watching for EC2 spot interruption notices every %.0f s", self.interval_s)
        while not self._done.is_set():
            try:
                notice = self.poll()
            except OSError as err:  # a hiccup of the metadata service is no reason to stop watching
                log.debug("spot notice poll failed: %s", err)
                notice = None
            if notice is not None:
                self.stop_request.request(
                    f"EC2 spot interruption notice ({notice.get('action')} at {notice.get('time')})",
                    128 + signal.SIGTERM,
                )
                return
            self._done.wait(self.interval_s)

    def poll(self) -> dict[str, Any] | None:
        """The instance-action document, or None while no interruption is scheduled."""
        if time.monotonic() - self._token_time > TOKEN_TTL_S / 2:
            self._refresh_token()
        request = urllib.request.Request(
            f"{self.endpoint}/latest/meta-data/spot/instance-action",
            headers={"X-aws-ec2-metadata-token": self._token},
        )
        try:
            with urllib.request.urlopen(request, timeout=IMDS_TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            if err.code == 401:  # the token expired (e.g. the clock jumped): fetch a new one next time
                self._token_time = 0.0
                return None
            raise
        try:
            return json.loads(body)
        except ValueError:  # a notice all the same
            return {"action": "unknown", "time": "unknown"}

    def _refresh_token(self) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
        )
        with urllib.request.urlopen(request, timeout=IMDS_TIMEOUT_S) as response:
            self._token = response.read().decode()
        self._token_time = time.monotonic()
