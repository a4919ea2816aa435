"""A request error that carries its HTTP status, in the container and in the local server."""

from __future__ import annotations

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
