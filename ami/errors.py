"""The EC2 side's errors: messages the CLI prints as they are, telling the user what to do."""

from dogbreed.errors import DogbreedError


class AmiError(DogbreedError):
    """A launch, lookup or teardown step cannot go on; the message says why and what to change."""
