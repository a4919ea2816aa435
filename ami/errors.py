"""The EC2 side's error: a message the CLI prints as is, telling the user what to do."""

from dogbreed.errors import DogbreedError


class AmiError(DogbreedError):
    """A launch, lookup or teardown step cannot go on; the message says why and what to change."""
