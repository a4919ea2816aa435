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
