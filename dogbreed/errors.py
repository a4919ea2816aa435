"""Errors whose message tells the user what to do; the CLI prints them without a traceback."""

# Defined in the shipped serving package, which must raise them without importing outside itself.
from dogbreed.serving.errors import DogbreedError, WeightsError

__all__ = ["DataError", "DogbreedError", "WeightsError"]


class DataError(DogbreedError):
    """The dataset is missing, malformed or cannot be fetched."""
