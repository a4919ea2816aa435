"""Errors whose message tells the user what to do; the CLI prints them without a traceback."""

# Defined in the shipped serving package, which must raise them without importing outside itself.
from dogbreed.serving.errors import ConfigError, DogbreedError, WeightsError

__all__ = ["ConfigError", "DataError", "DogbreedError", "TrainingInterrupted", "WeightsError"]


class DataError(DogbreedError):
    """The dataset is missing, malformed or cannot be fetched."""


class TrainingInterrupted(DogbreedError):
    """The run stopped early on request, after writing a checkpoint; the message says how to resume."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
