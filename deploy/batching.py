"""The local server's micro-batcher: requests waiting for the model together run as one batch.

Each request prepares its image (decode + preset) on its own thread, then hands it to one
model thread. That thread takes every prepared image waiting, up to `max_batch`; when
fewer are waiting while other requests are still decoding, it waits for them at most
`max_delay_s`. A lone request waits for nothing, so batching adds no latency when the
server is idle; under load the model runs one batch of N instead of N forwards of one.

Only for handlers that split predict_fn into `prepare`, `forward_batch` and `answer` (ours,
`dogbreed.serving.handler`); the SageMaker container calls predict_fn once per request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

MAX_DELAY_S = 0.005
BATCH_SIZES_KEPT = 10_000


@dataclass
class _Waiting:
    image: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class MicroBatcher:
    """Runs `forward(images) -> one result per image` on batches of the images submitted together."""

    def __init__(self, forward: Callable[[list[Any]], Any], max_batch: int, max_delay_s: float = MAX_DELAY_S) -> None:
        self.forward = forward
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        # What the model saw, newest last (the tests read it); bounded, as the server runs for weeks.
        self.batch_sizes: deque[int] = deque(maxlen=BATCH_SIZES_KEPT)
        self._changed = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._preparing = 0
        threading.Thread(target=self._run, name="micro-batcher", daemon=True).start()

    def __call__(self, prepare: Callable[[], Any]) -> Any:
        """Prepares the image on this thread, then waits for its row of a batch's result."""
        with self._changed:
            self._preparing += 1
        try:
            waiting = _Waiting(prepare())
        except BaseException:
            self._prepared(None)
            raise
        self._prepared(waiting)
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting.result

    def _prepared(self, waiting: _Waiting | None) -> None:
        """One fewer request preparing, in the same step as it joins the queue: never counted nowhere."""
        with self._changed:
            self._preparing -= 1
            if waiting is not None:
                self._waiting.append(waiting)
            self._changed.notify_all()

    def _next_batch(self) -> list[_Waiting]:
        with self._changed:
            self._changed.wait_for(lambda: self._waiting)
            deadline = time.monotonic() + self.max_delay_s
            while len(self._waiting) < self.max_batch and self._preparing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            self.batch_sizes.append(len(batch))
            try:
                results = self.forward([waiting.image for waiting in batch])
                for waiting, result in zip(batch, results, strict=True):
                    waiting.result = result
            except Exception as err:  # the requests of this batch fail, the server goes on
                for waiting in batch:
                    waiting.error = err
            for waiting in batch:
                waiting.done.set()


class BatchedPredict:
    """predict_fn(data, model) for the local server, micro-batched; `batcher` shows the batch sizes."""

    def __init__(self, handler: ModuleType, batcher: MicroBatcher) -> None:
        self.handler = handler
        self.batcher = batcher

    def __call__(self, data: Any, model: Any) -> Any:
        logits = self.batcher(lambda: self.handler.prepare(data, model))
        return self.handler.answer(data, logits, model)


def batched_predict(handler: ModuleType, model: Any) -> Callable[[Any, Any], Any]:
    """A micro-batching predict_fn where the handler can split it and the model is warmed for batches,
    else the handler's own predict_fn."""
    max_batch = max(getattr(model, "batch_sizes", (1,)))
    if max_batch < 2 or not all(hasattr(handler, name) for name in ("prepare", "forward_batch", "answer")):
        return handler.predict_fn
    return BatchedPredict(handler, MicroBatcher(lambda images: handler.forward_batch(images, model), max_batch))
