"""Errors whose message tells the user what to do; the CLI prints them without a traceback."""


class DogbreedError(Exception):
    """Base class: the message is complete and actionable on its own."""


class DataError(DogbreedError):
    """The dataset is missing, malformed or cannot be fetched."""


class WeightsError(DogbreedError):
    """Pretrained weights or a checkpoint cannot be obtained or do not fit the model."""
