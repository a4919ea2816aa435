"""The EC2 side's errors: messages the CLI prints as they are, telling the user what to do."""

from dogbreed.cli import EXIT_USAGE
from dogbreed.errors import DogbreedError


class AmiError(DogbreedError):
    """A launch, lookup or teardown step cannot go on; the message says why and what to change."""


class AmiOverrideError(AmiError):
    """An `ami.key=value` override Hydra cannot apply: bad usage, so the CLI exits 2 like argparse."""

    exit_code = EXIT_USAGE
