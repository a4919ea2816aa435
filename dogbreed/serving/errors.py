"""The project's error root, and the errors the serving code raises.

They are defined here rather than in `dogbreed.errors` because this package ships
alone and must raise project errors without importing anything outside itself;
`dogbreed.errors` imports them from here.
"""

from __future__ import annotations


class DogbreedError(Exception):
    """Base class: the message is complete and actionable on its own."""


class WeightsError(DogbreedError):
    """Pretrained weights or a checkpoint cannot be obtained or do not fit the model."""


class ConfigError(DogbreedError, ValueError):
    """A setting has a value the code cannot run with; the message names the key and what it takes."""


try:  # Inside the SageMaker container, the toolkit turns this base class into the response status.
    from sagemaker_inference.errors import BaseInferenceToolkitError as _Base
except ImportError:  # Locally, deploy.server maps `status` itself.

    class _Base(Exception):  # type: ignore[no-redef]
        def __init__(self, status_code: int, message: str, phrase: str) -> None:
            super().__init__(message)
            self.status_code = status_code
            self.message = message
            self.phrase = phrase


class RequestError(_Base):
    """The request cannot be answered as sent; the message says why (never a traceback)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message
