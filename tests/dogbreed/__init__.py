"""Tests of `dogbreed`."""
