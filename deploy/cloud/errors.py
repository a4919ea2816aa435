"""The errors of the AWS deploy: each message names the setting or resource to look at."""

from __future__ import annotations

from dogbreed.errors import DogbreedError


class DeployError(DogbreedError):
    """A deploy step cannot go on; the message says which `deploy.*` key or AWS resource to change."""
